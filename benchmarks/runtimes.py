"""Issue 3: the same models across ONNX Runtime, OpenVINO and LiteRT on this machine, in one run.

Per model and runtime: fp32 (edgekit), edgekit int8, and that runtime's own default int8 recipe
(rt_build.py). Columns: accuracy, p50/p95 ms at batch 1 (2 threads, interleaved rounds via
bench_timing.interleaved), size MB, speed-up vs that runtime's fp32 (same run, plus the paired
per-round ratio). Then the issue's target is evaluated and printed. Writes
benchmarks/results/issue3_runtimes.json and .md. See benchmarks/README.md.
Usage: python benchmarks/runtimes.py [--quick] [--minilm] [--models digits,resnet18]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import bench_timing
import numpy as np
import rt_build
import rt_report
from run_all import machine_info

T0 = time.perf_counter()


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - T0:6.0f}s] {msg}", flush=True)


def specs(work: Path, which: list[str]) -> list[dict]:
    out = []
    if "digits" in which:
        from edgekit.demo import write_example
        ex = write_example(work / "digits" / "example")
        out.append({"key": "digits", "name": "digits CNN", "source": str(ex["model"]),
                    "calibration": ex["calibration"], "validation": ex["validation"], "labelled": True,
                    "timing": (15, 40)})
    if "resnet18" in which:
        import bench_convert
        d = bench_convert.resnet_data(work / "resnet18" / "data")
        out.append({"key": "resnet18", "name": "ResNet-18", "source": f"{HERE / 'models.py'}:resnet18",
                    "calibration": d["calibration"], "validation": d["validation"], "labelled": False,
                    "timing": (12, 4)})
    if "minilm" in which:
        # all 300 validation sentences: one sentence is a third of a point, finer than the 0.5-point bar
        val = ROOT / "examples/text/debian_sections_val.jsonl"
        out.append({"key": "minilm", "name": "MiniLM classifier", "source": str(ROOT / "build/minilm-debian"),
                    "calibration": ROOT / "examples/text/debian_sections_calib.jsonl", "validation": val,
                    "labelled": True, "timing": (8, 5)})
    return out


def run_model(spec: dict, work: Path, quick: bool) -> dict:
    import torch

    from edgekit.data import load_data
    from edgekit.source import load
    mwork = work / spec["key"]
    log(f"{spec['name']}: build")
    torch.set_num_threads(1)  # conversion only (see README: torch at 2 threads on this loaded box is slower)
    handle = load(spec["source"])
    tok = spec["source"] if spec["key"] == "minilm" else None
    calib = load_data(str(spec["calibration"]), handle, sequence_length=64, tokenizer_dir=tok, role="calibration")
    val = load_data(str(spec["validation"]), handle, sequence_length=64, tokenizer_dir=tok, role="validation")
    built = rt_build.build_edgekit(spec["source"], spec["calibration"], spec["validation"], mwork, log)
    # The default recipes get the same calibration samples edgekit's static int8 used (32 for the
    # CNNs; all 160 lines for MiniLM, whose x86 int8 is dynamic and calibrates nothing), so a
    # difference in accuracy is the recipe's, not the data's.
    used = built[("onnxruntime", "int8")]["quantization"].get("calibration_samples", len(calib))
    calib = calib.head(int(used))
    defaults = rt_build.build_defaults(handle, calib, built, mwork, log)
    src_acc = built[("onnxruntime", "fp32")]["source_accuracy"]

    names = list(handle.input_names)
    variants, fns = {}, {}
    for rt in rt_build.RUNTIMES:
        for kind in ("fp32", "edgekit-int8", "default"):
            b = defaults[rt] if kind == "default" else built[(rt, "fp32" if kind == "fp32" else "int8")]
            key = f"{rt}/{kind}"
            log(f"{spec['name']}: outputs {key}")
            fn = rt_build.runner(rt, b["files"], names)
            logits = np.concatenate([np.asarray(fn(val.sample(i))).reshape(1, -1) for i in range(len(val))])
            acc = bench_timing.top1(logits, val.labels) if spec["labelled"] else None
            size = rt_build.size_bytes(b["files"])
            variants[key] = {"runtime": rt, "kind": kind, "files": [str(f) for f in b["files"]],
                             "size_bytes": size, "size_mb": size / 2**20, "accuracy": acc,
                             "drop_points": None if acc is None else (src_acc - acc) * 100,
                             "_logits": logits,
                             **({"recipe": b["recipe"], "quantize_seconds": b["quantize_seconds"]}
                                if kind == "default" else
                                {"bundle": b["bundle"], "edgekit_accuracy": b["edgekit_accuracy"],
                                 "accuracy_control": b["accuracy_control"], "quantization": b["quantization"],
                                 "convert_seconds": b["convert_seconds"]})}
            feed = val.sample(0)
            fns[key] = (lambda f=fn, x=feed: f(x))
    for key, v in variants.items():
        ref = variants[f"{v['runtime']}/fp32"]["_logits"]
        v["vs_fp32"] = bench_timing.compare(v["_logits"], ref)
    for v in variants.values():
        del v["_logits"]
    rounds, runs = (2, 3) if quick else spec["timing"]
    log(f"{spec['name']}: timing {len(fns)} variants, {rounds} rounds x {runs} runs (interleaved)")
    timing = bench_timing.interleaved(fns, rounds=rounds, runs=runs, warmup=10 if spec["key"] != "digits" else 20,
                                      tick=lambda: print(".", end="", flush=True))
    print()
    for key, v in variants.items():
        t = timing["variants"][key]
        base = timing["variants"][f"{v['runtime']}/fp32"]
        v["latency_ms"] = t["summary"]
        v["round_p50_ms"] = t["round_p50_ms"]
        v["speedup_p50"] = base["summary"]["p50"] / t["summary"]["p50"]
        v["speedup_p95"] = base["summary"]["p95"] / t["summary"]["p95"]
        ratios = [b / s for b, s in zip(base["round_p50_ms"], t["round_p50_ms"])]
        v["speedup_rounds"] = {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)}
    settings = {k: timing["settings"][k] for k in ("rounds", "runs_per_round", "warmup", "lead_in", "seed")}
    settings.update({"threads": rt_build.THREADS, "batch": 1, "ort": "bench_timing.session (intra 2, inter 1, "
                     "sequential, ORT_ENABLE_ALL)", "openvino": rt_build.OV_CONFIG,
                     "litert": "ai_edge_litert Interpreter(num_threads=2) via edgekit open_interpreter"})
    return {"name": spec["name"], "labelled": spec["labelled"], "source_accuracy": src_acc if spec["labelled"] else None,
            "n_validation": len(val), "variants": variants, "timing_settings": settings,
            "samples_ns": {k: timing["variants"][k]["samples_ns"] for k in fns}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2 short rounds: a smoke test, not a measurement")
    ap.add_argument("--minilm", action="store_true", help="also the MiniLM classifier (300 validation sentences)")
    ap.add_argument("--models", default="digits,resnet18")
    ap.add_argument("--work", default=str(HERE / "work" / "issue3_runtimes"))
    ap.add_argument("--results", default=str(HERE / "results"))
    a = ap.parse_args(argv)
    work = Path(a.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    info = machine_info()
    import importlib.metadata as md
    for pkg in ("openvino", "nncf", "litert-torch", "ai-edge-litert", "transformers"):
        try:
            info["versions"][pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            info["versions"][pkg] = None
    which = a.models.split(",") + (["minilm"] if a.minilm else [])
    models = {}
    failed = {}
    for spec in specs(work, which):
        try:
            models[spec["key"]] = run_model(spec, work, a.quick)
        except Exception as exc:  # noqa: BLE001 - a failed model (e.g. the optional MiniLM) must not lose the others
            import traceback
            traceback.print_exc()
            failed[spec["key"]] = f"{type(exc).__name__}: {str(exc)[:500]}"
            log(f"{spec['name']}: FAILED ({failed[spec['key']][:200]})")
            continue
        log(f"{spec['name']}: done")
        write(info, models, failed, a, show=True)
    write(info, models, failed, a, show=False)
    return 0


def write(info, models, failed, a, show: bool) -> None:
    info["loadavg_end"] = [round(v, 2) for v in os.getloadavg()]
    info["elapsed_s"] = round(time.perf_counter() - T0, 1)
    target = {k: rt_report.target(m) for k, m in models.items()}
    data = {"machine": info, "models": models, "target": target, "failed": failed, "quick": a.quick}
    if show:
        rt_report.show(data)
    res = Path(a.results)
    res.mkdir(parents=True, exist_ok=True)
    stem = "issue3_runtimes" + ("_quick" if a.quick else "")
    (res / f"{stem}.json").write_text(json.dumps(data, indent=1, default=str) + "\n", encoding="utf-8")
    (res / f"{stem}.md").write_text(rt_report.markdown(data), encoding="utf-8")
    log(f"wrote {res / stem}.json and .md")


if __name__ == "__main__":
    sys.exit(main())
