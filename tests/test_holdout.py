"""Honest accuracy figures (issue 15): every choice a conversion makes is judged on a tuning split,
the reported drop on a held-out split no choice saw."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgekit.data import Dataset, split_holdout
from edgekit.errors import DataError
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
    # each class: floor or ceil of half in each part; the whole: ceil(N/2) tunes
    t, h = np.bincount(tune.labels, minlength=3), np.bincount(held.labels, minlength=3)
    assert (t + h).tolist() == [7, 4, 1] and all(abs(int(a) - int(b)) <= 1 for a, b in zip(t, h))
    assert (len(a), len(b)) == (6, 6)
    assert (tune.split, held.split) == ("tuning", "held-out")
    again = split_holdout(d)[1]
    assert np.array_equal(again.inputs["x"], held.inputs["x"])
    # unlabelled data splits by position
    u = Dataset({"x": np.zeros((5, 1), np.float32)}, None, "u.npz", "0", "npz")
    assert [len(s) for s in split_holdout(u)] == [3, 2]


def test_split_holds_out_half_when_every_class_occurs_once():
    """16 images with 16 different ImageNet labels: halving each class alone held out nothing."""
    d = _data(np.random.default_rng(0).permutation(1000)[:16])
    tune, held = split_holdout(d)
    assert (len(tune), len(held)) == (8, 8)
    assert not set(tune.labels) & set(held.labels)


def test_one_sample_cannot_be_split():
    with pytest.raises(DataError, match=r"v.npz: 1 validation sample\(s\) cannot be cut .* \(--test\)"):
        split_holdout(_data([3]))


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
