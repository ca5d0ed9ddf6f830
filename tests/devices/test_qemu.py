"""ARM bundles on the emulated aarch64 device (transport = "qemu"), through the same harness.

Needs the root built by scripts/build_arm_root.sh (`make arm-root`, cached in
${EDGEKIT_CACHE:-~/.cache/edgekit}/arm64); skipped with that instruction when it is absent.
Each emulated run takes tens of seconds (qemu-user): those tests are `slow`.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from devtest import FAST, write_devices
from edgekit.devices.fleet import fleet_bench
from edgekit.devices.qemu import default_root, root_problem
from edgekit.report.load import load_report

ROOT = default_root()


@pytest.fixture(scope="module")
def arm_root():
    problem = root_problem(ROOT, "neoverse-n1") or root_problem(ROOT, "cortex-a72")
    if problem:
        pytest.skip(problem)
    return ROOT


def _convert(example: dict, target: str, out: Path):
    from edgekit.convert import convert
    (r,) = convert(str(example["model"]), [target], str(example["calibration"]), str(example["validation"]),
                   out, license="MIT", provenance="tests", progress=False)
    return r


def _fake_quant_logits(model: Path, validation: Path) -> tuple[np.ndarray, np.ndarray]:
    """The dev machine's expectation for an int8 QDQ model on ARM: ONNX Runtime with graph
    optimisations off runs Quantize/Dequantize + float ops, i.e. the exact fake-quant arithmetic,
    free of x86's no-VNNI int16 saturation (which the x86 integer kernels of the same file show)."""
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    s = ort.InferenceSession(str(model), so, providers=["CPUExecutionProvider"])
    with np.load(validation) as z:
        x, y = z["input.x"], z["labels"]
    return np.concatenate([s.run(None, {"x": x[i:i + 1]})[0] for i in range(len(x))]), y


@pytest.mark.slow
def test_arm64_server_int8_under_emulation(arm_root, digits_example, tmp_path):
    b = _convert(digits_example, "arm64-server", tmp_path / "bundles")
    f = write_devices(tmp_path / "devices.toml",
                      {"name": "graviton-emu", "transport": "qemu", "target": "arm64-server",
                       "workdir": str(tmp_path / "work")})
    out = tmp_path / "reports"
    res = fleet_bench(b.path, f, out=out, retries=0, progress=False, table=False, **FAST)
    r = res.results[0]
    assert r.status == "ok", r.error
    rep = load_report(out / "graviton-emu" / "arm64-server.json")
    env = rep["environment"]
    assert env["machine"] == "aarch64" and env["emulated"] is True
    assert "0xd0c" in env["cpu_model"] and "dotprod" in env["cpu_flags"]  # Neoverse N1 view
    assert env["runtime"]["name"] == "onnxruntime"
    assert rep["self_check"]["passed"] and rep["self_check"]["top1_agreement_expected"] == 1.0
    logits, labels = _fake_quant_logits(b.path / "model.onnx", b.path / "validation.npz")
    assert rep["accuracy"]["value"] == float(np.mean(logits.argmax(1) == labels))
    assert rep["robustness"]["passed"] and rep["robustness"]["crashed"] == []
    # latency is there, labelled emulated, and never gates the budget
    assert rep["latency"]["n"] >= 5 and r.summary["emulated"] is True
    from edgekit.gate import gate
    lat = [c for c in gate([out / "graviton-emu" / "arm64-server.json"]).checks if c.budget == "latency_p95_ms"]
    assert lat and all(c.status == "skip" and "emulated" in c.detail for c in lat)
    assert list((tmp_path / "work").iterdir()) == []

    # The outputs themselves, on every validation sample: the aarch64 kernels reproduce the dev
    # machine's fake-quant reference exactly.
    script = tmp_path / "dump.py"
    script.write_text(
        "import sys, numpy as np, onnxruntime as ort\n"
        "s = ort.InferenceSession(sys.argv[1], providers=['CPUExecutionProvider'])\n"
        "x = np.load(sys.argv[2])['input.x']\n"
        "np.save(sys.argv[3], np.concatenate([s.run(None, {'x': x[i:i+1]})[0] for i in range(len(x))]))\n")
    from edgekit.devices.transports import transport_for
    from edgekit.devices.inventory import load_devices
    t = transport_for(load_devices(f)[0])
    rc, _, err = t.run([t.python, str(script), str(b.path / "model.onnx"), str(b.path / "validation.npz"),
                        str(tmp_path / "arm.npy")], timeout=600)
    assert rc == 0, err
    arm = np.load(tmp_path / "arm.npy")
    assert (arm.argmax(1) == logits.argmax(1)).all()
    assert float(np.abs(arm - logits).max()) <= 1e-4 * float(np.abs(logits).max())


def _litert_ready() -> str | None:
    try:
        import ai_edge_litert  # noqa: F401
        from edgekit.backends import litert  # noqa: F401  (another engineer's backend)
    except Exception as exc:  # ImportError, or the backend module not written yet
        return f"the LiteRT backend is not importable yet ({type(exc).__name__}: {exc})"
    return None


@pytest.mark.slow
def test_rpi4_litert_int8_under_emulation(arm_root, digits_example, tmp_path):
    why = _litert_ready()
    if why:
        pytest.skip(why)
    b = _convert(digits_example, "rpi4", tmp_path / "bundles")
    f = write_devices(tmp_path / "devices.toml",
                      {"name": "pi-emu", "transport": "qemu", "target": "rpi4", "workdir": str(tmp_path / "work")})
    out = tmp_path / "reports"
    res = fleet_bench(b.path, f, out=out, retries=0, progress=False, table=False, **FAST)
    r = res.results[0]
    assert r.status == "ok", r.error
    rep = load_report(out / "pi-emu" / "rpi4.json")
    env = rep["environment"]
    assert env["machine"] == "aarch64" and env["emulated"] is True and "0xd08" in env["cpu_model"]
    assert env["runtime"]["name"] == "litert" and "dotprod" not in env["cpu_flags"]  # Cortex-A72
    assert rep["self_check"]["passed"] and rep["self_check"]["top1_agreement_expected"] == 1.0
    # the same int8 arithmetic as the dev machine's LiteRT: the same accuracy on the validation set
    assert rep["accuracy"]["value"] == pytest.approx(b.accuracy, abs=1e-12)
    assert rep["robustness"]["passed"]


def test_missing_root_is_a_clear_per_device_error(tmp_path):
    """Runs everywhere (no root needed): an unbuilt root names the script that builds it."""
    f = write_devices(tmp_path / "devices.toml",
                      {"name": "emu", "transport": "qemu", "target": "arm64-server", "root": str(tmp_path / "none")})
    from edgekit.devices.transports import transport_for
    from edgekit.devices.inventory import load_devices
    c = transport_for(load_devices(f)[0]).check()
    assert not c["ok"] and "scripts/build_arm_root.sh" in c["problems"][0]


@pytest.mark.skipif(not (ROOT / "python3.11").exists(), reason="the emulated ARM root is not built")
def test_build_script_is_idempotent():
    """A second run finds every step done: no download, no rebuild, no emulated smoke test."""
    proc = subprocess.run(["bash", str(Path(__file__).resolve().parents[2] / "scripts" / "build_arm_root.sh")],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "downloading" not in proc.stderr and "smoke test" not in proc.stderr, proc.stderr
    assert proc.stdout.strip() == str(ROOT)
