"""bench + gate end to end, through the real CLI in fresh processes, on real bundles."""

import json
import xml.etree.ElementTree as ET

import pytest

from ektest import assert_one_line_error, run_cli

QUICK = ["--runs", "100", "--warmup", "5", "--min-seconds", "0.2", "--warmup-seconds", "0.05", "--trials", "2"]


@pytest.fixture(scope="module")
def int8_report(digits_bundles, tmp_path_factory):
    out = tmp_path_factory.mktemp("reports") / "int8.json"
    proc = run_cli("bench", digits_bundles["int8"].path, "--out", out, *QUICK)
    assert proc.returncode == 0, proc.stderr
    assert "self-check pass" in proc.stdout
    return out


def test_report_from_the_real_harness(int8_report, digits_bundles):
    r = json.loads(int8_report.read_text())
    assert r["schema"] == "edgekit.report/1" and r["status"] == "ok"
    assert r["self_check"]["passed"] and r["bundle"]["integrity"]["verified"]
    assert r["latency"]["n"] >= 200 and r["latency"]["p50"] <= r["latency"]["p95"] <= r["latency"]["max"]
    assert len(r["latency"]["trial_medians"]) == 2
    assert r["memory"]["peak_rss_mb"] > 0 and r["memory"]["method"]
    assert abs(r["accuracy"]["value"] - digits_bundles["int8"].accuracy) < 1e-9  # same artifact, same data
    assert r["environment"]["runtime"]["name"] == "onnxruntime"
    assert all("pinned_cpus" in t for t in r["trials"])  # x86-avx2 asks for 2 threads


def test_gate_pass_with_markdown_and_junit(int8_report, tmp_path):
    md, junit = tmp_path / "gate.md", tmp_path / "gate.xml"
    proc = run_cli("gate", int8_report, "--markdown", md, "--junit", junit)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "verdict: pass" in proc.stdout
    assert "PASS" in md.read_text()
    suites = ET.parse(junit).getroot()
    cases = suites.findall(".//testcase")
    assert {c.get("name") for c in cases} >= {"latency_p95_ms", "peak_memory_mb", "model_size_mb", "max_accuracy_drop"}


def test_gate_fails_a_broken_budget(int8_report, tmp_path):
    r = json.loads(int8_report.read_text())
    r["target"]["budget"]["latency_p95_ms"] = 0.000001
    r["target"]["budget"]["model_size_mb"] = 0.001
    tight = tmp_path / "tight.json"
    tight.write_text(json.dumps(r))
    proc = run_cli("gate", tight, "--junit", tmp_path / "j.xml")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "verdict: fail" in proc.stdout
    root = ET.parse(tmp_path / "j.xml").getroot()
    failed = {c.get("name") for c in root.iter("testcase") if c.find("failure") is not None}
    assert failed == {"latency_p95_ms", "model_size_mb"}


@pytest.mark.parametrize("content, needle", [
    ("not json at all", "not JSON"),
    ('{"schema": "something/else"}', "not an edgekit report"),
    ('{"schema": "edgekit.report/1", "status": "ok"', "not JSON"),
])
def test_gate_rejects_what_is_not_a_report(tmp_path, content, needle):
    f = tmp_path / "r.json"
    f.write_text(content)
    assert_one_line_error(run_cli("gate", f), "r.json", needle)


def test_bench_refuses_an_altered_bundle(bundle_copy):
    b = bundle_copy()
    data = bytearray((b / "model.onnx").read_bytes())
    data[-10] ^= 0xFF
    (b / "model.onnx").write_bytes(bytes(data))
    proc = run_cli("bench", b, *QUICK)
    assert_one_line_error(proc, "model.onnx sha256 mismatch")
    assert not (b / "report.json").exists()


def test_harness_refuses_an_altered_bundle_on_its_own(bundle_copy):
    """On a device there is no edgekit: the bundle's own harness must refuse too."""
    import subprocess
    import sys
    b = bundle_copy()
    (b / "validation.npz").write_bytes(b"tampered")
    proc = subprocess.run([sys.executable, str(b / "harness" / "run.py"), *QUICK], capture_output=True, text=True)
    assert proc.returncode == 2 and "validation.npz" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_demo_end_to_end(tmp_path):
    proc = run_cli("demo", "--out", tmp_path / "demo")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for name in ("x86-avx2", "x86-avx2-fp32", "x86-vnni", "x86-vnni-fp32"):
        assert name in proc.stdout
        assert (tmp_path / "demo" / "reports" / f"{name}.json").is_file()
    assert "verdict: pass" in proc.stdout
