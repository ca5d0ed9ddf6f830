"""edgekit inspect: what the manifest knows, version = content hash + label, attached reports."""

from __future__ import annotations

import json

import pytest

from edgekit.errors import BundleError
from edgekit.trust.inspect import content_hash, inspect
from ektest import assert_one_line_error, run_cli


def test_inspect_real_bundle(digits_bundles):
    info = inspect(digits_bundles["int8"].path)
    assert info["bundle"]["name"] == "x86-avx2"
    assert info["license"] == "MIT" and info["provenance"]["provenance"] == "tests"
    assert info["origin"]["kind"] == "pt2" and len(info["origin"]["sha256"]) == 64
    assert info["model"]["precision"] == "int8" and info["model"]["runtime"] == "onnxruntime"
    assert [s["stage"] for s in info["stages"]][:2] == ["export", "quantize"]
    assert {p["stage"] for p in info["parity"]} == {"export", "quantize"}
    assert info["budgets"]["latency_p95_ms"] > 0 and None not in info["budgets"].values()
    assert set(info["data"]) == {"calibration", "tuning", "validation"}  # validation: held out
    assert info["versions"]["onnxruntime"]
    assert info["integrity"]["verified"] and not info["signature"]["present"]
    assert info["version"]["id"].startswith("x86-avx2@" + info["version"]["content_sha256"][:12])
    fp32 = inspect(digits_bundles["fp32"].path)
    assert [s["stage"] for s in fp32["stages"]][:1] == ["export"] and fp32["model"]["precision"] == "fp32"


def test_version_is_content_hash_plus_label(fake_bundle):
    before = inspect(fake_bundle)
    assert before["version"]["label"] == "v1" and before["version"]["id"].endswith("(v1)")
    m = fake_bundle / "manifest.json"
    m.write_text(m.read_text().replace('"v1"', '"v2"'))
    after = inspect(fake_bundle)
    assert after["version"]["content_sha256"] == before["version"]["content_sha256"]   # same files
    assert after["version"]["manifest_sha256"] != before["version"]["manifest_sha256"]
    assert after["version"]["label"] == "v2"
    (fake_bundle / "model.onnx").write_bytes(b"other")
    altered = inspect(fake_bundle)
    assert not altered["integrity"]["verified"] and "model.onnx" in altered["integrity"]["detail"]
    assert content_hash(json.loads(m.read_text())) == altered["version"]["content_sha256"]


def test_attached_reports(fake_bundle):
    sha = inspect(fake_bundle)["version"]["manifest_sha256"]
    report = {"schema": "edgekit.report/1", "status": "ok", "bundle": {"manifest_sha256": sha},
              "latency": {"p95": 1.5, "trial_medians": [1, 1, 1]}, "memory": {"peak_rss_mb": 99.0},
              "environment": {"cpu_model": "Test CPU"}, "self_check": {"passed": True}}
    (fake_bundle / "report.json").write_text(json.dumps(report))
    report["bundle"]["manifest_sha256"] = "0" * 64
    (fake_bundle / "report-old.json").write_text(json.dumps(report))
    (fake_bundle / "report-bad.json").write_text("{trunc")
    reps = {r["file"]: r for r in inspect(fake_bundle)["reports"]}
    assert reps["report.json"]["matches_bundle"] and reps["report.json"]["p95_ms"] == 1.5
    assert not reps["report-old.json"]["matches_bundle"]
    assert not reps["report-bad.json"]["valid"]


def test_not_a_bundle(tmp_path):
    with pytest.raises(BundleError, match="not an edgekit bundle"):
        inspect(tmp_path)


def test_inspect_cli(fake_bundle, tmp_path):
    proc = run_cli("inspect", fake_bundle)
    assert proc.returncode == 0, proc.stderr
    for needle in ("fake@", "licence: MIT", "stages", "budgets", "attached reports"):
        assert needle in proc.stdout, needle
    proc = run_cli("inspect", fake_bundle, "--json")
    assert json.loads(proc.stdout)["license"] == "MIT"
    assert_one_line_error(run_cli("inspect", tmp_path / "nothing"), "not an edgekit bundle")
