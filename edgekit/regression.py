"""Regressions against a baseline report (HARNESS_SPEC "Deciding"): per-trial medians, at least
MIN_TRIALS per side, a one-sided Mann-Whitney U test and a bootstrap CI of the ratio of medians for
latency; tolerances for memory and size. `edgekit.gate.gate(..., baseline=...)` adds these checks
(imports flow gate -> regression -> checks, never back).
scipy is imported inside the functions that need it."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .errors import ReportError
from .checks import Check, fmt as _fmt, within as _within

MIN_TRIALS = 6                  # per side (HARNESS_SPEC "Deciding")
MW_ALPHA = 0.01                 # one-sided Mann-Whitney U
LATENCY_MIN_TOLERANCE = 0.03    # threshold = 1 + max(3%, CV_FACTOR x CV)
CV_FACTOR = 2.0
BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_CONFIDENCE = 0.95
BOOTSTRAP_SEED = 20240601       # fixed: the same pair of reports always gives the same verdict
MEMORY_TOLERANCE = (0.05, 4.0)  # (relative, MiB): fail above baseline + max(5%, 4 MiB)
SIZE_TOLERANCE = (0.05, 1 / 16)  # (relative, MiB): fail above baseline + max(5%, 64 KiB)
REGRESSION_CHECKS = ("latency_regression", "memory_regression", "size_regression")


def _identity(report: dict[str, Any]) -> tuple[str, str]:
    return report["target"].get("name") or "?", report["bundle"]["name"]


def trial_medians(report: dict[str, Any]) -> list[float]:
    """Per-trial median latencies (ms): latency.trial_medians as the harness computed them, else
    the nearest-rank median of each trial's samples_ms. Trials without a figure are left out."""
    lat = report.get("latency") or {}
    meds = [float(m) for m in lat.get("trial_medians") or [] if m is not None]
    if meds:
        return meds
    out = []
    for trial in lat.get("samples_ms") or []:
        if trial:
            ordered = sorted(trial)
            out.append(float(ordered[max(math.ceil(len(ordered) * 0.5) - 1, 0)]))
    return out


def _cv(values: list[float]) -> float:
    if len(values) < 2:
        return 0.0
    mean = sum(values) / len(values)
    if mean <= 0:
        return 0.0
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) / mean


def _device(report: dict[str, Any]) -> str:
    env = report["environment"]
    return f"{env.get('cpu_model') or '?'} ({env.get('machine') or '?'})"


@dataclass
class LatencyComparison:
    """The numbers behind a latency_regression check (also drawn by the HTML report)."""

    candidate: list[float]
    baseline: list[float]
    ratio: float | None = None          # median(candidate) / median(baseline)
    ci: tuple[float, float] | None = None
    p_value: float | None = None
    threshold: float | None = None
    cv: float | None = None


