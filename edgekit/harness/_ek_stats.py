"""Statistics and correctness metrics for the device-side harness (stdlib + numpy only).

Percentiles are nearest-rank, sorted[ceil(n*p)-1] (HARNESS_SPEC.md step 6): TFLite's benchmark_model,
OpenVINO's benchmark_app, onnxruntime_perf_test and numpy's default (linear interpolation) each
define percentiles differently; nearest-rank always returns a latency that was actually observed and
is the order statistic the gate's binomial confidence bound is built on.
"""

from __future__ import annotations

import math

import numpy as np

# Raw samples are kept to 1e-4 ms (100 ns): below perf_counter_ns overhead on small cores
# (~50-100 ns a call) and small enough to keep a 3 x 300-sample report readable.
SAMPLE_DECIMALS = 4
# Summary statistics derived from samples get two more digits, so a mean or std of rounded
# samples is not rounded twice.
STAT_DECIMALS = 6

PERCENTILES = (("p50", 0.50), ("p90", 0.90), ("p95", 0.95), ("p99", 0.99))


def nearest_rank(sorted_values, p: float):
    """Nearest-rank percentile of already sorted values: sorted[ceil(n*p)-1], p in (0, 1].

    >>> nearest_rank([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 0.95)
    10
    >>> nearest_rank([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 0.5)
    5
    """
    n = len(sorted_values)
    if n == 0:
        raise ValueError("nearest_rank of no values")
    if not 0.0 < p <= 1.0:
        raise ValueError(f"percentile must be in (0, 1], got {p}")
    # round() first: n*p in binary floating point can land a hair above an integer
    # (25*0.28 == 7.000000000000001), and a bare ceil would then skip to rank 8.
    rank = math.ceil(round(n * p, 9))
    return sorted_values[max(rank, 1) - 1]


def ns_to_ms(samples_ns) -> list[float]:
    """Integer nanoseconds from time.perf_counter_ns to ms rounded to SAMPLE_DECIMALS."""
    return [round(v / 1e6, SAMPLE_DECIMALS) for v in samples_ns]


def summarize(values) -> dict:
    """n, min, mean, std (sample, ddof=1), cv, nearest-rank p50/p90/p95/p99, max of a flat list."""
    vals = sorted(float(v) for v in values)
    n = len(vals)
    if n == 0:
        return {"n": 0, "min": None, "mean": None, "std": None, "cv": None,
                "p50": None, "p90": None, "p95": None, "p99": None, "max": None}
    mean = math.fsum(vals) / n
    # ddof=1: the samples estimate the device's latency distribution, not describe all of it.
    var = math.fsum((v - mean) ** 2 for v in vals) / (n - 1) if n > 1 else 0.0
    std = math.sqrt(var)
    out = {"n": n, "min": vals[0], "mean": round(mean, STAT_DECIMALS), "std": round(std, STAT_DECIMALS),
           "cv": round(std / mean, STAT_DECIMALS) if mean > 0 else None}
    for key, p in PERCENTILES:
        out[key] = nearest_rank(vals, p)
    out["max"] = vals[-1]
    return out


def latency_section(trials_ms: list[list[float]]) -> dict:
    """The report's "latency" object from per-trial samples (ms, already rounded).

    Statistics are computed from the same rounded samples that the report stores, so anyone
    recomputing p95 from samples_ms gets exactly the reported value. Samples are pooled across
    trials for the percentiles; per-trial medians are kept separately because consecutive
    iterations are autocorrelated and the gate compares trials, not iterations.
    """
    pooled = [v for trial in trials_ms for v in trial]
    out = {"unit": "ms"}
    out.update(summarize(pooled))
    # Median as nearest-rank p50 (an observed value), the same definition as "p50" above.
    out["trial_medians"] = [nearest_rank(sorted(t), 0.5) if t else None for t in trials_ms]
    out["samples_ms"] = trials_ms
    return out


def _flat_rows(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim == 0:
        return a.reshape(1, 1)
    return a.reshape(a.shape[0], -1)


def top1(a: np.ndarray) -> np.ndarray:
    """Top-1 class per sample: argmax over all non-batch axes of a classifier output."""
    return _flat_rows(a).argmax(axis=1)


def max_abs_diff(got: np.ndarray, want: np.ndarray) -> float:
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    if got.shape != want.shape:
        if got.size != want.size:
            return math.inf
        got = got.reshape(want.shape)
    if got.size == 0:
        return 0.0
    d = np.abs(got - want)
    # NaN anywhere means the artifact is broken; report it as infinite difference (null in JSON).
    return math.inf if np.isnan(d).any() else float(d.max())


def allclose(got: np.ndarray, want: np.ndarray, atol: float, rtol: float) -> bool:
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    if got.size != want.size:
        return False
    return bool(np.allclose(got.reshape(want.shape), want, atol=atol, rtol=rtol))


class SelfCheck:
    """Accumulates the step-2 comparison of device outputs with the bundle's expected and reference.

    Outputs are compared per sample at batch 1; top-1 agreement uses the first output (the logits of
    a classifier, per manifest order), max abs diff and allclose use every output that has an
    "expected.<output>" array.
    """

    def __init__(self, atol: float, rtol: float, min_top1: float):
        self.atol, self.rtol, self.min_top1 = float(atol), float(rtol), float(min_top1)
        self.n = 0
        self.max_abs = 0.0
        self.all_close = True
        self.agree_expected = 0
        self.agree_reference = 0
        self.n_reference = 0

    def add(self, got: dict, expected: dict, reference: dict, first_output: str) -> None:
        self.n += 1
        for name, want in expected.items():
            self.max_abs = max(self.max_abs, max_abs_diff(got[name], want))
            self.all_close = self.all_close and allclose(got[name], want, self.atol, self.rtol)
        if first_output in expected:
            self.agree_expected += int(top1(got[first_output])[0] == top1(expected[first_output])[0])
        if first_output in reference:
            self.n_reference += 1
            self.agree_reference += int(top1(got[first_output])[0] == top1(reference[first_output])[0])

    def result(self) -> dict:
        t1e = self.agree_expected / self.n if self.n else None
        t1r = self.agree_reference / self.n_reference if self.n_reference else None
        # Pass when numerically close OR when predictions agree: an int8 artifact on another CPU's
        # kernels legitimately differs by more than atol while classifying identically.
        passed = self.n > 0 and (self.all_close or (t1e is not None and t1e >= self.min_top1))
        return {"n": self.n, "max_abs_diff": self.max_abs, "atol": self.atol, "rtol": self.rtol,
                "allclose": self.all_close, "top1_agreement_expected": t1e,
                "top1_agreement_reference": t1r, "min_top1_agreement": self.min_top1,
                "passed": bool(passed)}


def accuracy_section(predictions: list[int], labels: np.ndarray, source_value) -> dict:
    """Top-1 accuracy of the exact artifact on the bundled validation set, and drop vs the source."""
    labels = np.asarray(labels).reshape(-1)
    n = len(predictions)
    value = float(np.mean(np.asarray(predictions) == labels[:n])) if n else None
    src = float(source_value) if isinstance(source_value, (int, float)) else None
    drop = round(src - value, STAT_DECIMALS) if (src is not None and value is not None) else None
    return {"metric": "top1", "n": n, "value": value, "source_value": src, "drop": drop}
