"""`make bench`: digits CNN and ResNet-18 on this machine, fp32 vs edgekit int8 vs ORT dynamic int8,
plus the x86-avx2 ISA study (U8S8 full range / U8S8 reduce_range / U8U8), all in one process.

Writes benchmarks/results/issue2_x86.json (machine, settings, every number, raw latency samples)
and benchmarks/results/issue2_x86.md; prints the same tables. See benchmarks/README.md.
Usage: python benchmarks/run_all.py [--quick] [--work DIR] [--results DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_convert  # noqa: E402
import bench_report  # noqa: E402
import bench_timing  # noqa: E402

VARIANTS = ("fp32", "int8", "int8-dyn", "u8s8-full", "u8u8")
STATIC_INT8 = ("int8", "u8s8-full", "u8u8")
DROP_LIMIT_POINTS = 0.5
SPEEDUP_LIMIT = 1.5


def machine_info() -> dict:
    import importlib.metadata as md
    cpu_model, flags = platform.processor() or "?", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and cpu_model in ("?", "", "x86_64"):
                cpu_model = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    versions = {"python": platform.python_version()}
    for pkg in ("onnxruntime", "onnx", "torch", "numpy", "edgekit"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    return {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "cpu_model": cpu_model, "cpu_count": os.cpu_count(), "machine": platform.machine(),
            "platform": platform.platform(),
            "isa_flags": {f: f in flags for f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni",
                                                   "amx_int8")},
            "hypervisor": "hypervisor" in flags, "loadavg_start": [round(v, 2) for v in os.getloadavg()],
            "versions": versions}


def model_specs(work: Path, tick) -> list[dict]:
    """Source handles, data and parameter counts for the two models."""
    from edgekit.demo import digits_cnn, write_example
    from edgekit.source import load
    tick("train digits CNN")
    ex = write_example(work / "digits" / "example")
    digits = load(str(ex["model"]))
    n_digits = sum(p.numel() for p in digits.module.parameters())
    assert n_digits == sum(p.numel() for p in digits_cnn().parameters()), "pt2 and digits_cnn() differ"
    tick("ResNet-18 data")
    rdata = bench_convert.resnet_data(work / "resnet18" / "data")
    resnet = load(f"{HERE / 'models.py'}:resnet18")
    return [
        {"key": "digits", "name": "digits CNN", "handle": digits, "params": n_digits,
         "calibration": ex["calibration"], "validation": ex["validation"], "labelled": True,
         "input": "1x1x8x8", "trained_accuracy": ex["accuracy"]},
        {"key": "resnet18", "name": "ResNet-18", "handle": resnet,
         "params": sum(p.numel() for p in resnet.module.parameters()),
         "calibration": rdata["calibration"], "validation": rdata["validation"], "labelled": False,
         "input": "1x3x224x224"},
    ]


def evaluate(spec: dict, built: dict, tick) -> tuple[dict, dict]:
    """ORT outputs on the validation set for every variant: accuracy, agreement with fp32, and
    for static int8 the int8 kernels against the same file's float QDQ simulation."""
    with np.load(spec["validation"]) as z:
        x, labels = z["x"], z["labels"]
    limit = int(1.1 * spec["params"] + 0.1 * 2**20)
    src_acc = built["fp32"]["edgekit"]["source_accuracy"]
    sessions, variants, fp32 = {}, {}, None
    for key in VARIANTS:
        tick(f"outputs {key}")
        b = built[key]
        sess = sessions[key] = bench_timing.session(b["path"])
        logits = bench_timing.outputs(sess, x)
        if key == "fp32":
            fp32 = logits
        size = Path(b["path"]).stat().st_size
        acc = bench_timing.top1(logits, labels) if spec["labelled"] else None
        v = {"label": bench_report.LABELS[key], "file": str(b["path"]), "size_bytes": size,
             "size_mb": size / 2**20, "quantization": b.get("quantization"),
             "edgekit": b.get("edgekit"),
             "accuracy": acc, "drop_points": None if acc is None else (src_acc - acc) * 100,
             "vs_fp32": bench_timing.compare(logits, fp32),
             "size_check": None if key == "fp32" else
             {"size_bytes": size, "params": spec["params"], "limit_bytes": limit, "pass": size <= limit}}
        if key in STATIC_INT8:
            sim = bench_timing.outputs(bench_timing.session(b["path"], optimize=False), x)
            v["vs_qdq_sim"] = bench_timing.compare(logits, sim)
            v["qdq_sim"] = {"accuracy": bench_timing.top1(sim, labels) if spec["labelled"] else None,
                            "vs_fp32": bench_timing.compare(sim, fp32)}
        variants[key] = v
    return variants, sessions


