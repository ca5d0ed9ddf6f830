"""Issue 15: does quantization-aware fine-tuning help, or only the extra epochs? The pruned MiniLM
student (examples/recipes/minilm_distill_prune_vocab_qat.toml: the prune stage's fine-tuning is
followed by qat_epochs = 2) converted for x86-avx2 twice: as the recipe says, and with
distill.fake_quant replaced by a no-op (the same two epochs at the same rate, in float). Held-out
top-1 of the fp32 and int8 bundles on debian_sections_val.jsonl (300 sentences), every choice judged
on debian_sections_calib.jsonl, as in transformer_int8.py.
The control writes to its own stage cache (work/qat_control_cache): its prune stage has the same
hyperparameters as the real one and must never be served in its place.
Writes benchmarks/results/qat_control.json and .md.
Usage: python benchmarks/qat_control.py [--source build/minilm-debian]
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from run_all import machine_info, machine_line, save_results  # noqa: E402

TEXT = ROOT / "examples" / "text"
RECIPE = ROOT / "examples" / "recipes" / "minilm_distill_prune_vocab_qat.toml"


def one(source: str, work: Path, cache: Path) -> dict:
    from edgekit.convert import convert
    rf, r = convert(source, ["x86-avx2"], str(TEXT / "debian_sections_calib.jsonl"),
                    str(TEXT / "debian_sections_calib.jsonl"), work, test=str(TEXT / "debian_sections_val.jsonl"),
                    recipe=str(RECIPE), train=str(TEXT / "debian_sections_train.jsonl"), progress=False,
                    ignore_budgets=True, stage_cache=cache, precisions=["fp32", "int8"])
    return {"fp32": rf.accuracy, "int8": r.accuracy, "source": r.source_accuracy, "size_mb": r.size_mb,
            "int8_drop_pts": 100 * (r.source_accuracy - r.accuracy)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", default=str(ROOT / "build" / "minilm-debian"))
    args = ap.parse_args(argv)
    import shutil

    import edgekit.compress.distill as distill
    t0 = time.perf_counter()
    work = HERE / "work" / "qat_control"
    shutil.rmtree(work, ignore_errors=True)
    rows = {"qat_epochs = 2 (fake-quantized)": one(args.source, work / "qat", HERE / "work" / "stage_cache")}
    real = distill.fake_quant
    distill.fake_quant = lambda model: contextlib.nullcontext(model)
    try:
        rows["the same 2 epochs in float (control)"] = one(args.source, work / "control",
                                                           HERE / "work" / "qat_control_cache")
    finally:
        distill.fake_quant = real
    res = {"machine": machine_info(), "recipe": str(RECIPE.relative_to(ROOT)), "rows": rows,
           "command": "python benchmarks/qat_control.py", "elapsed_s": time.perf_counter() - t0}
    lines = [f"# Quantization-aware epochs against the same epochs in float ({res['machine']['date']})", "",
             f"{machine_line(res['machine'])}; `{res['command']}`; {res['elapsed_s']:.0f} s; recipe {res['recipe']}; "
             "held-out examples/text/debian_sections_val.jsonl (300 sentences), x86-avx2.", "",
             "| variant | held-out top-1 fp32 | int8 | int8 drop (pts) | size MB |", "|---|---|---|---|---|"]
    for k, r in rows.items():
        lines.append(f"| {k} | {r['fp32']:.4f} | {r['int8']:.4f} | {r['int8_drop_pts']:+.2f} | {r['size_mb']:.2f} |")
    save_results("qat_control", res, "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
