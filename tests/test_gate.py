"""The gate: budgets judged on synthetic reports whose answers are known by construction."""

from __future__ import annotations

import copy
import json
import math
from fractions import Fraction

import pytest

from edgekit.errors import ConfigError, ReportError
from edgekit.gate import Check, GateResult, gate, quantile_ucb, render_table, ucb_attained, ucb_rank

BUDGET = {"latency_p95_ms": 5.0, "peak_memory_mb": 300.0, "model_size_mb": 1.0,
          "max_accuracy_drop": 0.01, "load_time_ms": 500.0}


def make_report(budget: dict | None = None, samples: list[list[float]] | None = None, **env) -> dict:
    """A valid edgekit.report/1 that passes BUDGET by a wide margin. `samples` replaces the latency
    samples (the summary statistics follow them); keyword arguments override environment keys."""
    if samples is None:
        samples = [[1.0 + 0.001 * i for i in range(300)] for _ in range(3)]
    pooled = sorted(s for trial in samples for s in trial)
    n = len(pooled)

    def rank(p):  # nearest rank, as the harness computes it
        return pooled[max(math.ceil(n * p) - 1, 0)]

    mean = sum(pooled) / n
    std = math.sqrt(sum((x - mean) ** 2 for x in pooled) / n)
    report = {
        "schema": "edgekit.report/1",
        "status": "ok",
        "bundle": {"name": "x86-avx2", "path": "/tmp/x86-avx2", "manifest_sha256": "a" * 64,
                   "model_sha256": "b" * 64, "model_file": "model.onnx", "runtime": "onnxruntime",
                   "precision": "int8", "integrity": {"verified": True, "n_files": 5}},
        "target": {"name": "x86-avx2", "device": "CPU", "runtime": "onnxruntime", "precision": "int8",
                   "threads": 2, "stand_in": "warn",
                   "budget": dict(BUDGET if budget is None else budget)},
        "environment": {"hostname": "dev", "machine": "x86_64", "platform": "Linux", "cpu_model": "Test CPU @ 3GHz",
                        "cpu_count": 2, "cpu_flags": ["avx2", "fma"], "governor": None, "temperature_c": None,
                        "python": "3.11.7", "numpy": "2.4.6",
                        "runtime": {"name": "onnxruntime", "version": "1.32.0",
                                    "providers": ["CPUExecutionProvider"]},
                        "threads": 2, "requested_device": "CPU", "actual_device": "CPU",
                        "stand_in": False, "emulated": False},
        "settings": {"runs": 300, "warmup": 10, "min_seconds": 10.0, "warmup_seconds": 2.0, "trials": 3, "batch": 1},
        "self_check": {"n": 16, "max_abs_diff": 0.0, "atol": 1e-4, "rtol": 1e-3,
                       "top1_agreement_expected": 1.0, "top1_agreement_reference": 1.0, "passed": True},
        "cold_start": {"import_ms": [50.0, 51.0, 49.0], "load_ms": [100.0, 120.0, 110.0],
                       "first_inference_ms": [2.0, 2.1, 2.2]},
        "latency": {"unit": "ms", "n": n, "min": pooled[0], "mean": mean, "std": std, "cv": std / mean,
                    "p50": rank(0.5), "p90": rank(0.9), "p95": rank(0.95), "p99": rank(0.99), "max": pooled[-1],
                    "trial_medians": [sorted(t)[len(t) // 2] for t in samples], "samples_ms": samples},
        "memory": {"method": "VmHWM+clear_refs", "baseline_rss_mb": [100.0] * 3, "load_peak_rss_mb": [150.0] * 3,
                   "inference_peak_rss_mb": [200.0, 210.0, 205.0], "peak_rss_mb": 210.0, "model_share_mb": 12.0,
                   "anon_mb": 150.0, "file_mb": 60.0},
        "model_size_mb": 0.03,
        "accuracy": {"metric": "top1", "n": 360, "value": 0.97, "source_value": 0.975, "drop": 0.005},
    }
    report["environment"].update(env)
    return report


def by_budget(result: GateResult) -> dict[str, Check]:
    return {c.budget: c for c in result.checks}


# ---------------------------------------------------------------- binomial bound

def exact_rank(n: int, q: Fraction = Fraction(19, 20), conf: Fraction = Fraction(19, 20)) -> int:
    """Smallest k with P(Binomial(n, q) <= k-1) >= conf, in exact rational arithmetic."""
    cdf = Fraction(0)
    for k in range(1, n + 1):
        cdf += math.comb(n, k - 1) * q ** (k - 1) * (1 - q) ** (n - k + 1)
        if cdf >= conf:
            return k
    return n


def test_ucb_rank_n100_is_99th_order_statistic():
    # By hand: P(X >= 100) = .95^100 = 0.0059; P(X >= 99) = 0.0059 + 100 * .95^99 * .05 = 0.0371 <= 0.05;
    # P(X >= 98) = 0.118 > 0.05. So k = 99: the 99th smallest of 100 samples.
    tail99 = sum(math.comb(100, j) * 0.95 ** j * 0.05 ** (100 - j) for j in (99, 100))
    tail98 = tail99 + math.comb(100, 98) * 0.95 ** 98 * 0.05 ** 2
    assert tail99 <= 0.05 < tail98
    assert exact_rank(100) == 99
    assert ucb_rank(100) == 99


@pytest.mark.parametrize("n", [1, 20, 58, 59, 60, 100, 101, 300, 900, 1000])
def test_ucb_rank_matches_exact_arithmetic(n):
    assert ucb_rank(n) == exact_rank(n)


def test_ucb_rank_capped_below_59_samples():
    assert not ucb_attained(58) and ucb_attained(59)
    assert ucb_rank(58) == 58 and ucb_rank(59) == 59
    assert ucb_rank(10) == 10


def test_ucb_rank_large_n_is_above_nearest_rank_and_fast():
    n = 200_000
    k = ucb_rank(n)
    assert math.ceil(0.95 * n) < k < n
    # normal approximation: n q + 1.645 sqrt(n q (1-q)) (+1 for the rank), within a couple of ranks
    assert abs(k - (n * 0.95 + 1.645 * math.sqrt(n * 0.95 * 0.05) + 1)) < 3


def test_quantile_ucb_picks_sorted_k_minus_1():
    samples = list(range(100, 0, -1))  # 100..1, unsorted on purpose
    value, k, n = quantile_ucb(samples)
    assert (value, k, n) == (99, 99, 100)


def test_ucb_rank_rejects_nonsense():
    with pytest.raises(ValueError):
        ucb_rank(0)
    with pytest.raises(ValueError):
        ucb_rank(10, q=1.0)


# ---------------------------------------------------------------- verdicts

def test_passing_report_exits_0():
    result = gate([make_report()])
    assert (result.verdict, result.exit_code) == ("pass", 0)
    checks = by_budget(result)
    assert set(checks) == {"self_check", "integrity", *BUDGET}
    assert all(c.status == "pass" for c in result.checks), result.checks
    assert checks["peak_memory_mb"].value == 210.0
    assert checks["load_time_ms"].value == 120.0
    assert checks["model_size_mb"].value == 0.03
    assert checks["max_accuracy_drop"].value == 0.005


def test_gate_reads_files(tmp_path):
    path = tmp_path / "report.json"
    path.write_text(json.dumps(make_report()))
    result = gate([path, str(path)])
    assert result.exit_code == 0 and result.sources == [str(path)] * 2
    assert len(result.reports) == 2 and {c.report for c in result.checks} == {0, 1}


def test_latency_p95_under_budget_but_upper_bound_over_fails():
    # 100 samples: 95 at 1 ms, 5 at 10 ms. Nearest-rank p95 = sorted[94] = 1 ms (under 5 ms), but the
    # 95% upper bound is sorted[98] = 10 ms (over): the budget is not shown to be met.
    samples = [[1.0] * 95 + [10.0] * 5]
    report = make_report(samples=samples)
    assert report["latency"]["p95"] == 1.0
    result = gate([report])
    lat = by_budget(result)["latency_p95_ms"]
    assert (lat.status, lat.value, lat.limit) == ("fail", 10.0, 5.0)
    assert "sorted[99-1] of n=100" in lat.statistic
    assert "p95 = 1 ms is within 5 ms, but its 95% upper bound 10 ms is not" in lat.detail
    assert (result.verdict, result.exit_code) == ("fail", 1)


def test_latency_well_under_budget_passes_with_ucb_value():
    samples = [[1.0] * 96 + [2.0] * 4]  # sorted[98] = 2.0 ms <= 5 ms
    lat = by_budget(gate([make_report(samples=samples)]))["latency_p95_ms"]
    assert (lat.status, lat.value) == ("pass", 2.0)


def test_latency_pools_trials():
    # Each trial alone is clean; pooled, the slow tail of one trial decides the bound.
    samples = [[1.0] * 100, [1.0] * 100, [1.0] * 80 + [9.0] * 20]
    lat = by_budget(gate([make_report(samples=samples)]))["latency_p95_ms"]
    assert lat.status == "fail" and lat.value == 9.0 and "n=300" in lat.statistic


def test_latency_exactly_at_budget_tolerates_float_noise():
    limit = 0.1 + 0.2  # 0.30000000000000004
    report = make_report(budget={"latency_p95_ms": 0.3}, samples=[[0.1 + 0.2] * 300])
    assert by_budget(gate([report]))["latency_p95_ms"].status == "pass"
    report = make_report(budget={"latency_p95_ms": limit}, samples=[[0.3] * 300])
    assert by_budget(gate([report]))["latency_p95_ms"].status == "pass"
    report = make_report(budget={"latency_p95_ms": 0.3}, samples=[[0.3001] * 300])
    assert by_budget(gate([report]))["latency_p95_ms"].status == "fail"


def test_latency_without_samples_uses_p95_and_says_so():
    report = make_report()
    del report["latency"]["samples_ms"]
    lat = by_budget(gate([report]))["latency_p95_ms"]
    assert lat.status == "pass" and lat.value == report["latency"]["p95"]
    assert "point estimate" in lat.detail and "samples" in lat.detail


def test_few_samples_use_the_max_and_say_so():
    lat = by_budget(gate([make_report(samples=[[1.0] * 19 + [4.0]])]))["latency_p95_ms"]
    assert lat.status == "pass" and lat.value == 4.0 and "not a 95% bound" in lat.detail


def test_memory_over_budget_fails():
    report = make_report()
    report["memory"]["peak_rss_mb"] = 300.5
    result = gate([report])
    mem = by_budget(result)["peak_memory_mb"]
    assert (mem.status, mem.value, mem.limit) == ("fail", 300.5, 300.0)
    assert result.exit_code == 1


def test_model_size_and_load_time_over_budget_fail():
    report = make_report()
    report["model_size_mb"] = 1.5
    report["cold_start"]["load_ms"] = [100.0, 700.0, 110.0]  # max over trials decides
    checks = by_budget(gate([report]))
    assert checks["model_size_mb"].status == "fail"
    assert checks["load_time_ms"].status == "fail" and checks["load_time_ms"].value == 700.0


def test_accuracy_drop_over_budget_fails():
    report = make_report()
    report["accuracy"].update(value=0.95, drop=0.025)
    result = gate([report])
    acc = by_budget(result)["max_accuracy_drop"]
    assert (acc.status, acc.value) == ("fail", 0.025) and result.exit_code == 1


def test_accuracy_drop_at_limit_with_float_noise_passes():
    report = make_report()
    report["accuracy"].update(value=0.965, source_value=0.975, drop=0.975 - 0.965)  # 0.010000000000000009
    assert by_budget(gate([report]))["max_accuracy_drop"].status == "pass"


def test_accuracy_missing_is_skipped_with_reason():
    report = make_report()
    del report["accuracy"]
    acc = by_budget(gate([report]))["max_accuracy_drop"]
    assert acc.status == "skip" and "no accuracy" in acc.detail
    report["accuracy"] = None
    assert by_budget(gate([report]))["max_accuracy_drop"].status == "skip"


def test_budget_absent_or_null_is_not_checked():
    report = make_report(budget={"model_size_mb": 1.0, "latency_p95_ms": None})
    report["memory"]["peak_rss_mb"] = 10_000.0  # would fail a memory budget, but none is set
    result = gate([report])
    assert set(by_budget(result)) == {"self_check", "integrity", "model_size_mb"}
    assert result.exit_code == 0
    report["target"].pop("budget")
    assert set(by_budget(gate([report]))) == {"self_check", "integrity"}


def test_emulated_latency_is_skipped_never_gated():
    report = make_report(samples=[[50.0] * 300], emulated=True)  # far over 5 ms
    result = gate([report])
    lat = by_budget(result)["latency_p95_ms"]
    assert lat.status == "skip" and lat.detail == "emulated: latency never gates a budget"
    assert result.exit_code == 0


@pytest.mark.parametrize("mode, verdict", [("warn", "pass"), ("fail", "fail"), (None, "pass")])
def test_stand_in_device(mode, verdict):
    report = make_report(stand_in=True, requested_device="NPU", actual_device="CPU")
    report["target"]["device"] = "NPU"
    if mode is None:
        del report["target"]["stand_in"]  # default: warn
    else:
        report["target"]["stand_in"] = mode
    result = gate([report])
    checks = by_budget(result)
    expected = mode or "warn"
    for key in ("latency_p95_ms", "peak_memory_mb", "load_time_ms"):
        assert checks[key].status == expected
        assert "measured on stand-in device CPU, not NPU (requested device absent)" in checks[key].detail
    for key in ("model_size_mb", "max_accuracy_drop", "self_check", "integrity"):
        assert checks[key].status == "pass"
    assert result.verdict == verdict and result.exit_code == (verdict == "fail")


def test_stand_in_keeps_real_failures():
    report = make_report(stand_in=True, actual_device="CPU", requested_device="NPU")
    report["memory"]["peak_rss_mb"] = 999.0
    assert by_budget(gate([report]))["peak_memory_mb"].status == "fail"


def test_nothing_timed_fails_set_budgets_without_crashing():
    # The harness stops before timing when the self-check fails: statistics are null, lists empty.
    report = make_report()
    report["self_check"]["passed"] = False
    report["latency"] = {"unit": "ms", "n": 0, "min": None, "mean": None, "std": None, "cv": None,
                         "p50": None, "p90": None, "p95": None, "p99": None, "max": None,
                         "trial_medians": [], "samples_ms": []}
    report["cold_start"]["load_ms"] = []
    report["memory"]["peak_rss_mb"] = None
    result = gate([report])
    checks = by_budget(result)
    assert checks["self_check"].status == "fail"
    for key in ("latency_p95_ms", "peak_memory_mb", "load_time_ms"):
        assert checks[key].status == "fail" and checks[key].value is None, key
    assert "not measured" in checks["latency_p95_ms"].detail
    assert result.exit_code == 1


def test_self_check_failed_fails():
    report = make_report()
    report["self_check"].update(passed=False, max_abs_diff=0.5)
    result = gate([report])
    sc = by_budget(result)["self_check"]
    assert sc.status == "fail" and "0.5" in sc.detail and result.exit_code == 1


def test_self_check_and_integrity_checked_without_budgets():
    report = make_report(budget={})
    report["bundle"]["integrity"]["verified"] = False
    result = gate([report])
    assert by_budget(result)["integrity"].status == "fail" and result.exit_code == 1


def test_harness_status_not_ok_fails():
    report = make_report()
    report["status"] = "error"
    result = gate([report])
    assert by_budget(result)["status"].status == "fail" and result.exit_code == 1


def test_one_failing_report_fails_the_release():
    bad = make_report()
    bad["bundle"]["name"] = "x86-avx2-fp32"
    bad["model_size_mb"] = 5.0
    result = gate([make_report(), bad])
    assert result.exit_code == 1
    assert [c.bundle for c in result.checks if c.status == "fail"] == ["x86-avx2-fp32"]


# ---------------------------------------------------------------- bad input

@pytest.mark.parametrize("budget, words", [
    ({"latency_p95_ms": -1}, "target.budget.latency_p95_ms = -1"),
    ({"latency_p95_ms": "fast"}, "target.budget.latency_p95_ms = 'fast'"),
    ({"peak_memory_mb": True}, "target.budget.peak_memory_mb = True"),
    ({"latency_p99_ms": 3.0}, "unknown key 'target.budget.latency_p99_ms'"),
])
def test_bad_budget_is_config_error(budget, words):
    with pytest.raises(ConfigError) as info:
        gate([make_report(budget=budget)])
    msg = str(info.value)
    assert words in msg and "report[0]" in msg and "\n" not in msg


def test_bad_stand_in_mode_is_config_error(tmp_path):
    report = make_report()
    report["target"]["stand_in"] = "ignore"
    path = tmp_path / "r.json"
    path.write_text(json.dumps(report))
    with pytest.raises(ConfigError, match=r"r\.json: target\.stand_in = 'ignore'; expected one of warn, fail"):
        gate([path])


def test_not_a_report_file_is_report_error(tmp_path):
    path = tmp_path / "report.json"
    path.write_text("<html>not json</html>")
    with pytest.raises(ReportError, match="report.json: not JSON"):
        gate([path])


def test_no_reports_is_an_error():
    with pytest.raises(ConfigError):
        gate([])


def test_gate_does_not_mutate_input():
    report = make_report()
    before = copy.deepcopy(report)
    gate([report])
    assert report == before


def test_render_table_has_a_row_per_check():
    pytest.importorskip("rich")
    from rich.console import Console

    report = make_report()
    report["memory"]["peak_rss_mb"] = 400.0
    result = gate([report])
    table = render_table(result)
    assert table.row_count == len(result.checks)
    console = Console(width=200, record=True, color_system=None)
    console.print(table)
    text = console.export_text()
    assert "FAIL" in text and "peak_memory_mb" in text and "400 MiB" in text


@pytest.mark.parametrize("target_change, env, needle", [
    ({"isa": ["avx2", "fma", "avx512_vnni"], "arch": "x86_64"}, {}, "without the target's avx512_vnni"),
    ({"isa": ["neon"], "arch": "aarch64"}, {}, "measured on x86_64, not the target's aarch64"),
])
def test_off_target_hardware_never_passes_silently(target_change, env, needle):
    report = make_report(**env)
    report["target"].update(target_change)
    result = gate([report])
    hw = [c for c in result.checks if c.budget == "hardware"]
    assert hw and hw[0].status == "warn" and needle in hw[0].detail
    lat = next(c for c in result.checks if c.budget == "latency_p95_ms")
    assert lat.status == "warn" and needle in lat.detail
    report["target"]["stand_in"] = "fail"
    assert gate([report]).exit_code == 1


def test_matching_hardware_has_no_hardware_row():
    report = make_report()
    report["target"].update({"isa": ["avx2"], "arch": "x86_64"})
    assert not [c for c in gate([report]).checks if c.budget == "hardware"]


def test_a_profile_can_require_the_robustness_suite():
    report = make_report()
    assert not [c for c in gate([report]).checks if c.budget == "robustness"]  # not required: not checked
    report["target"]["require_robustness"] = True
    missing = next(c for c in gate([report]).checks if c.budget == "robustness")
    assert missing.status == "fail" and "no robustness section" in missing.detail
    report["robustness"] = {"cases": [{"name": "zeros", "status": "ok"}, {"name": "nan", "status": "crashed"}],
                            "crashed": ["nan"], "passed": False}
    failed = next(c for c in gate([report]).checks if c.budget == "robustness")
    assert failed.status == "fail" and "nan" in failed.detail
    report["robustness"]["passed"] = True
    assert gate([report]).exit_code == 0


def test_emulated_load_time_is_not_judged():
    report = make_report(emulated=True)
    report["cold_start"]["load_ms"] = [1e9]
    load = next(c for c in gate([report]).checks if c.budget == "load_time_ms")
    assert load.status == "skip" and "emulated" in load.detail
