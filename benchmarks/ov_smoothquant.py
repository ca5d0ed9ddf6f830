"""Issue 15: what SmoothQuant does for OpenVINO int8 of the MiniLM classifier. edgekit's
intel-cpu-openvino settings (backends/openvino.int8_settings: NNCF transformer preset, MIXED,
min-max, per-channel; SmoothQuant alpha 0.95 on MatMuls, NNCF's default for transformers) against
the same with SmoothQuant off (alpha -1). Top-1 on the tuning file (debian_sections_calib.jsonl,
also the calibration set) and on the held-out one (debian_sections_val.jsonl, 300 sentences);
latency interleaved, 2 threads, batch 1, sequence 64.
Writes benchmarks/results/ov_smoothquant.json and .md.
Usage: python benchmarks/ov_smoothquant.py [--source build/minilm-debian] [--rounds 10] [--runs 25]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import bench_convert  # noqa: E402
import bench_timing  # noqa: E402
import numpy as np  # noqa: E402
import rt_build  # noqa: E402
from run_all import machine_info, machine_line, save_results  # noqa: E402

TEXT = ROOT / "examples" / "text"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", default=str(ROOT / "build" / "minilm-debian"))
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--runs", type=int, default=25)
    args = ap.parse_args(argv)
    import nncf
    import openvino as ov

    from edgekit.backends.openvino import OpenVinoBackend, _nncf_dataset, _nncf_kwargs, int8_settings
    from edgekit.data import load_data
    from edgekit.source import load
    from edgekit.targets import load_targets
    t0 = time.perf_counter()
    info = machine_info()
    handle = load(args.source)
    target = load_targets(["intel-cpu-openvino"])[0]
    calib = load_data(str(TEXT / "debian_sections_calib.jsonl"), handle, sequence_length=64, role="calibration")
    test = load_data(str(TEXT / "debian_sections_val.jsonl"), handle, sequence_length=64, role="validation")
    work = Path(tempfile.mkdtemp(prefix="ov-sq-"))
    fp = OpenVinoBackend().export(handle, target, work, calib.head(4).inputs)
    src = bench_timing.top1(np.concatenate([handle.runner()(test.sample(i))[0] for i in range(len(test))]), test.labels)
    src_tune = bench_timing.top1(np.concatenate([handle.runner()(calib.sample(i))[0] for i in range(len(calib))]),
                                 calib.labels)
    rows, fns = {}, {}
    for key, alpha in (("SmoothQuant alpha 0.95 (edgekit)", 0.95), ("SmoothQuant off", -1.0)):
        q = int8_settings(target, True)
        q["smooth_quant"] = {"matmul_alpha": alpha}
        with bench_convert.quiet():
            model = nncf.quantize(ov.Core().read_model(str(fp.path)), _nncf_dataset(nncf, calib),
                                  subset_size=len(calib), **_nncf_kwargs(nncf, q))
        xml = work / key.split()[1] / "model.xml"
        xml.parent.mkdir(parents=True, exist_ok=True)
        ov.save_model(model, str(xml), compress_to_fp16=False)
        run = rt_build.runner("openvino", [xml], handle.input_names)
        acc = {name: bench_timing.top1(np.concatenate([np.asarray(run(d.sample(i))) for i in range(len(d))]), d.labels)
               for name, d in (("tuning", calib), ("held_out", test))}
        multiplies = sum(1 for op in model.get_ordered_ops() if op.get_type_name() == "Multiply")
        rows[key] = {"alpha": alpha, "tuning_top1": acc["tuning"], "held_out_top1": acc["held_out"],
                     "held_out_drop_pts": 100 * (src - acc["held_out"]), "tuning_drop_pts": 100 * (src_tune - acc["tuning"]),
                     "multiply_ops": multiplies}
        f = test.sample(0)
        fns[key] = (lambda r=run, f=f: r(f))
    timing = bench_timing.interleaved(fns, rounds=args.rounds, runs=args.runs)
    base = timing["variants"]["SmoothQuant off"]["round_p50_ms"]
    for key, t in timing["variants"].items():
        rows[key].update(p50=t["summary"]["p50"], p95=t["summary"]["p95"],
                         vs_off=statistics.median(a / b for a, b in zip(t["round_p50_ms"], base)))
    res = {"machine": info, "source_held_out_top1": src, "source_tuning_top1": src_tune, "rows": rows,
           "settings": timing["settings"], "command": "python benchmarks/ov_smoothquant.py",
           "elapsed_s": time.perf_counter() - t0}
    lines = [f"# OpenVINO int8 of MiniLM with and without SmoothQuant ({info['date']})", "",
             f"{machine_line(info)}; `{res['command']}`; {res['elapsed_s']:.0f} s; source top-1 held-out {src:.4f}, "
             f"tuning {src_tune:.4f}; 2 threads, batch 1, sequence 64, interleaved rounds.", "",
             "| variant | tuning top-1 | held-out top-1 | held-out drop (pts) | p50 ms | p50 vs off (per-round median) | Multiply ops |",
             "|---|---|---|---|---|---|---|"]
    for k, r in rows.items():
        lines.append(f"| {k} | {r['tuning_top1']:.4f} | {r['held_out_top1']:.4f} | {r['held_out_drop_pts']:+.2f} | "
                     f"{r['p50']:.2f} | {r['vs_off']:.3f}x | {r['multiply_ops']} |")
    save_results("ov_smoothquant", res, "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
