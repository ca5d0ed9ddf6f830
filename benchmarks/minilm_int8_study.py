"""The measurements behind the shipped profiles' [quantization.transformer] tables: ONNX Runtime int8
variants of the MiniLM classifier (examples/text), accuracy on all 300 validation sentences and
interleaved latency.

Variants, each from edgekit's fp32 x86-avx2 export (optimum, ORT basic optimisation, then
onnxruntime.quantization.quant_pre_process, as the backend does), MatMul/Gemm/Gather quantized:
  dynamic     quantize_dynamic, per-tensor 8-bit weights   (x86 profiles' transformer choice)
  dynamic-rr  the same with reduce_range (7-bit weights)
  dynamic-pc  the same with per-channel weights
  ort-default quantize_dynamic with every default (all op types)
  static U8S8 reduce_range min-max QDQ                     (x86-avx2's CNN settings)
  static S8S8 QDQ, min-max / percentile / entropy ranges   (arm64-server; percentile is its choice)
Accuracy of x86 variants: this host's own kernels (AVX2, no VNNI). S8S8 variants: ORT's reference
arithmetic (ORT_DISABLE_ALL), as edgekit evaluates ARM targets on an x86 host. Latency: batch 1,
sequence 64, 2 threads, ORT_ENABLE_ALL, interleaved shuffled rounds (x86-runnable variants only).
Writes benchmarks/results/minilm_int8_study.json and .md.
Usage: python benchmarks/minilm_int8_study.py [--source build/minilm-debian] [--rounds 10] [--runs 20]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import bench_timing  # noqa: E402
import numpy as np  # noqa: E402
from run_all import machine_info  # noqa: E402

TEXT = ROOT / "examples/text"
OPS = ["MatMul", "Gemm", "Gather"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", default=str(ROOT / "build/minilm-debian"))
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--results", type=Path, default=HERE / "results")
    a = ap.parse_args(argv)
    if not (Path(a.source) / "config.json").exists():
        print(f"{a.source}: no fine-tuned MiniLM; build it with `.venv/bin/python examples/text/finetune_minilm.py "
              f"--out {a.source}`", file=sys.stderr)
        return 2
    import onnxruntime as ort
    from onnxruntime import quantization as oq

    from edgekit.backends.onnxruntime import _reader
    from edgekit.convert import convert
    from edgekit.data import load_data
    from edgekit.source import load
    info = machine_info()
    t0 = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="minilm-int8-"))
    handle = load(a.source)
    val = load_data(str(TEXT / "debian_sections_val.jsonl"), handle, sequence_length=64, tokenizer_dir=a.source,
                    role="validation")
    cal = load_data(str(TEXT / "debian_sections_calib.jsonl"), handle, sequence_length=64, tokenizer_dir=a.source,
                    role="calibration")
    fp = convert(handle, ["x86-avx2"], str(TEXT / "debian_sections_calib.jsonl"), str(TEXT / "debian_sections_val.jsonl"),
                 work, precisions=["fp32"], tokenizer=a.source, ignore_budgets=True, progress=False)[0]
    pre = work / "pre.onnx"
    oq.quant_pre_process(str(fp.path / "model.onnx"), str(pre), skip_symbolic_shape=True)
    Q, C = oq.QuantType, oq.CalibrationMethod

    def dyn(out, **kw):
        oq.quantize_dynamic(str(pre), str(out), **kw)

    def static(out, act, method, reduce_range=False, cache=None):
        oq.quantize_static(str(pre), str(out), _reader(oq, cal), quant_format=oq.QuantFormat.QDQ, per_channel=True,
                           calibration_cache_path=cache,
                           reduce_range=reduce_range, activation_type=act, weight_type=Q.QInt8,
                           calibrate_method=method, op_types_to_quantize=OPS,
                           extra_options={"CalibTensorRangeSymmetric": False})

    def _entropy(out):
        from edgekit.backends.onnxruntime import _entropy_ranges
        cache = out.with_suffix(".ranges.json")
        _entropy_ranges(oq, pre, OPS, cal, cache)
        return str(cache)

    builds = {
        "dynamic": (lambda o: dyn(o, per_channel=False, reduce_range=False, op_types_to_quantize=OPS), False),
        "dynamic-rr": (lambda o: dyn(o, per_channel=False, reduce_range=True, op_types_to_quantize=OPS), False),
        "dynamic-pc": (lambda o: dyn(o, per_channel=True, reduce_range=False, op_types_to_quantize=OPS), False),
        "ort-default": (lambda o: dyn(o), False),
        "static U8S8 rr minmax": (lambda o: static(o, Q.QUInt8, C.MinMax, reduce_range=True), False),
        "static S8S8 minmax": (lambda o: static(o, Q.QInt8, C.MinMax), True),
        "static S8S8 percentile": (lambda o: static(o, Q.QInt8, C.Percentile), True),
        # quantize_static's own entropy calibrator (128 bins, 128 quantized bins: one KL candidate,
        # the full range, i.e. min-max) and edgekit's (2048 bins, backends/onnxruntime._entropy_ranges)
        "static S8S8 entropy (quantize_static, 128 bins)": (lambda o: static(o, Q.QInt8, C.Entropy), True),
        "static S8S8 entropy (2048 bins)": (lambda o: static(o, Q.QInt8, C.Entropy, cache=_entropy(o)), True),
    }
    paths = {"fp32": (fp.path / "model.onnx", False)}
    for name, (build, ref) in builds.items():
        out = work / (name.replace(" ", "_") + ".onnx")
        print(f"[{time.perf_counter() - t0:5.0f}s] quantize {name}", flush=True)
        build(out)
        paths[name] = (out, ref)

    def session(path, reference):
        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads, so.log_severity_level = 2, 1, 3
        if reference:
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])

    rows, fns = {}, {}
    for name, (path, ref) in paths.items():
        s = session(path, ref)
        names = [i.name for i in s.get_inputs()]
        pred = np.array([s.run(None, {n: val.sample(i)[n] for n in names})[0].argmax(-1)[0] for i in range(len(val))])
        acc = float(np.mean(pred == val.labels))
        rows[name] = {"accuracy": acc, "arithmetic": "ORT reference (ORT_DISABLE_ALL)" if ref else "this host's kernels",
                      "size_mb": path.stat().st_size / 2**20}
        print(f"[{time.perf_counter() - t0:5.0f}s] {name}: top-1 {acc:.4f}", flush=True)
        if not ref:
            feed = {n: val.sample(0)[n] for n in names}
            fns[name] = (lambda s=s, f=feed: s.run(None, f))
    timing = bench_timing.interleaved(fns, rounds=a.rounds, runs=a.runs, warmup=10)
    src = rows["fp32"]["accuracy"]
    for name, r in rows.items():
        r["drop_points"] = (src - r["accuracy"]) * 100
        if name in fns:
            t, d = timing["variants"][name], timing["variants"]["dynamic"]
            r["p50_ms"] = t["summary"]["p50"]
            r["speed_vs_dynamic_rounds"] = statistics.median(x / y for x, y in zip(d["round_p50_ms"], t["round_p50_ms"]))
    info["elapsed_s"] = round(time.perf_counter() - t0, 1)
    data = {"machine": info, "rows": rows, "timing": {"rounds": a.rounds, "runs": a.runs, "threads": 2}}
    a.results.mkdir(parents=True, exist_ok=True)
    (a.results / "minilm_int8_study.json").write_text(json.dumps(data, indent=1) + "\n")
    lines = [f"# MiniLM int8 settings ({info['date']})", "",
             f"{info['cpu_model']}, {info['cpu_count']} cores, load {info['loadavg_start']}; "
             "`.venv/bin/python benchmarks/minilm_int8_study.py`; 300 validation sentences, batch 1 / seq 64, 2 threads", "",
             "| variant | top-1 | drop (pts) | arithmetic | p50 ms | dynamic / this (per-round median) | size MB |",
             "|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['accuracy']:.4f} | {r['drop_points']:+.2f} | {r['arithmetic']} | "
                     f"{r.get('p50_ms', float('nan')):.2f} | {r.get('speed_vs_dynamic_rounds', float('nan')):.2f}x | "
                     f"{r['size_mb']:.1f} |")
    (a.results / "minilm_int8_study.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
