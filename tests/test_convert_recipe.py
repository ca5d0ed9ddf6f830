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
    # Drops vs the original model: the stages are judged on the tuning split, the reported source
    # figure is the original model's top-1 on the held-out split.
    from edgekit.convert import load_splits
    from edgekit.source import load
    original = load(str(digits_example["model"]))
    tune, held, _ = load_splits(str(digits_example["validation"]), None, original, None)
    logits = np.concatenate([original.runner()(held.sample(i))[0] for i in range(len(held))])
    one = 1.01 / len(held)  # batched vs one-by-one float sums may flip a near-tie
    assert abs(m["source"]["accuracy"] - float(np.mean(logits.argmax(1) == held.labels))) <= one
    assert abs(m["compression"]["stages"][0]["accuracy"] - float(np.mean(np.concatenate(
        [original.runner()(tune.sample(i))[0] for i in range(len(tune))]).argmax(1) == tune.labels))) <= one
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
