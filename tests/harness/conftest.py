"""Fixtures for the device-side harness tests: a real, tiny bundle built by hand per docs/FORMATS.md.

Nothing is mocked: a small torch CNN is exported to ONNX, expected outputs come from onnxruntime,
reference outputs from torch, and the harness runs as it would on a device, in a subprocess with
this interpreter (the venv's python), from a copy of edgekit/harness/ inside the bundle.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
HARNESS_SRC = REPO / "edgekit" / "harness"

# Small settings so each harness run takes a couple of seconds (HARNESS_SPEC defaults are
# 300 runs / 10 s / 3 trials, about 40 s per bundle).
FAST = ["--runs", "20", "--warmup", "2", "--min-seconds", "0.05", "--warmup-seconds", "0.01",
        "--trials", "2"]
RUNS, TRIALS = 20, 2

N_SAMPLES = 8       # self-check samples
N_VALIDATION = 64   # validation samples
N_FLIPPED = 16      # validation labels deliberately wrong: expected accuracy 48/64 = 0.75


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tiny_model():
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(8 * 6 * 6, 10)
    ).eval()


def export_onnx(model, path: Path) -> None:
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(model, (torch.zeros(1, 1, 8, 8),), str(path), input_names=["x"],
                          output_names=["logits"], opset_version=17, dynamo=False,
                          dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}})


def ort_outputs(model_path: Path, x: np.ndarray) -> np.ndarray:
    """What the dev machine's runtime gives, one sample at a time (batch 1, as the harness runs)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    return np.concatenate([sess.run(["logits"], {"x": x[i:i + 1]})[0] for i in range(len(x))])


def rehash(bundle: Path) -> None:
    """Recompute manifest["files"] after a test edited a bundle file on purpose."""
    mpath = bundle / "manifest.json"
    manifest = json.loads(mpath.read_text())
    manifest["files"] = {rel: sha256(bundle / rel) for rel in manifest["files"]}
    mpath.write_text(json.dumps(manifest, indent=1))


def write_bundle(bundle: Path, model_files: list[str], runtime: str, fmt: str, device: str,
                 samples: dict, validation: dict, source_accuracy: float) -> Path:
    """Lay out the rest of a bundle around model files already in `bundle`: data, harness, manifest."""
    np.savez(bundle / "samples.npz", **samples)
    np.savez(bundle / "validation.npz", **validation)
    (bundle / "harness").mkdir()
    for src in sorted(HARNESS_SRC.glob("*.py")):
        shutil.copy2(src, bundle / "harness" / src.name)
    shutil.copy2(HARNESS_SRC / "README.txt", bundle / "README.txt")
    target = {"name": bundle.name, "description": "test", "arch": "x86_64", "isa": [],
              "runtime": runtime, "device": device, "precision": "fp32", "threads": 1,
              "static_shapes": False, "stand_in": "warn", "budget": {}}
    files = sorted(p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file())
    manifest = {
        "schema": "edgekit.manifest/1",
        "bundle": {"name": bundle.name, "label": None},
        "model": {"file": model_files[0], "files": model_files, "format": fmt, "runtime": runtime,
                  "precision": "fp32", "task": "classification",
                  "size_bytes": sum((bundle / f).stat().st_size for f in model_files),
                  "inputs": [{"name": "x", "shape": [1, 1, 8, 8], "dtype": "float32"}],
                  "outputs": [{"name": "logits", "shape": [1, 10], "dtype": "float32"}]},
        "target": target,
        "runtime_settings": {"threads": 1, "device": device},
        "conversion": {"precision": "fp32", "export": {}, "quantization": None, "parity": [],
                       "accuracy": {"metric": "top1", "n": N_VALIDATION, "value": source_accuracy}},
        "source": {"kind": "test", "path": "tiny", "sha256": "0" * 64, "accuracy": source_accuracy},
        "data": {"calibration": None, "validation": {"path": "random", "sha256": "0" * 64,
                                                     "n": N_VALIDATION}},
        "provenance": {"license": "unknown", "provenance": "unknown"},
        "versions": {"edgekit": "0.1.0", "python": sys.version.split()[0]},
        "selfcheck": {"file": "samples.npz", "n": N_SAMPLES, "atol": 1e-4, "rtol": 1e-3,
                      "min_top1_agreement": 1.0},
        "validation": {"file": "validation.npz", "n": N_VALIDATION, "metric": "top1"},
        "files": {rel: sha256(bundle / rel) for rel in files},
    }
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return bundle


