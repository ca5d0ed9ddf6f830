"""Drift: reference statistics, PSI/KS per feature, the harness's rolling field log, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgekit.bundle import read_manifest, write_manifest
from edgekit.errors import BundleError, ConfigError, DataError
from edgekit.trust.drift import drift, ks_against_quantiles, psi, reference_stats
from ektest import REPO, assert_one_line_error, run_cli

W = np.array([[1.0, -1.0, 0.5], [0.5, 1.0, -1.0], [-0.5, 0.2, 1.0], [0.1, 0.1, 0.1]])


def sample(n: int, seed: int, shift: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Inputs x (n, 4) and a linear 'model's logits (n, 3); `shift` moves feature x[1] only."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 1.0, (n, 4)).astype(np.float32)
    x[:, 1] += shift
    return x, (x @ W).astype(np.float32)


def set_drift(bundle: Path, ref: dict | None, as_file: bool = False, **target) -> None:
    m = read_manifest(bundle)
    m.pop("files")
    m.pop("schema")
    m["model"]["inputs"] = [{"name": "x", "shape": [None, 4], "dtype": "float32"}]
    m["model"]["outputs"] = [{"name": "logits", "shape": [None, 3], "dtype": "float32"}]
    m["target"].update(target)
    if as_file:
        (bundle / "drift_reference.json").write_text(json.dumps(ref, separators=(",", ":")))
        m["drift"] = {"file": "drift_reference.json"}
    elif ref is not None:
        m["drift"] = ref
    write_manifest(bundle, m)


@pytest.fixture
def drift_bundle(fake_bundle) -> Path:
    cal, _ = sample(300, 1)
    val, logits = sample(200, 2)
    set_drift(fake_bundle, reference_stats([{"x": cal}, {"x": val}], {"logits": logits}))
    return fake_bundle


def write_log(directory: Path, x: np.ndarray, y: np.ndarray | None, max_mb: float = 16.0) -> Path:
    sys.path.insert(0, str(REPO / "edgekit" / "harness"))
    try:
        from _ek_fieldlog import FieldLog
    finally:
        sys.path.pop(0)
    with FieldLog(directory, max_mb) as log:
        for i in range(len(x)):
            log.log({"x": x[i:i + 1]}, {"logits": y[i:i + 1]} if y is not None else {})
    return directory


# ---------------------------------------------------------------- statistics

def test_reference_stats_shape_and_determinism():
    x, y = sample(500, 0)
    ref = reference_stats({"x": x}, {"logits": y})
    assert ref["inputs"] == {"x": {"shape": [4], "dtype": "float32", "n": 500}}
    assert {"x[0]", "x[3]", "x:mean", "x:std", "logits:confidence", "logits[2]"} <= set(ref["features"])
    f = ref["features"]["x[0]"]
    assert len(f["quantiles"]) == 101 and len(f["expected"]) == len(f["edges"]) + 1 == 10
    assert sum(f["expected"]) == pytest.approx(1.0, abs=1e-6)
    assert len(ref["classes"]["logits"]["expected"]) == 3
    assert json.dumps(ref) == json.dumps(reference_stats({"x": x}, {"logits": y}))


def test_image_and_token_features():
    img = np.random.default_rng(0).random((20, 3, 16, 16)).astype(np.float32)
    ids = np.zeros((20, 8), np.int64)
    ids[:, :5] = 7
    ref = reference_stats({"img": img, "ids": ids})
    assert {"img:mean", "img:std", "img:c0:mean", "img:c1:mean", "img:c2:mean", "ids:nonzero", "ids:mean"} == set(ref["features"])
    assert ref["features"]["ids:nonzero"]["quantiles"][50] == 5


def test_psi_and_ks_basics():
    assert psi([0.5, 0.5], [0.5, 0.5]) == 0
    assert psi([0.9, 0.1], [0.5, 0.5]) > 0.2
    rng = np.random.default_rng(0)
    ref = np.quantile(rng.normal(size=5000), np.linspace(0, 1, 101))
    d_same, p_same = ks_against_quantiles(rng.normal(size=1000), ref, 5000)
    d_far, p_far = ks_against_quantiles(rng.normal(1.0, 1.0, 1000), ref, 5000)
    assert d_same < 0.06 and p_same > 0.01 and d_far > 0.3 and p_far < 1e-10
    # ties: a reference that is 40% zeros, and a field sample with the same mix
    tied = np.quantile(np.r_[np.zeros(400), rng.random(600)], np.linspace(0, 1, 101))
    d, _ = ks_against_quantiles(np.r_[np.zeros(40), rng.random(60)], tied, 1000)
    assert d < 0.15


# ---------------------------------------------------------------- drift verdicts

def test_no_drift_on_fresh_data_from_the_same_distribution(drift_bundle):
    x, y = sample(500, 3)
    r = drift(drift_bundle, {"x": x}, field_outputs={"logits": y})
    assert r.verdict == "no drift" and r.exit_code == 0, [f.to_dict() for f in r.drifted]
    assert {f.name for f in r.features} >= {"x[0]", "x[1]", "logits:class", "logits:confidence"}


def test_drift_names_the_feature_that_moved(drift_bundle):
    x, y = sample(500, 4, shift=1.5)
    r = drift(drift_bundle, {"x": x}, field_outputs={"logits": y})
    names = {f.name for f in r.drifted}
    assert r.exit_code == 1 and "x[1]" in names
    assert not names & {"x[0]", "x[2]", "x[3]"}
    assert "logits:class" in names          # the shift moves the predicted classes too
    moved = next(f for f in r.features if f.name == "x[1]")
    assert moved.psi > 0.2 and moved.p_value < 0.01 and moved.test == "ks"


def test_inputs_only_field_data_checks_inputs_and_says_so(drift_bundle):
    x, _ = sample(100, 5)
    r = drift(drift_bundle, {"x": x})
    assert r.exit_code == 0 and all(f.source == "input" for f in r.features)
    assert any("output 'logits' not in the field data" in n for n in r.notes)


def test_thresholds_from_the_profile_and_overrides(fake_bundle):
    cal, y = sample(300, 1)
    ref = reference_stats({"x": cal}, {"logits": y})
    x, yf = sample(400, 6, shift=0.35)      # a small shift: PSI ~ 0.1
    set_drift(fake_bundle, ref)
    small = next(f for f in drift(fake_bundle, {"x": x}).features if f.name == "x[1]")
    assert 0.05 < small.psi < 0.2 and small.p_value < 0.01 and not small.drifted
    assert "x[1]" in {f.name for f in drift(fake_bundle, {"x": x}, psi_threshold=0.05).drifted}
    set_drift(fake_bundle, ref, drift={"psi": 0.05, "ks_p": 0.01})
    r = drift(fake_bundle, {"x": x})
    assert r.psi_threshold == 0.05 and "x[1]" in {f.name for f in r.drifted}
    with pytest.raises(ConfigError, match="PSI threshold"):
        drift(fake_bundle, {"x": x}, psi_threshold=-1)


def test_reference_in_a_hashed_file(fake_bundle):
    cal, y = sample(300, 1)
    set_drift(fake_bundle, reference_stats({"x": cal}, {"logits": y}), as_file=True)
    x, _ = sample(300, 7, shift=2.0)
    assert drift(fake_bundle, {"x": x}).exit_code == 1
    (fake_bundle / "drift_reference.json").write_text("{}")
    with pytest.raises(BundleError, match="altered"):
        drift(fake_bundle, {"x": x})


# ---------------------------------------------------------------- bad input

def test_missing_feature_is_a_clear_error(drift_bundle, tmp_path):
    x, y = sample(50, 8)
    np.savez(tmp_path / "wrong_name.npz", pixels=x)
    with pytest.raises(DataError, match="no input 'x'.*found pixels"):
        drift(drift_bundle, tmp_path / "wrong_name.npz")
    np.savez(tmp_path / "narrow.npz", x=x[:, :3])
    with pytest.raises(DataError, match="shape 3; the reference has 4"):
        drift(drift_bundle, tmp_path / "narrow.npz")
    log = tmp_path / "log.jsonl"
    log.write_text("\n".join(json.dumps({"t": 0, "inputs": {"other": [1.0]}, "outputs": {}}) for _ in range(30)))
    with pytest.raises(DataError, match="no input 'x'"):
        drift(drift_bundle, log)
    with pytest.raises(DataError, match="at least 20"):
        drift(drift_bundle, {"x": x[:10]})


def test_no_reference_in_the_manifest(fake_bundle):
    x, _ = sample(50, 8)
    with pytest.raises(BundleError, match="no drift reference"):
        drift(fake_bundle, {"x": x})


def test_cli(drift_bundle, tmp_path):
    same, y = sample(300, 9)
    moved, y2 = sample(300, 10, shift=2.0)
    np.savez(tmp_path / "same.npz", x=same, **{"output.logits": y})
    write_log(tmp_path / "moved", moved, y2)
    proc = run_cli("drift", drift_bundle, tmp_path / "same.npz")
    assert proc.returncode == 0 and "NO DRIFT" in proc.stdout, proc.stdout + proc.stderr
    proc = run_cli("drift", drift_bundle, tmp_path / "moved", "--json")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    out = json.loads(proc.stdout)
    assert out["verdict"] == "drift" and "x[1]" in out["drifted"] and out["n_field"] == 300
    np.savez(tmp_path / "bad.npz", y=same)
    assert_one_line_error(run_cli("drift", drift_bundle, tmp_path / "bad.npz"), "bad.npz", "no input 'x'")
    assert_one_line_error(run_cli("drift", drift_bundle, tmp_path / "nothing.npz"), "no such field log")


# ---------------------------------------------------------------- the field log

def test_field_log_is_bounded_and_keeps_the_newest(tmp_path):
    x, y = sample(3000, 11)
    d = write_log(tmp_path / "log", x, y, max_mb=0.05)
    files = sorted(d.glob("field-*.jsonl"))
    assert sum(f.stat().st_size for f in files) <= 0.05 * 2 ** 20
    last = json.loads(files[-1].read_text().splitlines()[-1])
    assert np.allclose(last["inputs"]["x"], x[-1:], atol=1e-6)
    assert len(files) >= 2


def test_field_log_tolerates_a_torn_last_line_only(drift_bundle, tmp_path):
    x, y = sample(60, 12)
    d = write_log(tmp_path / "log", x, y)
    seg = sorted(d.glob("field-*.jsonl"))[-1]
    with open(seg, "a") as f:
        f.write('{"t": 1, "inputs": {"x": [[0.1, 0.')
    assert drift(drift_bundle, d).n_field == 60
    lines = seg.read_text().splitlines()
    lines[3] = "garbage"
    seg.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"field-\d+\.jsonl:4: not a JSON line"):
        drift(drift_bundle, d)


def test_harness_logs_field_data_and_drift_reads_it(bundle_copy, digits_example, tmp_path):
    """End to end on a real bundle: reference from calibration + validation and the artifact's
    outputs; the harness's --log-field log of its validation run shows no drift; altered inputs do."""
    import onnxruntime as ort
    b = bundle_copy("fp32")
    sess = ort.InferenceSession(str(b / "model.onnx"), providers=["CPUExecutionProvider"])

    def run(x):
        return np.concatenate([sess.run(None, {"x": x[i:i + 1]})[0] for i in range(len(x))])
    with np.load(digits_example["calibration"]) as c, np.load(digits_example["validation"]) as v:
        cal, val = c["x"], v["x"]
    m = read_manifest(b)
    m.pop("files")
    m.pop("schema")
    m["drift"] = reference_stats([{"x": cal}, {"x": val}], {"logits": run(val)})
    write_manifest(b, m)
    log = tmp_path / "field"
    proc = subprocess.run([sys.executable, str(b / "harness" / "run.py"), "--out", str(tmp_path / "r.json"),
                           "--runs", "5", "--warmup", "1", "--min-seconds", "0", "--warmup-seconds", "0",
                           "--trials", "1", "--quiet", "--log-field", str(log), "--log-max-mb", "4"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    held = m["validation"]["n"]  # the harness runs the bundle's held-out half of val
    assert report["field_log"]["records"] == held < len(val)
    r = drift(b, log)
    assert r.exit_code == 0 and r.n_field == held, [f.to_dict() for f in r.drifted]
    assert any(f.source == "class" for f in r.features)
    dark = (val * 0.5).astype(np.float32)              # a dimmer sensor
    write_log(tmp_path / "dark", dark, run(dark))
    r = drift(b, tmp_path / "dark")
    assert r.exit_code == 1 and any(f.name == "x:mean" for f in r.drifted)
