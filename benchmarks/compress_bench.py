"""Issue #4 benchmark: the digits CNN (edgekit demo model, 30 epochs) with 50% of its channels
pruned (examples/recipes/digits_prune50.toml: torch-pruning + distillation fine-tuning), measured.

Prints the recipe's stage table and a latency study, writes benchmarks/results/compress_digits.json.

Latency, all at batch 1 on ONE intra-op thread, source and pruned interleaved (shuffled order each
round, so noise on this shared machine lands on both alike), median of every timed call:
  - PyTorch eager fp32 (the figure the stage table reports, here with many more runs);
  - ONNX Runtime fp32 and edgekit int8 (x86-avx2 bundles made by edgekit.convert from each model),
    i.e. what a device would run;
  - PyTorch eager at batch 64 as well, per sample, where compute rather than per-call overhead dominates.
The issue's target: >= 1.5x faster at <= 1 point accuracy drop.

Usage: python benchmarks/compress_bench.py [--work DIR] [--rounds N] [--runs N] [--quick]
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RECIPE = REPO / "examples" / "recipes" / "digits_prune50.toml"
SPEEDUP_TARGET = 1.5
DROP_TARGET = 0.01


def interleaved(fns: dict, rounds: int, runs: int, warmup: int = 50, seed: int = 0) -> dict:
    rng = random.Random(seed)
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples = {k: [] for k in fns}
    round_medians = {k: [] for k in fns}
    gc_was = gc.isenabled()
    gc.disable()
    try:
        for _ in range(rounds):
            order = list(fns)
            rng.shuffle(order)
            for k in order:
                fn, got = fns[k], []
                fn()
                for _ in range(runs):
                    t0 = time.perf_counter_ns()
                    fn()
                    got.append(time.perf_counter_ns() - t0)
                samples[k] += got
                round_medians[k].append(statistics.median(got) / 1e6)
    finally:
        if gc_was:
            gc.enable()
    return {k: {"median_ms": statistics.median(samples[k]) / 1e6, "n": len(samples[k]),
                "p90_ms": sorted(samples[k])[int(0.9 * len(samples[k]))] / 1e6,
                "round_medians_ms": [round(v, 5) for v in round_medians[k]]} for k in fns}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--results", type=Path, default=HERE / "results")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--runs", type=int, default=400)
    ap.add_argument("--quick", action="store_true", help="fewer rounds and runs (a smoke test)")
    args = ap.parse_args(argv)
    if args.quick:
        args.rounds, args.runs = 3, 100

    import onnxruntime as ort
    import torch

    from edgekit.compress import load_recipe, render_stage_table, run_recipe
    from edgekit.convert import convert
    from edgekit.data import Dataset
    from edgekit.demo import digits_data, train_digits
    from edgekit.progress import console as make_console
    from edgekit.source import ModelHandle, TensorSpec

    console = make_console()
    torch.set_num_threads(1)
    work = args.work or Path(tempfile.mkdtemp(prefix="compress-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    load_start = [round(v, 2) for v in os.getloadavg()]

    model, trained_acc = train_digits()                      # the demo's model: 30 epochs, seed 0
    xt, yt, xv, yv = digits_data()
    train = Dataset({"x": xt}, yt, "digits train split (1437)", "-", "npz")
    val = Dataset({"x": xv}, yv, "digits validation split (360)", "-", "npz")
    handle = ModelHandle("python", "edgekit.demo:digits_cnn (trained)", "-", [TensorSpec("x", (None, 1, 8, 8), "float32")],
                         ["logits"], module=model.eval())
    recipe = load_recipe(RECIPE)
    pruned, stages = run_recipe(handle, recipe, train, val, progress=True)
    console.print(render_stage_table(stages, title="digits CNN, examples/recipes/digits_prune50.toml"))

    # The same two models through edgekit.convert: x86-avx2 bundles, fp32 and int8.
    np.savez(work / "calibration.npz", x=xt[:128], labels=yt[:128])
    np.savez(work / "validation.npz", x=xv, labels=yv)
    bundles = {}
    for key, h in (("source", handle), ("pruned", pruned)):
        for r in convert(h, ["x86-avx2"], str(work / "calibration.npz"), str(work / "validation.npz"),
                         work / key, precisions=["fp32", "int8"], license="MIT",
                         provenance="compress_bench", progress=False):
            bundles[f"{key} ORT {r.precision}"] = r

    def ort_fn(path, n=1):
        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = 1, 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.log_severity_level = 3
        s = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        feeds, names = {"x": np.ascontiguousarray(xv[:n])}, [s.get_outputs()[0].name]
        return lambda: s.run(names, feeds)

    def torch_fn(m, n):
        x = torch.from_numpy(np.ascontiguousarray(xv[:n]))

        def run():
            with torch.inference_mode():
                m(x)
        return run

    fns = {"source PyTorch b1": torch_fn(handle.module, 1), "pruned PyTorch b1": torch_fn(pruned.module, 1)}
    for k, r in bundles.items():
        fns[k] = ort_fn(r.path / "model.onnx")
    lat = interleaved(fns, args.rounds, args.runs)
    # batch 64: where compute, not per-operator dispatch, dominates (the bundles take any batch)
    batch = interleaved({"source PyTorch b64": torch_fn(handle.module, 64),
                         "pruned PyTorch b64": torch_fn(pruned.module, 64),
                         **{f"{k} b64": ort_fn(r.path / "model.onnx", 64) for k, r in bundles.items()}},
                        args.rounds, max(args.runs // 10, 10))
    for v in batch.values():
        v["per_sample_ms"] = v["median_ms"] / 64

    src, pr = stages[0], stages[-1]
    comparisons = []
    for label, a, b in (("PyTorch fp32, batch 1", "source PyTorch b1", "pruned PyTorch b1"),
                        ("ONNX Runtime fp32, batch 1", "source ORT fp32", "pruned ORT fp32"),
                        ("ONNX Runtime int8 (edgekit x86-avx2), batch 1", "source ORT int8", "pruned ORT int8"),
                        ("PyTorch fp32, batch 64", "source PyTorch b64", "pruned PyTorch b64"),
                        ("ONNX Runtime fp32, batch 64", "source ORT fp32 b64", "pruned ORT fp32 b64"),
                        ("ONNX Runtime int8 (edgekit x86-avx2), batch 64", "source ORT int8 b64", "pruned ORT int8 b64")):
        d = batch if "b64" in a else lat
        acc_a = bundles[a.removesuffix(" b64")].accuracy if a.removesuffix(" b64") in bundles else src["accuracy"]
        acc_b = bundles[b.removesuffix(" b64")].accuracy if b.removesuffix(" b64") in bundles else pr["accuracy"]
        speed = d[a]["median_ms"] / d[b]["median_ms"]
        # per round, the two were timed back to back: the ratio of their medians drifts less with load
        paired = statistics.median(x / y for x, y in zip(d[a]["round_medians_ms"], d[b]["round_medians_ms"]))
        comparisons.append({"what": label, "source_ms": d[a]["median_ms"], "pruned_ms": d[b]["median_ms"],
                            "speedup": speed, "speedup_paired_rounds": paired,
                            "source_accuracy": acc_a, "pruned_accuracy": acc_b,
                            "drop_points": (acc_a - acc_b) * 100,
                            "meets_target": min(speed, paired) >= SPEEDUP_TARGET and (acc_a - acc_b) <= DROP_TARGET + 1e-9})

    from rich.table import Table
    t = Table(title=f"latency, 1 thread, median of {args.rounds} x {args.runs} interleaved calls "
                    f"(target: >= {SPEEDUP_TARGET}x at <= {DROP_TARGET * 100:g} point drop)")
    for c in ("runtime", "source ms", "pruned ms", "speed-up", "per-round", "source acc", "pruned acc", "drop pts", "target"):
        t.add_column(c, justify="left" if c == "runtime" else "right")
    for c in comparisons:
        t.add_row(c["what"], f"{c['source_ms']:.4f}", f"{c['pruned_ms']:.4f}", f"{c['speedup']:.2f}x",
                  f"{c['speedup_paired_rounds']:.2f}x", f"{c['source_accuracy']:.4f}",
                  f"{c['pruned_accuracy']:.4f}", f"{c['drop_points']:+.2f}",
                  "[green]met[/]" if c["meets_target"] else "[red]not met[/]")
    console.print(t)
    console.print(f"params {src['params']:,} -> {pr['params']:,} ({src['params'] / pr['params']:.2f}x fewer), "
                  f"MACs {src['macs']:,} -> {pr['macs']:,} ({src['macs'] / pr['macs']:.2f}x fewer), "
                  f"fp32 file {src['size_mb']:.3f} -> {pr['size_mb']:.3f} MB; int8 bundle model "
                  f"{bundles['source ORT int8'].size_mb:.4f} -> {bundles['pruned ORT int8'].size_mb:.4f} MB")

    import importlib.metadata as md
    out = {
        "benchmark": "issue 4: digits CNN, 50% channels pruned + distillation fine-tuning",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "machine": platform.machine(),
                    "loadavg_start": load_start, "loadavg_end": [round(v, 2) for v in os.getloadavg()]},
        "versions": {p: md.version(p) for p in ("torch", "torch-pruning", "onnxruntime", "numpy")},
        "recipe": recipe.to_dict(), "trained_accuracy": trained_acc,
        "stages": stages,
        "bundles": {k: {"size_mb": r.size_mb, "accuracy": r.accuracy, "source_accuracy": r.source_accuracy,
                        "accuracy_control": r.accuracy_control} for k, r in bundles.items()},
        "latency": {"settings": {"threads": 1, "rounds": args.rounds, "runs_per_round": args.runs,
                                 "batch64_runs_per_round": max(args.runs // 10, 10), "order": "shuffled per round",
                                 "statistic": "median of every timed call", "clock": "time.perf_counter_ns"},
                    "batch1": lat, "batch64": batch},
        "comparisons": comparisons,
        "targets": {"speedup": SPEEDUP_TARGET, "max_drop": DROP_TARGET},
        "seconds": round(time.perf_counter() - started, 1),
    }
    args.results.mkdir(parents=True, exist_ok=True)
    path = args.results / "compress_digits.json"
    path.write_text(json.dumps(out, indent=1, default=str))
    console.print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