@pytest.fixture(scope="session")
def source_data():
    """The tiny torch model, its inputs and its fp32 (reference) outputs, built once per session."""
    import torch

    model = tiny_model()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((N_SAMPLES, 1, 8, 8)).astype(np.float32)
    xv = rng.standard_normal((N_VALIDATION, 1, 8, 8)).astype(np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
        ref_val = model(torch.from_numpy(xv)).numpy()
    labels = ref_val.argmax(axis=1).astype(np.int64)
    labels[:N_FLIPPED] = (labels[:N_FLIPPED] + 1) % 10
    source_accuracy = float(np.mean(ref_val.argmax(axis=1) == labels))
    return {"model": model, "x": x, "reference": ref, "xv": xv, "labels": labels,
            "source_accuracy": source_accuracy}


@pytest.fixture(scope="session")
def onnx_bundle(tmp_path_factory, source_data) -> Path:
    """A complete onnxruntime bundle. Tests that alter it must work on copy_bundle(...)."""
    bundle = tmp_path_factory.mktemp("bundles") / "x86-test"
    bundle.mkdir()
    export_onnx(source_data["model"], bundle / "model.onnx")
    expected = ort_outputs(bundle / "model.onnx", source_data["x"])
    d = source_data
    return write_bundle(
        bundle, ["model.onnx"], "onnxruntime", "onnx", "CPU",
        samples={"input.x": d["x"], "expected.logits": expected, "reference.logits": d["reference"]},
        validation={"input.x": d["xv"], "labels": d["labels"]},
        source_accuracy=d["source_accuracy"])


@pytest.fixture
def copy_bundle(tmp_path):
    def copy(bundle: Path) -> Path:
        dst = tmp_path / bundle.name
        shutil.copytree(bundle, dst)
        return dst
    return copy


def run_harness(bundle: Path, *args: str, env: dict | None = None, cwd: Path | None = None,
                script: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run <bundle>/harness/run.py with this interpreter, as a user would on a device."""
    script = script or bundle / "harness" / "run.py"
    return subprocess.run([sys.executable, str(script), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def onnx_report(onnx_bundle, tmp_path_factory) -> dict:
    """One real run on a copy of the bundle, the way a device runs it: cwd = bundle, no --bundle,
    default report path <bundle>/report.json."""
    bundle = tmp_path_factory.mktemp("run") / onnx_bundle.name
    shutil.copytree(onnx_bundle, bundle)
    proc = run_harness(bundle, *FAST, cwd=bundle, script=Path("harness") / "run.py")
    assert proc.returncode == 0, proc.stderr
    assert not (bundle / "harness" / "__pycache__").exists(), "harness wrote bytecode into the bundle"
    report = json.loads((bundle / "report.json").read_text())
    report["_stdout"] = proc.stdout
    return report


@pytest.fixture(scope="session")
def harness_module():
    """Import a harness module from edgekit/harness/ the way run.py does (its dir on sys.path)."""
    import importlib

    if str(HARNESS_SRC) not in sys.path:
        sys.path.insert(0, str(HARNESS_SRC))
    return importlib.import_module


@pytest.fixture(scope="session")
def hx():
    """Helpers and constants for the test modules (imported through a fixture, not `from conftest
    import`, which breaks as soon as another test folder has a conftest.py of its own)."""
    from types import SimpleNamespace

    return SimpleNamespace(run=run_harness, rehash=rehash, sha256=sha256, write_bundle=write_bundle,
                           FAST=FAST, RUNS=RUNS, TRIALS=TRIALS, N_SAMPLES=N_SAMPLES,
                           N_VALIDATION=N_VALIDATION, HARNESS_SRC=HARNESS_SRC)
