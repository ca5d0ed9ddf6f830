"""convert: bundles from a real model, and every bad input ending in one line, exit 2, nothing written."""

import sys

import numpy as np
import onnx
import pytest

from edgekit.bundle import read_manifest, verify
from edgekit.cli import main
from edgekit.errors import BundleError

from ektest import REPO, assert_one_line_error, run_cli


def test_bundles_are_complete_and_verified(digits_bundles):
    for precision, r in digits_bundles.items():
        m = verify(r.path)
        assert m["model"]["precision"] == precision
        assert set(m["files"]) >= {"model.onnx", "samples.npz", "validation.npz", "harness/run.py", "README.txt"}
        assert m["provenance"] == {"license": "MIT", "provenance": "tests"}
        assert m["source"]["kind"] == "pt2" and len(m["source"]["sha256"]) == 64
        assert m["data"]["calibration"]["n"] == 128
        assert m["data"]["validation"]["n"] + m["data"]["tuning"]["n"] == 360  # held-out + tuning halves
        assert {"edgekit", "torch", "onnxruntime", "onnx"} <= set(m["versions"])
        assert m["source"]["accuracy"] > 0.95
        onnx.checker.check_model(str(r.path / "model.onnx"))  # weights inline, file self-contained
        assert not list(r.path.glob("*.data")) and not list(r.path.parent.glob(".*partial*"))


def test_export_parity_with_pytorch(digits_bundles):
    fp32 = read_manifest(digits_bundles["fp32"].path)["conversion"]["parity"]
    assert fp32[0]["stage"] == "export" and fp32[0]["max_abs_diff"] < 1e-4 and fp32[0]["top1_agreement"] == 1.0
    int8 = read_manifest(digits_bundles["int8"].path)["conversion"]
    assert int8["parity"][1]["stage"] == "quantize" and int8["parity"][1]["top1_agreement"] >= 0.95
    q = int8["quantization"]
    assert q["format"] == "QDQ" and q["reduce_range"] is True and q["per_channel"] is True


def test_int8_keeps_accuracy_and_is_smaller(digits_bundles):
    fp, q = digits_bundles["fp32"], digits_bundles["int8"]
    assert q.accuracy_drop <= 0.01
    assert q.size_mb < fp.size_mb / 2.5


def test_samples_hold_inputs_expected_and_reference(digits_bundles):
    with np.load(digits_bundles["int8"].path / "samples.npz") as z:
        assert {"input.x", "expected.logits", "reference.logits"} <= set(z.files)
        assert z["input.x"].shape[1:] == (1, 8, 8)


def test_conversion_is_reproducible(digits_example, digits_bundles, tmp_path):
    from edgekit.convert import convert
    again = convert(str(digits_example["model"]), ["x86-avx2"], str(digits_example["calibration"]),
                    str(digits_example["validation"]), tmp_path, precisions=["int8"],
                    license="MIT", provenance="tests", progress=False)[0]
    a, b = read_manifest(digits_bundles["int8"].path), read_manifest(again.path)
    assert a["files"] == b["files"]  # byte-identical model, samples, validation set and harness
    # ... and the manifest itself: nothing time- or path-dependent is recorded in it
    assert (digits_bundles["int8"].path / "manifest.json").read_bytes() == (again.path / "manifest.json").read_bytes()