def targets(models: dict) -> list[dict]:
    d, r = models["digits"]["variants"]["int8"], models["resnet18"]["variants"]["int8"]
    out = [{"name": "digits: edgekit int8 loses <= 0.5 points of top-1 (vs the PyTorch source)",
            "measured": f"{d['drop_points']:+.2f} pts ({d['accuracy']:.4f} vs "
                        f"{models['digits']['source_accuracy']:.4f})",
            "limit": f"<= {DROP_LIMIT_POINTS} pts", "value": d["drop_points"],
            "pass": d["drop_points"] <= DROP_LIMIT_POINTS},
           {"name": "ResNet-18: edgekit int8 >= 1.5x faster than fp32 (p50)",
            "measured": f"{r['speedup_p50']:.2f}x (p95 {r['speedup_p95']:.2f}x)",
            "limit": f">= {SPEEDUP_LIMIT}x", "value": r["speedup_p50"], "pass": r["speedup_p50"] >= SPEEDUP_LIMIT}]
    for key, m in models.items():
        c = m["variants"]["int8"]["size_check"]
        out.append({"name": f"{m['name']}: edgekit int8 file <= 1.1 x params bytes + 0.1 MiB",
                    "measured": f"{c['size_bytes']:,} B", "limit": f"<= {c['limit_bytes']:,} B "
                    f"({c['params']:,} params)", "value": c["size_bytes"], "pass": c["pass"]})
    return out


