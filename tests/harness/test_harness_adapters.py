"""The OpenVINO and LiteRT adapters, each on a real artifact converted from the tiny test model.

The bundles reuse the ONNX bundle's samples and validation data; expected outputs are
onnxruntime's, which an fp32 artifact in another runtime must reproduce within atol 1e-4.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest


def _data(onnx_bundle: Path) -> tuple[dict, dict, float]:
    with np.load(onnx_bundle / "samples.npz") as z:
        samples = {k: z[k] for k in z.files}
    with np.load(onnx_bundle / "validation.npz") as z:
        validation = {k: z[k] for k in z.files}
    manifest = json.loads((onnx_bundle / "manifest.json").read_text())
    return samples, validation, manifest["source"]["accuracy"]


def _check_good_report(report: dict, hx, runtime: str) -> None:
    assert report["status"] == "ok"
    assert report["bundle"]["runtime"] == runtime
    assert report["environment"]["runtime"]["name"] == runtime
    sc = report["self_check"]
    assert sc["passed"] is True, sc
    assert sc["max_abs_diff"] <= 1e-4 and sc["top1_agreement_reference"] == 1.0
    lat = report["latency"]
    assert lat["n"] >= hx.RUNS * hx.TRIALS
    assert 0 < lat["min"] <= lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"]
    mem = report["memory"]
    assert mem["peak_rss_mb"] >= max(mem["baseline_rss_mb"])
    assert len(report["cold_start"]["load_ms"]) == hx.TRIALS
    assert report["accuracy"]["value"] == pytest.approx(0.75, abs=2 / hx.N_VALIDATION)


def test_openvino_ir_bundle(onnx_bundle, tmp_path, hx):
    try:
        import openvino as ov
    except ImportError:
        pytest.skip("openvino extra not installed (pip install 'edgekit[openvino]')")
    bundle = tmp_path / "x86-ov-test"
    bundle.mkdir()
    ov.save_model(ov.convert_model(str(onnx_bundle / "model.onnx")), str(bundle / "model.xml"),
                  compress_to_fp16=False)
    samples, validation, source_acc = _data(onnx_bundle)
    # Ask for an NPU: where none is present the adapter must compile for the CPU and say so.
    hx.write_bundle(bundle, ["model.xml", "model.bin"], "openvino", "openvino", "NPU",
                    samples, validation, source_acc)
    proc = hx.run(bundle, *hx.FAST)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((bundle / "report.json").read_text())
    _check_good_report(report, hx, "openvino")
    env = report["environment"]
    assert env["requested_device"] == "NPU"
    if "NPU" in ov.Core().available_devices:
        assert env["actual_device"] == "NPU" and env["stand_in"] is False
    else:
        assert env["actual_device"] == "CPU" and env["stand_in"] is True
        cfg = env["runtime"]["config"]
        assert cfg["INFERENCE_NUM_THREADS"] == "1"
        assert cfg["INFERENCE_PRECISION_HINT"].lower() in ("f32", "float32")
        # what the plugin computed in, read back: f32 on every host, BF16-capable ones included
        assert env["runtime"]["inference_precision"] == "f32"
        assert cfg["PERFORMANCE_HINT"].upper() == "LATENCY"
    assert report["model_size_mb"] == pytest.approx(
        sum((bundle / f).stat().st_size for f in ("model.xml", "model.bin")) / 2**20, abs=1e-6)


def test_openvino_tampered_weights(onnx_bundle, tmp_path, hx):
    """model.bin is part of the artifact: altering it is caught by name before anything runs."""
    try:
        import openvino as ov
    except ImportError:
        pytest.skip("openvino extra not installed (pip install 'edgekit[openvino]')")
    bundle = tmp_path / "x86-ov-tampered"
    bundle.mkdir()
    ov.save_model(ov.convert_model(str(onnx_bundle / "model.onnx")), str(bundle / "model.xml"),
                  compress_to_fp16=False)
    samples, validation, source_acc = _data(onnx_bundle)
    hx.write_bundle(bundle, ["model.xml", "model.bin"], "openvino", "openvino", "CPU",
                    samples, validation, source_acc)
    data = bytearray((bundle / "model.bin").read_bytes())
    data[0] ^= 0xFF
    (bundle / "model.bin").write_bytes(bytes(data))
    proc = hx.run(bundle, *hx.FAST)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (f"harness: error: {bundle}/model.bin: sha256 mismatch with "
                                   "manifest.json (bundle altered or corrupt)")


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.export deprecations in litert-torch
def test_litert_bundle(onnx_bundle, source_data, tmp_path, hx):
    """Converting with litert-torch takes ~15 s, hence slow; the adapter itself runs in ~2 s."""
    try:
        import ai_edge_litert.interpreter  # noqa: F401
        import litert_torch
        import torch
    except ImportError:
        pytest.skip("litert extra not installed (pip install 'edgekit[litert]')")
    bundle = tmp_path / "x86-litert-test"
    bundle.mkdir()
    litert_torch.convert(source_data["model"], (torch.zeros(1, 1, 8, 8),)).export(
        str(bundle / "model.tflite"))
    samples, validation, source_acc = _data(onnx_bundle)
    # The .tflite names its input "serving_default_args_0", not "x": matched by order.
    hx.write_bundle(bundle, ["model.tflite"], "litert", "tflite", "CPU",
                    samples, validation, source_acc)
    proc = hx.run(bundle, *hx.FAST)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((bundle / "report.json").read_text())
    _check_good_report(report, hx, "litert")
    env = report["environment"]
    assert env["actual_device"] == "CPU" and env["stand_in"] is False
    assert env["runtime"]["package"] in ("ai_edge_litert", "tflite_runtime")
    shutil.rmtree(bundle)
