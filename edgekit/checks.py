"""What a gate decision is made of: `Check` (one judged rule), `GateResult`, and the helpers every
producer and renderer of checks shares (float-tolerant comparison, number formatting, the binomial
upper bound of a quantile, the verdict rule).

This module sits below everything that makes or shows checks -- edgekit/gate.py (budgets),
edgekit/regression.py (baselines), edgekit/trust/policy.py (licence, provenance) and edgekit/report/*
(Markdown, JUnit, HTML) -- and imports none of them, so imports between those modules only point down
(issue 11: gate, regression and policy used to import each other around `Check`). Stdlib only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

STATUSES = ("pass", "fail", "warn", "skip", "inconclusive")
VERDICTS = ("pass", "fail", "inconclusive")
UNITS = {"latency_p95_ms": "ms", "peak_memory_mb": "MiB", "model_size_mb": "MiB",
         "load_time_ms": "ms", "max_accuracy_drop": "", "max_class_accuracy_drop": "",
         "latency_regression": "x", "memory_regression": "MiB", "size_regression": "MiB",
         "min_cosine_similarity": "", "min_recall_at_10": ""}
# Comparisons allow float noise: a value within 1e-9 (relative) of its limit meets it.
REL_TOL = 1e-9
ABS_TOL = 1e-12


@dataclass
class Check:
    """One judged rule for one report. limit/value are None where they do not apply."""

    target: str
    bundle: str
    budget: str                     # a budget key, or "self_check" / "integrity" / "status"
    limit: float | None
    value: float | bool | str | None
    statistic: str                  # what `value` is, e.g. "p95 95% UCB (k=99 of n=100)"
    status: str                     # pass | fail | warn | skip | inconclusive
    detail: str = ""
    report: int = 0                 # index into GateResult.reports

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"Check.status = {self.status!r}; expected one of {', '.join(STATUSES)}")

    @property
    def unit(self) -> str:
        return UNITS.get(self.budget, "")


@dataclass
class GateResult:
    reports: list[dict[str, Any]]
    checks: list[Check]
    verdict: str                    # "pass" | "fail" | "inconclusive"
    exit_code: int                  # 0 | 1 | 3
    sources: list[str] = field(default_factory=list)   # file name (or "report[i]") per report
    baselines: list[dict[str, Any] | None] = field(default_factory=list)  # matched baseline per report
    baseline_sources: list[str | None] = field(default_factory=list)

    def checks_for(self, index: int) -> list[Check]:
        return [c for c in self.checks if c.report == index]

    def counts(self) -> dict[str, int]:
        return {s: sum(c.status == s for c in self.checks) for s in STATUSES}


def verdict_of(checks: list[Check]) -> str:
    """"fail" if any check failed, else "inconclusive" if any is, else "pass"."""
    if any(c.status == "fail" for c in checks):
        return "fail"
    if any(c.status == "inconclusive" for c in checks):
        return "inconclusive"
    return "pass"


def within(value: float, limit: float) -> bool:
    """value <= limit, allowing float noise (REL_TOL / ABS_TOL)."""
    return value <= limit or math.isclose(value, limit, rel_tol=REL_TOL, abs_tol=ABS_TOL)


def fmt(x: float) -> str:
    return f"{x:.4g}"


def format_value(check: Check, which: str = "value") -> str:
    """limit or value as shown in tables: number with unit, yes/no, or "-"."""
    x = getattr(check, which)
    if x is None:
        return "-"
    if isinstance(x, bool):
        return {"self_check": ("passed", "failed"), "integrity": ("verified", "not verified")}.get(
            check.budget, ("yes", "no"))[0 if x else 1]
    if isinstance(x, (int, float)):
        return f"{fmt(x)} {check.unit}".rstrip()
    return str(x)


# ---------------------------------------------------------------- the p95 upper bound

def ucb_rank(n: int, q: float = 0.95, confidence: float = 0.95) -> int:
    """1-based rank k of the order statistic that is a one-sided `confidence` upper bound of the
    q-quantile of n i.i.d. samples: the smallest k with P(Binomial(n, q) <= k-1) >= confidence,
    i.e. P(Binomial(n, q) >= k) <= 1 - confidence. Capped at n when even the maximum falls short
    (q**n > 1 - confidence; for q = confidence = 0.95 that is n < 59): see `ucb_attained`."""
    if n < 1:
        raise ValueError(f"n = {n}: need at least one sample")
    if not (0.0 < q < 1.0 and 0.0 < confidence < 1.0):
        raise ValueError(f"q = {q}, confidence = {confidence}: both must lie in (0, 1)")
    alpha = 1.0 - confidence
    lq, lnq, lgn = math.log(q), math.log1p(-q), math.lgamma(n + 1)
    tail = 0.0  # P(X >= j), summed from j = n downwards (small terms first)
    for j in range(n, -1, -1):
        tail += math.exp(lgn - math.lgamma(j + 1) - math.lgamma(n - j + 1) + j * lq + (n - j) * lnq)
        if tail > alpha:
            return min(j + 1, n)
    return 1  # unreachable: P(X >= 0) = 1 > alpha


def ucb_attained(n: int, q: float = 0.95, confidence: float = 0.95) -> bool:
    """Whether some order statistic of n samples reaches `confidence` (else `ucb_rank` is capped)."""
    return n >= 1 and q ** n <= 1.0 - confidence


def quantile_ucb(samples: list[float], q: float = 0.95, confidence: float = 0.95) -> tuple[float, int, int]:
    """(bound, k, n): the `confidence` upper bound of the q-quantile of `samples` = sorted[k-1]."""
    ordered = sorted(samples)
    k = ucb_rank(len(ordered), q, confidence)
    return ordered[k - 1], k, len(ordered)
