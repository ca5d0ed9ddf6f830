"""Sessions, outputs and interleaved latency for the benchmarks, all in the calling process.

Session settings follow edgekit's harness (edgekit/harness/_ek_rt_onnxruntime.py): CPU EP only,
intra_op_num_threads = 2, inter_op_num_threads = 1, ORT_SEQUENTIAL, graph optimizations at ORT's
default (ORT_ENABLE_ALL). Latency is one batch-1 inference timed with time.perf_counter_ns; the
variants of one model are interleaved (shuffled order every round) so that machine noise (this is
a shared 2-core box) lands on every variant alike. Percentiles are nearest-rank, sorted[ceil(n*p)-1].
"""

from __future__ import annotations

import gc
import math
import random
import time
from typing import Callable

import numpy as np
import onnxruntime as ort


def session(path, threads: int = 2, optimize: bool = True) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    if not optimize:
        # No fusion: QuantizeLinear/DequantizeLinear run as float ops around float Conv/Gemm,
        # i.e. the QDQ model's own arithmetic without any int8 kernel (no VPMADDUBSW).
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def outputs(sess: ort.InferenceSession, x: np.ndarray) -> np.ndarray:
    """First output for every sample of x, run at batch 1 (as the harness and edgekit do)."""
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: x[i:i + 1]})[0] for i in range(len(x))])


def compare(got: np.ndarray, ref: np.ndarray) -> dict:
    g, r = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    d = np.abs(g - r)
    return {"max_abs_diff": float(d.max()), "mean_abs_diff": float(d.mean()),
            "top1_agreement": float(np.mean(g.argmax(-1) == r.argmax(-1)))}


def top1(logits: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.asarray(logits).argmax(-1) == labels))


def nearest_rank(sorted_values: list, p: float):
    n = len(sorted_values)
    rank = math.ceil(round(n * p, 9))  # round(): n*p can land a hair above an integer
    return sorted_values[max(rank, 1) - 1]


def summarize(ns: list[int]) -> dict:
    ms = sorted(v / 1e6 for v in ns)
    n = len(ms)
    mean = math.fsum(ms) / n
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in ms) / (n - 1)) if n > 1 else 0.0
    return {"n": n, "min": ms[0], "mean": mean, "std": std,
            **{k: nearest_rank(ms, p) for k, p in (("p50", .5), ("p90", .9), ("p95", .95), ("p99", .99))},
            "max": ms[-1]}


def runner(sess: ort.InferenceSession, x: np.ndarray) -> Callable[[], object]:
    run, feeds = sess.run, {sess.get_inputs()[0].name: np.ascontiguousarray(x[:1])}
    names = [sess.get_outputs()[0].name]
    return lambda: run(names, feeds)


# ONNX Runtime's intra-op threads spin-wait after a run, on both of this host's cores, for 5-20 ms:
# ResNet-18 int8 in OpenVINO timed right after four ORT runs took 8.2 ms p50, 4.9 ms after a 20 ms
# sleep and 4.4 ms after 100 ms (4.6 ms after another OpenVINO model). With one untimed lead-in run
# only, whichever variant the shuffle happened to put after an ORT session more often looked up to
# 1.22x slower (issue 15's ResNet-18 OpenVINO rows: two structurally identical IRs). So every
# variant first waits out the previous one's pool.
SETTLE_S = 0.1


def interleaved(fns: dict[str, Callable[[], object]], *, rounds: int, runs: int, warmup: int = 20,
                lead_in: int = 1, seed: int = 0, settle_s: float = SETTLE_S,
                tick: Callable[[], None] | None = None) -> dict:
    """Warm every variant up, then `rounds` rounds; each round runs every variant (shuffled order):
    `settle_s` asleep (the previous variant's thread pool stops spinning), `lead_in` untimed runs,
    `runs` timed runs. Returns {variant: {"samples_ns": [...], "round_p50_ms": [...]}, "orders": ...}."""
    rng = random.Random(seed)
    names = list(fns)
    out = {n: {"samples_ns": [], "round_p50_ms": []} for n in names}
    orders = []
    for n in names:
        for _ in range(warmup):
            fns[n]()
    pc = time.perf_counter_ns
    gc_was = gc.isenabled()
    gc.disable()  # a collection inside a timed call is the harness's cost, not the model's
    try:
        for _ in range(rounds):
            order = names[:]
            rng.shuffle(order)
            orders.append(order)
            for n in order:
                fn = fns[n]
                time.sleep(settle_s)
                for _ in range(lead_in):
                    fn()
                got = []
                for _ in range(runs):
                    t0 = pc()
                    fn()
                    got.append(pc() - t0)
                out[n]["samples_ns"] += got
                out[n]["round_p50_ms"].append(nearest_rank(sorted(got), .5) / 1e6)
            if tick:
                tick()
    finally:
        if gc_was:
            gc.enable()
    for n in names:
        out[n]["summary"] = summarize(out[n]["samples_ns"])
    return {"variants": out, "orders": orders,
            "settings": {"rounds": rounds, "runs_per_round": runs, "warmup": warmup, "lead_in": lead_in,
                         "settle_s": settle_s, "seed": seed, "threads": 2, "inter_op": 1, "execution_mode": "ORT_SEQUENTIAL",
                         "graph_optimization_level": "ORT_ENABLE_ALL", "batch": 1,
                         "clock": "time.perf_counter_ns", "percentile": "nearest-rank sorted[ceil(n*p)-1]"}}
