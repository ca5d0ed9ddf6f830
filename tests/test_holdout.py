"""Honest accuracy figures (issue 15): every choice a conversion makes is judged on a tuning split,
the reported drop on a held-out split no choice saw."""

from __future__ import annotations

import json

import numpy as np

from edgekit.data import Dataset, split_holdout
from ektest import assert_one_line_error, run_cli


def _data(labels):
    n = len(labels)
    return Dataset({"x": np.arange(n, dtype=np.float32)[:, None]}, np.asarray(labels), "v.npz", "0", "npz",
                   role="validation")


def test_split_is_disjoint_stratified_and_deterministic():
    labels = [0] * 7 + [1] * 4 + [2] * 1
    rng = np.random.default_rng(0)
    order = rng.permutation(len(labels))
    d = _data(np.asarray(labels)[order])
    tune, held = split_holdout(d)
    a, b = tune.inputs["x"][:, 0], held.inputs["x"][:, 0]
    assert not set(a) & set(b) and len(a) + len(b) == len(labels)
    assert sorted(np.bincount(tune.labels).tolist()) == [1, 2, 4]   # ceil(n_c / 2) of each class
    assert sorted(np.bincount(held.labels, minlength=3).tolist()) == [0, 2, 3]
    assert (tune.split, held.split) == ("tuning", "held-out")
    again = split_holdout(d)[1]
    assert np.array_equal(again.inputs["x"], held.inputs["x"])
    # unlabelled data splits by position
    u = Dataset({"x": np.zeros((5, 1), np.float32)}, None, "u.npz", "0", "npz")
    assert [len(s) for s in split_holdout(u)] == [3, 2]


def test_bundle_holds_the_held_out_half_and_says_so(digits_bundles, digits_example):
    m = json.loads((digits_bundles["int8"].path / "manifest.json").read_text())
    with np.load(digits_example["validation"]) as z:
        n = len(z["labels"])
    tune, held = m["data"]["tuning"], m["data"]["validation"]
    assert (tune["split"], held["split"]) == ("tuning", "held-out")
    assert tune["n"] + held["n"] == n and tune["path"] == held["path"]
    assert m["conversion"]["accuracy"]["n"] == held["n"] == m["validation"]["n"]
    assert m["conversion"]["accuracy"]["data"] == "held-out"
    assert m["conversion"]["accuracy_control"]["judged_on"]["split"] == "tuning"
    with np.load(digits_bundles["int8"].path / "validation.npz") as z:
        assert len(z["labels"]) == held["n"]


def test_test_file_is_the_held_out_set(digits_example, tmp_path):
    out = tmp_path / "b"
    proc = run_cli("convert", digits_example["model"], "--target", "x86-avx2", "--calibration",
                   digits_example["calibration"], "--validation", digits_example["calibration"],
                   "--test", digits_example["validation"], "--out", out)
    assert proc.returncode == 0, proc.stderr
    m = json.loads((out / "x86-avx2" / "manifest.json").read_text())
    assert m["data"]["tuning"]["path"].endswith("calibration.npz")
    assert m["data"]["validation"]["path"].endswith("validation.npz")
    with np.load(digits_example["validation"]) as z:
        assert m["validation"]["n"] == len(z["labels"])


def test_unreadable_test_file_is_one_line(digits_example, tmp_path):
    bad = tmp_path / "test.npz"
    bad.write_text("not an archive")
    proc = run_cli("convert", digits_example["model"], "--target", "x86-avx2", "--calibration",
                   digits_example["calibration"], "--validation", digits_example["validation"],
                   "--test", bad, "--out", tmp_path / "o")
    assert_one_line_error(proc, str(bad), "npz")
    assert not (tmp_path / "o" / "x86-avx2").exists()