def notes(models: dict) -> list[str]:
    out = []
    for m in models.values():
        for key, v in m["variants"].items():
            if key != "fp32" and (v.get("speedup_p50") or 9) < 1.0:
                out.append(f"{m['name']}: {v['label']} is SLOWER than fp32 ({v['speedup_p50']:.2f}x p50; "
                           "FIELD_NOTES trap 3)")
            ctl = (v.get("edgekit") or {}).get("accuracy_control")
            if ctl not in (None, "within budget"):
                out.append(f"{m['name']}: {v['label']}: edgekit accuracy control changed the artifact: {ctl}")
            if key in STATIC_INT8 and m["labelled"]:
                ek = v["edgekit"]["accuracy"]
                if abs(ek - v["accuracy"]) > 1e-9:
                    out.append(f"{m['name']}: {v['label']}: top-1 here (2 threads) {v['accuracy']:.4f} "
                               f"vs edgekit's convert-time {ek:.4f} (1 thread)")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="few timing rounds (a smoke test, not a measurement)")
    ap.add_argument("--work", default=str(HERE / "work" / "issue2_x86"), help="bundles and scratch (recreated)")
    ap.add_argument("--results", default=str(HERE / "results"))
    args = ap.parse_args(argv)
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    t_start = time.perf_counter()
    console = Console(width=None if Console().is_terminal else 200)
    # Torch only computes reference outputs during conversion. Its default of one OpenMP thread per
    # core, on a shared 2-core box, ran ResNet-18 at 0.4-0.7 s per image (0.13-0.2 s at 1 thread):
    # one thread keeps the run short and leaves no spinning OpenMP workers beside ORT's timed pools.
    import torch
    torch.set_num_threads(1)
    sched = {"digits": {"rounds": 15, "runs": 40}, "resnet18": {"rounds": 15, "runs": 5}}
    if args.quick:
        sched = {"digits": {"rounds": 2, "runs": 10}, "resnet18": {"rounds": 2, "runs": 2}}
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    machine = machine_info()
    console.print(f"[bold]edgekit bench[/] issue 2 (x86-avx2): {machine['cpu_model']}, {machine['cpu_count']} cores, "
                  f"avx2={machine['isa_flags']['avx2']} avx512_vnni={machine['isa_flags']['avx512_vnni']}, "
                  f"onnxruntime {machine['versions']['onnxruntime']}, load {machine['loadavg_start']}")
    total = 2 + 2 * (3 + len(VARIANTS) + 1) + sum(s["rounds"] for s in sched.values())
    phases: dict[str, float] = {}
    models: dict[str, dict] = {}
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=Console(stderr=True)) as bar:
        task = bar.add_task("bench", total=total)
        state = {"label": None}

        @contextlib.contextmanager
        def pause():
            bar.stop()  # edgekit's convert shows its own per-bundle bar meanwhile
            try:
                yield
            finally:
                bar.start()

        def tick(label: str) -> None:
            if state["label"] is not None:
                bar.advance(task)
            state["label"] = label
            bar.update(task, description=label)

        t0 = time.perf_counter()
        specs = model_specs(work, tick)
        phases["data"] = time.perf_counter() - t0
        built = {}
        for spec in specs:
            t0 = time.perf_counter()
            built[spec["key"]] = bench_convert.build(
                spec["handle"], spec["calibration"], spec["validation"], work / spec["key"],
                lambda label, s=spec: tick(f"{s['name']}: {label}"), pause)
            phases[f"convert_{spec['key']}"] = time.perf_counter() - t0
            phases.update({f"{k}_{spec['key']}": v for k, v in built[spec["key"]].pop("_times").items()})
        sessions = {}
        for spec in specs:
            t0 = time.perf_counter()
            variants, sessions[spec["key"]] = evaluate(spec, built[spec["key"]],
                                                       lambda label, s=spec: tick(f"{s['name']}: {label}"))
            models[spec["key"]] = {
                "name": spec["name"], "input": spec["input"], "params": spec["params"],
                "accuracy_meaningful": spec["labelled"], "source": spec["handle"].spec,
                "source_accuracy": built[spec["key"]]["fp32"]["edgekit"]["source_accuracy"] if spec["labelled"] else None,
                "trained_accuracy": spec.get("trained_accuracy"),
                "calibration": str(spec["calibration"]), "validation": str(spec["validation"]),
                "labelled": spec["labelled"], "variants": variants}
            phases[f"evaluate_{spec['key']}"] = time.perf_counter() - t0
        for spec in specs:
            key, s = spec["key"], sched[spec["key"]]
            with np.load(spec["validation"]) as z:
                x1 = z["x"][:1]
            fns = {k: bench_timing.runner(sess, x1) for k, sess in sessions[key].items()}
            t0 = time.perf_counter()
            rounds_done = [0]

            def round_tick(name=spec["name"], n=s["rounds"]):
                rounds_done[0] += 1
                tick(f"{name}: timing round {rounds_done[0]}/{n}")
            tick(f"{spec['name']}: warm-up")
            timing = bench_timing.interleaved(fns, rounds=s["rounds"], runs=s["runs"], tick=round_tick)
            phases[f"timing_{key}"] = time.perf_counter() - t0
            sessions[key] = None  # stop the pools before the next model is timed
            vs = models[key]["variants"]
            base = timing["variants"]["fp32"]["summary"]
            for k, t in timing["variants"].items():
                vs[k]["latency"] = t["summary"]
                vs[k]["latency"]["round_p50_ms"] = t["round_p50_ms"]
                vs[k]["latency"]["samples_ms"] = [round(v / 1e6, 4) for v in t["samples_ns"]]
                vs[k]["speedup_p50"] = base["p50"] / t["summary"]["p50"]
                vs[k]["speedup_p95"] = base["p95"] / t["summary"]["p95"]
                # Paired per round (same minute, same machine load): fp32 round p50 / variant round p50.
                ratios = sorted(a / b for a, b in zip(timing["variants"]["fp32"]["round_p50_ms"], t["round_p50_ms"]))
                vs[k]["speedup_rounds"] = {"median": bench_timing.nearest_rank(ratios, .5),
                                           "min": ratios[0], "max": ratios[-1], "n": len(ratios)}
            models[key]["timing"] = {"settings": timing["settings"], "orders": timing["orders"]}
        bar.update(task, completed=total, description="done")

    machine["loadavg_end"] = [round(v, 2) for v in os.getloadavg()]
    results = {"schema": "edgekit.bench.issue2_x86/1", "machine": machine,
               "settings": {"warmup": 20, "torch_threads_during_conversion": 1, "digits": sched["digits"], "resnet18": sched["resnet18"],
                            "quick": args.quick, "threads": 2, "work": str(work)},
               "models": models}
    results["targets"] = targets(models)
    results["notes"] = notes(models)
    results["phases_s"] = phases
    results["elapsed_s"] = time.perf_counter() - t_start
    for table in bench_report.rich_tables(results):
        console.print(table)
    for n in results["notes"]:
        console.print(f"[yellow]note[/]: {n}")
    out = Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    stem = "issue2_x86" + ("_quick" if args.quick else "")
    (out / f"{stem}.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    (out / f"{stem}.md").write_text(bench_report.markdown(results))
    console.print(f"wrote {out / (stem + '.json')} and {out / (stem + '.md')}; "
                  f"elapsed {results['elapsed_s']:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())


def save_results(name: str, doc: dict, md: str) -> None:
    """benchmarks/results/<name>.json and .md, and the table on stdout."""
    results = HERE / "results"
    results.mkdir(exist_ok=True)
    (results / f"{name}.json").write_text(json.dumps(doc, indent=1, default=str))
    (results / f"{name}.md").write_text(md)
    print(md)


def machine_line(m: dict) -> str:
    """The machine in one line for a results page: CPU, cores, the ISA flags that decide int8, load."""
    isa = ", ".join(k for k, v in m["isa_flags"].items() if v)
    return f"{m['cpu_model']}, {m['cpu_count']} cores; ISA {isa}; load at start {m['loadavg_start']}"
