"""Unit tests of the harness's building blocks (edgekit/harness/_ek_*.py), imported the way run.py
imports them (the harness folder on sys.path), plus the crash path of the real CLI (exit 3)."""

from __future__ import annotations

import ast
import json
import math
import sys

import numpy as np
import pytest


@pytest.fixture(scope="module")
def stats(harness_module):
    return harness_module("_ek_stats")


# ------------------------------------------------------------------ statistics

def test_nearest_rank_known_values(stats):
    ten = list(range(1, 11))
    assert stats.nearest_rank(ten, 0.5) == 5
    assert stats.nearest_rank(ten, 0.9) == 9
    assert stats.nearest_rank(ten, 0.95) == 10
    assert stats.nearest_rank(ten, 0.99) == 10
    assert stats.nearest_rank(ten, 1.0) == 10
    assert stats.nearest_rank(ten, 0.01) == 1
    hundred = list(range(1, 101))
    assert [stats.nearest_rank(hundred, p) for p in (0.5, 0.9, 0.95, 0.99)] == [50, 90, 95, 99]
    # 25 * 0.28 is 7.000000000000001 in binary floating point; the 7th value, not the 8th.
    assert stats.nearest_rank(list(range(1, 26)), 0.28) == 7
    assert stats.nearest_rank([4.2], 0.99) == 4.2
    with pytest.raises(ValueError):
        stats.nearest_rank([], 0.5)
    with pytest.raises(ValueError):
        stats.nearest_rank([1, 2], 0.0)


@pytest.mark.parametrize("n", [1, 2, 7, 20, 99, 300, 1001])
def test_nearest_rank_matches_inverted_cdf(stats, n):
    # numpy's "inverted_cdf" method is the nearest-rank definition (Hyndman & Fan type 1).
    values = np.sort(np.random.default_rng(n).exponential(size=n))
    for p in (0.5, 0.9, 0.95, 0.99):
        want = float(np.percentile(values, 100 * p, method="inverted_cdf"))
        assert stats.nearest_rank(values.tolist(), p) == want


def test_summarize_and_latency_section(stats):
    a, b = [1.0, 2.0, 3.0, 4.0], [10.0, 20.0, 30.0]
    sec = stats.latency_section([a, b])
    pooled = np.array(a + b)
    assert sec["n"] == 7 and sec["min"] == 1.0 and sec["max"] == 30.0
    assert sec["mean"] == pytest.approx(pooled.mean())
    assert sec["std"] == pytest.approx(pooled.std(ddof=1), abs=1e-6)
    assert sec["cv"] == pytest.approx(pooled.std(ddof=1) / pooled.mean(), abs=1e-6)
    assert sec["p50"] == 4.0 and sec["p90"] == 30.0
    assert sec["trial_medians"] == [2.0, 20.0]
    assert sec["samples_ms"] == [a, b]
    assert stats.summarize([])["p95"] is None
    assert stats.ns_to_ms([123456, 1]) == [0.1235, 0.0]


def test_self_check_rules(stats):
    want = np.array([[0.0, 1.0, 0.5]])
    close = stats.SelfCheck(atol=1e-4, rtol=1e-3, min_top1=1.0)
    close.add({"y": want + 1e-6}, {"y": want}, {"y": want}, "y")
    r = close.result()
    assert r["passed"] and r["allclose"] and r["max_abs_diff"] == pytest.approx(1e-6)
    # Far from expected but the same top-1 class: passes on agreement (an int8 artifact's case).
    agree = stats.SelfCheck(atol=1e-4, rtol=1e-3, min_top1=1.0)
    agree.add({"y": want * 3}, {"y": want}, {}, "y")
    r = agree.result()
    assert r["passed"] and not r["allclose"] and r["top1_agreement_expected"] == 1.0
    assert r["top1_agreement_reference"] is None
    wrong = stats.SelfCheck(atol=1e-4, rtol=1e-3, min_top1=1.0)
    wrong.add({"y": -want}, {"y": want}, {"y": want}, "y")
    wrong.add({"y": np.full((1, 3), np.nan)}, {"y": want}, {"y": want}, "y")
    r = wrong.result()
    assert not r["passed"] and r["top1_agreement_expected"] == 0.0 and math.isinf(r["max_abs_diff"])


def test_accuracy_section(stats):
    acc = stats.accuracy_section([1, 2, 3, 0], np.array([1, 2, 0, 0]), 0.8)
    assert acc == {"metric": "top1", "n": 4, "value": 0.75, "source_value": 0.8, "drop": 0.05}
    assert stats.accuracy_section([1], np.array([1]), None)["drop"] is None


# ------------------------------------------------------------------ names, memory, JSON

def test_loose_name_matching(harness_module):
    rt = harness_module("_ek_runtime")
    tfl = ["serving_default_attention_mask:0", "serving_default_input_ids:0"]
    assert rt.match_names(["input_ids", "attention_mask"], tfl) == {"input_ids": 1,
                                                                    "attention_mask": 0}
    # Nothing in common: fall back to order.
    assert rt.match_names(["x"], ["serving_default_args_0"]) == {"x": 0}
    assert rt.match_names(["a", "b"], ["StatefulPartitionedCall:0", "StatefulPartitionedCall:1"]) \
        == {"a": 0, "b": 1}
    assert rt.match_names(["logits"], ["other", "logits"]) == {"logits": 1}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="VmHWM is Linux /proc")
def test_memory_probe_resets_high_water_mark(harness_module):
    probe = harness_module("_ek_probe").MemoryProbe()
    assert probe.method in ("VmHWM+clear_refs", "VmHWM")
    big = np.ones(64 * 2**20 // 8)  # 64 MiB, touched
    del big
    high = probe.peak_mib()
    assert high >= probe.current_mib() + 50
    if probe.can_reset:
        probe.reset_peak()
        assert probe.peak_mib() < high - 50


def test_report_json_is_strict(harness_module, tmp_path):
    bundle = harness_module("_ek_bundle")
    out = tmp_path / "r.json"
    bundle.write_json_atomic(out, {"a": float("nan"), "b": [np.float32(1.5), float("inf")],
                                   "c": np.int64(3)})
    assert json.loads(out.read_text()) == {"a": None, "b": [1.5, None], "c": 3}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # no temporary left behind


def test_harness_parses_as_python39(hx):
    # README.txt promises Python >= 3.9 on the device.
    for path in sorted(hx.HARNESS_SRC.glob("*.py")):
        ast.parse(path.read_text(), filename=str(path), feature_version=(3, 9))


# ------------------------------------------------------------------ a crashing trial: exit 3

def test_crashed_trial_exits_3(onnx_bundle, copy_bundle, hx):
    bundle = copy_bundle(onnx_bundle)
    trial = bundle / "harness" / "_ek_trial.py"
    # Sabotage the bundle's copy of the trial body only: the parent (verify, self-check) is intact
    # and the child dies the way the OOM killer would end it.
    trial.write_text(trial.read_text().replace(
        '    """Measure one cold start and one steady-state series in this (fresh) process."""\n',
        '    """Measure one cold start and one steady-state series in this (fresh) process."""\n'
        "    os.kill(os.getpid(), signal.SIGKILL)\n", 1))
    hx.rehash(bundle)
    proc = hx.run(bundle, *hx.FAST)
    assert proc.returncode == 3, proc.stderr
    err = proc.stderr.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1
    assert err.startswith("harness: error: trial 1/2 crashed (killed by SIGKILL")
    report = json.loads((bundle / "report.json").read_text())
    assert report["status"] == "error" and "trial 1/2 crashed" in report["error"]
    assert report["latency"] is None and report["self_check"]["passed"] is True