def compare_latency(candidate: list[float], baseline: list[float], *,
                    resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> LatencyComparison:
    """Mann-Whitney U (one-sided: candidate slower) and the percentile bootstrap CI of the ratio of
    medians, resampling each side independently. Needs >= 2 values per side."""
    import numpy as np
    from scipy.stats import mannwhitneyu

    cand, base = np.asarray(candidate, dtype=float), np.asarray(baseline, dtype=float)
    p = float(mannwhitneyu(cand, base, alternative="greater").pvalue)
    rng = np.random.default_rng(seed)
    mc = np.median(cand[rng.integers(0, cand.size, (resamples, cand.size))], axis=1)
    mb = np.median(base[rng.integers(0, base.size, (resamples, base.size))], axis=1)
    ratios = mc / mb
    tail = (1.0 - BOOTSTRAP_CONFIDENCE) / 2 * 100
    lo, hi = (float(x) for x in np.percentile(ratios, [tail, 100 - tail]))
    cv = float(max(_cv(cand.tolist()), _cv(base.tolist())))
    return LatencyComparison(list(candidate), list(baseline), float(np.median(cand) / np.median(base)),
                             (lo, hi), p, 1.0 + max(LATENCY_MIN_TOLERANCE, CV_FACTOR * cv), cv)


RERUN = ("rerun `edgekit bench` (or harness/run.py) with --trials {n} or more for both the baseline and "
         "this bundle, interleaved, on the same quiet device")


def _latency_regression(report: dict[str, Any], base: dict[str, Any]) -> tuple[Any, Any, str, str, str]:
    """(limit, value, statistic, status, detail)"""
    stat = "median ratio vs baseline (per-trial medians)"
    if report["environment"]["emulated"] or base["environment"]["emulated"]:
        return None, None, stat, "skip", "emulated: latency is never compared"
    cand, ref = trial_medians(report), trial_medians(base)
    if not cand or not ref:
        which = "this report" if not cand else "the baseline"
        return None, None, stat, "inconclusive", f"{which} has no latency figures; {RERUN.format(n=MIN_TRIALS)}"
    if _device(report) != _device(base):
        return None, None, stat, "inconclusive", (
            f"baseline measured on {_device(base)}, this report on {_device(report)}: latencies from "
            f"different devices do not compare; {RERUN.format(n=MIN_TRIALS)}")
    if len(cand) < MIN_TRIALS or len(ref) < MIN_TRIALS:
        return None, None, stat, "inconclusive", (
            f"{len(cand)} trial(s) in this report, {len(ref)} in the baseline; a regression test needs "
            f">= {MIN_TRIALS} per side: {RERUN.format(n=MIN_TRIALS)}")
    c = compare_latency(cand, ref)
    lo, hi = c.ci
    stat = (f"median ratio, 95% bootstrap CI [{lo:.4f}, {hi:.4f}], Mann-Whitney p = {c.p_value:.3g}, "
            f"{len(cand)} vs {len(ref)} trials")
    tol = f"threshold {c.threshold:.4f} = 1 + max({LATENCY_MIN_TOLERANCE:.0%}, {CV_FACTOR:g} x CV {c.cv:.3f})"
    if c.p_value < MW_ALPHA and lo > c.threshold:
        return c.threshold, c.ratio, stat, "fail", (
            f"regression: {c.ratio - 1:+.1%} median latency; the CI lies above the {tol}, p < {MW_ALPHA}")
    if hi <= c.threshold:
        return c.threshold, c.ratio, stat, "pass", f"no regression beyond the {tol}"
    why = ("the CI straddles the " + tol) if lo <= c.threshold else (
        f"the CI lies above the {tol} but p = {c.p_value:.3g} >= {MW_ALPHA}")
    more = max(2 * max(len(cand), len(ref)), 12)
    return c.threshold, c.ratio, stat, "inconclusive", f"{why}; {RERUN.format(n=more)}"


def _amount_regression(value: Any, base_value: Any, tolerance: tuple[float, float],
                       what: str, unit: str) -> tuple[Any, Any, str, str, str]:
    rel, absolute = tolerance
    if value is None or base_value is None:
        which = "this report" if value is None else "the baseline"
        return None, None, what, "skip", f"{which} has no {what} figure"
    base_value, value = float(base_value), float(value)
    limit = base_value + max(rel * base_value, absolute)
    stat = f"{what} vs baseline {_fmt(base_value)} {unit} (+max({rel:.0%}, {_fmt(absolute)} {unit}))"
    if _within(value, limit):
        return limit, value, stat, "pass", ""
    return limit, value, stat, "fail", (f"regression: {what} {_fmt(value)} {unit} is "
                                        f"{value - base_value:+.4g} {unit} over the baseline's {_fmt(base_value)} {unit}")


def regression_checks(report: dict[str, Any], base: dict[str, Any], index: int) -> list[Check]:
    target, bundle = _identity(report)
    out = []
    for budget, (limit, value, stat, status, detail) in (
            ("latency_regression", _latency_regression(report, base)),
            ("memory_regression", _amount_regression((report.get("memory") or {}).get("peak_rss_mb"),
                                                     (base.get("memory") or {}).get("peak_rss_mb"),
                                                     MEMORY_TOLERANCE, "peak RSS", "MiB")),
            ("size_regression", _amount_regression(report.get("model_size_mb"), base.get("model_size_mb"),
                                                   SIZE_TOLERANCE, "model size", "MiB"))):
        out.append(Check(target, bundle, budget, limit, value, stat, status, detail, index))
    return out


def match_baselines(reports: list[dict[str, Any]], names: list[str], baselines: list[dict[str, Any]],
                    base_names: list[str]) -> list[int]:
    """For each report, the index of its baseline: same target name and bundle name, exactly one.
    ReportError for a baseline of another target or bundle, a report without one, or duplicates."""
    by_key: dict[tuple[str, str], int] = {}
    for j, b in enumerate(baselines):
        key = _identity(b)
        if key in by_key:
            raise ReportError(f"{base_names[j]}: a second baseline for target '{key[0]}' bundle '{key[1]}' "
                              f"(first: {base_names[by_key[key]]}); give one baseline per bundle")
        by_key[key] = j
    wanted = {_identity(r): i for i, r in enumerate(reports)}
    for key, j in by_key.items():
        if key not in wanted:
            have = ", ".join(f"target '{t}' bundle '{b}'" for t, b in wanted)
            raise ReportError(f"{base_names[j]}: baseline is for target '{key[0]}' bundle '{key[1]}', but the "
                              f"report(s) gated are for {have}: a baseline must come from the same target and bundle")
    out = []
    for i, r in enumerate(reports):
        key = _identity(r)
        if key not in by_key:
            raise ReportError(f"{names[i]}: no baseline for target '{key[0]}' bundle '{key[1]}' among "
                              f"{', '.join(base_names)}; give one baseline per report gated")
        out.append(by_key[key])
    return out
