"""convert --recipe: compression stages run once on the PyTorch model, then every target is
exported from the compressed model; drops are measured against the model the user brought."""

import numpy as np

from edgekit.bundle import read_manifest
from edgekit.cli import main

from ektest import REPO


def test_prune_recipe_then_int8(digits_example, tmp_path, capsys):
    from edgekit.demo import digits_data
    xt, yt, _, _ = digits_data()
    np.savez(tmp_path / "train.npz", x=xt, labels=yt)
    code = main(["convert", str(digits_example["model"]), "--target", "x86-avx2",
                 "--recipe", str(REPO / "examples" / "recipes" / "digits_prune50.toml"),
                 "--train", str(tmp_path / "train.npz"), "--calibration", str(digits_example["calibration"]),
                 "--validation", str(digits_example["validation"]), "--out", str(tmp_path / "out")])
    out = capsys.readouterr()
    assert code == 0, out.err
    m = read_manifest(tmp_path / "out" / "x86-avx2")
    stages = m["compression"]["stages"]
    assert stages[0]["name"] == "source" and stages[-1]["params"] < stages[0]["params"] / 2
    assert m["source"]["accuracy"] == stages[0]["accuracy"]          # drop vs the original model
    assert m["source"]["compressed"]["stages"]                       # the exported model is the compressed one
    assert m["conversion"]["parity"][0]["max_abs_diff"] < 1e-4      # export matches the compressed PyTorch model
    assert m["source"]["accuracy"] - m["conversion"]["accuracy"]["value"] <= 0.03


def test_recipe_without_training_data(digits_example, tmp_path, capsys):
    code = main(["convert", str(digits_example["model"]), "--target", "x86-avx2",
                 "--recipe", str(REPO / "examples" / "recipes" / "digits_prune50.toml"),
                 "--calibration", str(digits_example["calibration"]),
                 "--validation", str(digits_example["validation"]), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "a recipe needs --train DATA" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()