def test_verify_names_the_altered_file(bundle_copy):
    b = bundle_copy()
    with open(b / "model.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(BundleError, match="model.onnx sha256 mismatch"):
        verify(b)


# --- bad input through the CLI: exit 2, one line, no traceback, no bundle -------------------------

def _convert_args(ex, out, **over):
    args = {"source": str(ex["model"]), "--target": "x86-avx2", "--calibration": str(ex["calibration"]),
            "--validation": str(ex["validation"]), "--out": str(out)}
    args.update(over)
    flat = ["convert", args.pop("source")]
    for k, v in args.items():
        flat += [k, v]
    return flat


def _no_bundle(out):
    assert not out.exists() or not any(out.rglob("manifest.json")), list(out.rglob("*"))


@pytest.mark.parametrize("case", [
    "missing_model", "not_onnx", "factory_raises", "unknown_target", "bad_toml", "wrong_names",
    "wrong_shape", "wrong_dtype", "nan", "empty_validation", "unlabelled_validation", "too_few_calibration",
])
def test_bad_convert_inputs(case, digits_example, tmp_path, capsys):
    ex = digits_example
    out = tmp_path / "out"
    x = np.load(ex["calibration"])["x"]
    over, needle = {}, ""
    if case == "missing_model":
        over, needle = {"source": str(tmp_path / "gone.pt2")}, "gone.pt2: model file not found"
    elif case == "not_onnx":
        f = tmp_path / "model.onnx"
        f.write_text("hello")
        over, needle = {"source": str(f)}, "model.onnx: not a valid ONNX model"
    elif case == "factory_raises":
        over, needle = {"source": f"{REPO}/tests/fixtures/factories.py:raises"}, "factory raises() raised RuntimeError"
    elif case == "unknown_target":
        over, needle = {"--target": "rpi9"}, "unknown target 'rpi9'"
    elif case == "bad_toml":
        f = tmp_path / "t.toml"
        f.write_text("speed = 3\n" + (REPO / "targets" / "x86-avx2.toml").read_text())
        over, needle = {"--target": str(f)}, "unknown key 'speed'"
    elif case == "wrong_names":
        np.savez(tmp_path / "c.npz", pixels=x)
        over, needle = {"--calibration": str(tmp_path / "c.npz")}, "no array named 'x'"
    elif case == "wrong_shape":
        np.savez(tmp_path / "c.npz", x=x[:, :, :4, :])
        over, needle = {"--calibration": str(tmp_path / "c.npz")}, "samples of shape 1x4x8; the model expects 1x8x8"
    elif case == "wrong_dtype":
        np.savez(tmp_path / "c.npz", x=x.astype(np.float16))
        over, needle = {"--calibration": str(tmp_path / "c.npz")}, "dtype float16; the model expects float32"
    elif case == "nan":
        x = x.copy()
        x[5, 0, 0, 0] = np.nan
        np.savez(tmp_path / "c.npz", x=x)
        over, needle = {"--calibration": str(tmp_path / "c.npz")}, "holds NaN or Inf (first at sample 5)"
    elif case == "empty_validation":
        np.savez(tmp_path / "v.npz", x=x[:0], labels=np.zeros(0, np.int64))
        over, needle = {"--validation": str(tmp_path / "v.npz")}, "validation set is empty"
    elif case == "unlabelled_validation":
        np.savez(tmp_path / "v.npz", x=x[:10])
        over, needle = {"--validation": str(tmp_path / "v.npz")}, "validation set has no labels"
    elif case == "too_few_calibration":
        np.savez(tmp_path / "c.npz", x=x[:8])
        over, needle = {"--calibration": str(tmp_path / "c.npz")}, "8 calibration samples, fewer than the 32"
    code = main(_convert_args(ex, out, **over))
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.startswith("edgekit: error: ") and len(err.splitlines()) == 1 and needle in err, err
    _no_bundle(out)


def test_bad_input_in_a_fresh_process(tmp_path):
    proc = run_cli("convert", tmp_path / "nope.onnx", "--target", "x86-avx2", "--calibration", "c.npz",
                   "--validation", "v.npz", "--out", tmp_path / "out")
    assert_one_line_error(proc, "nope.onnx: model file not found")
    _no_bundle(tmp_path / "out")


def test_interrupted_convert_leaves_no_bundle(digits_example, tmp_path, monkeypatch):
    """A failure after files are written (here: while writing the manifest) leaves nothing valid."""
    from edgekit.convert import convert

    def boom(*a, **k):
        raise KeyboardInterrupt
    # edgekit.convert is the function on the package; the module is reached through sys.modules
    monkeypatch.setattr(sys.modules["edgekit.convert"], "write_manifest", boom)
    with pytest.raises(KeyboardInterrupt):
        convert(str(digits_example["model"]), ["x86-avx2"], str(digits_example["calibration"]),
                str(digits_example["validation"]), tmp_path / "out", precisions=["fp32"], progress=False)
    assert list((tmp_path / "out").iterdir()) == []


def test_an_op_the_exporter_cannot_take_is_named(tmp_path, capsys):
    x = np.random.default_rng(0).random((40, 4, 4), dtype=np.float32)
    np.savez(tmp_path / "c.npz", x=x)
    np.savez(tmp_path / "v.npz", x=x[:8], labels=np.zeros(8, np.int64))
    code = main(["convert", f"{REPO}/tests/fixtures/factories.py:eigh", "--target", "x86-avx2",
                 "--precision", "fp32", "--calibration", str(tmp_path / "c.npz"),
                 "--validation", str(tmp_path / "v.npz"), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "operator aten::linalg_eigh is not supported" in err and "x86-avx2" in err
    _no_bundle(tmp_path / "out")


def test_targets_dir_converts_every_profile_once(digits_example, tmp_path):
    from edgekit.convert import convert
    d = tmp_path / "profiles"
    d.mkdir()
    for name in ("x86-avx2", "x86-vnni"):
        (d / f"{name}.toml").write_text((REPO / "targets" / f"{name}.toml").read_text())
    results = convert(str(digits_example["model"]), [], str(digits_example["calibration"]),
                      str(digits_example["validation"]), tmp_path / "out", targets_dir=str(d),
                      precisions=["fp32"], progress=False)
    assert sorted(r.name for r in results) == ["x86-avx2-fp32", "x86-vnni-fp32"]


def test_a_profile_whose_runtime_is_missing_names_the_extra(digits_example, tmp_path):
    """A device-less dev machine without OpenVINO: simulated by shadowing the package with one
    that fails to import, in a fresh process (the real runtimes stay installed)."""
    import os
    import subprocess
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "openvino.py").write_text("raise ImportError('openvino hidden for this test')\n")
    env = {**os.environ, "PYTHONPATH": str(shim)}
    proc = subprocess.run([sys.executable, "-m", "edgekit", "convert", str(digits_example["model"]),
                           "--target", "intel-cpu-openvino", "--calibration", str(digits_example["calibration"]),
                           "--validation", str(digits_example["validation"]), "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, env=env, cwd=REPO)
    assert_one_line_error(proc, "openvino is not installed", "pip install 'edgekit[openvino]'")
    _no_bundle(tmp_path / "out")
