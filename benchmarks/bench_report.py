"""Tables for benchmarks/run_all.py: one set of rows, rendered with rich and as markdown."""

from __future__ import annotations

LABELS = {
    "fp32": "fp32",
    "int8": "edgekit int8 (static QDQ, U8S8, reduce_range)",
    "int8-dyn": "ORT quantize_dynamic (defaults)",
    "u8s8-full": "static QDQ U8S8, full 8-bit weights",
    "u8u8": "static QDQ U8U8",
}
SHORT = {"fp32": "fp32", "int8": "edgekit int8", "int8-dyn": "ORT dynamic int8"}
ISA_SHORT = {"u8s8-full": "(a) U8S8 full range", "int8": "(b) U8S8 rr = edgekit int8",
             "u8u8": "(c) U8U8"}
MAIN_ORDER = ("fp32", "int8", "int8-dyn")
ISA_ORDER = ("u8s8-full", "int8", "u8u8")


def _f(v, fmt: str, na: str = "n/a") -> str:
    return na if v is None else format(v, fmt)


def _size_check(c: dict | None) -> str:
    if c is None:
        return "-"
    return f"{'pass' if c['pass'] else 'FAIL'} ({c['size_bytes'] / 2**20:.3f} <= {c['limit_bytes'] / 2**20:.3f})"


def _rounds(r: dict | None) -> str:
    return "-" if not r else f"{r['median']:.2f}x [{r['min']:.2f}-{r['max']:.2f}]"


def main_rows(results: dict) -> tuple[list[str], list[list[str]]]:
    head = ["model", "variant", "size MiB", "int8 size check (MiB)", "top-1", "drop (pts)",
            "p50 ms", "p95 ms", "speed-up p50", "speed-up p95", "per-round speed-up med [min-max]"]
    rows = []
    for m in results["models"].values():
        for key in MAIN_ORDER:
            v = m["variants"][key]
            lat = v.get("latency") or {}
            rows.append([m["name"], SHORT[key], f"{v['size_mb']:.3f}", _size_check(v.get("size_check")),
                         _f(v["accuracy"], ".4f"), _f(v["drop_points"], "+.2f"),
                         _f(lat.get("p50"), ".3f"), _f(lat.get("p95"), ".3f"),
                         _f(v.get("speedup_p50"), ".2f") + "x", _f(v.get("speedup_p95"), ".2f") + "x",
                         _rounds(v.get("speedup_rounds"))])
    return head, rows


def isa_rows(results: dict) -> tuple[list[str], list[list[str]]]:
    head = ["model", "variant", "act/weight", "reduce_range", "top-1", "drop (pts)",
            "agree vs fp32", "max|d| vs fp32", "max|d| kernels vs sim",
            "agree kernels vs sim", "p50 ms", "p95 ms", "speed-up p50", "per-round speed-up med [min-max]"]
    rows = []
    for m in results["models"].values():
        for key in ISA_ORDER:
            v = m["variants"][key]
            q = v.get("quantization") or {}
            vs, sim, lat = v["vs_fp32"], v.get("vs_qdq_sim") or {}, v.get("latency") or {}
            rows.append([m["name"], ISA_SHORT[key], f"{q.get('activation_type', '?')}/{q.get('weight_type', '?')}",
                         str(q.get("reduce_range")), _f(v["accuracy"], ".4f"), _f(v["drop_points"], "+.2f"),
                         f"{vs['top1_agreement']:.4f}", f"{vs['max_abs_diff']:.4f}",
                         _f(sim.get("max_abs_diff"), ".4f"), _f(sim.get("top1_agreement"), ".4f"),
                         _f(lat.get("p50"), ".3f"), _f(lat.get("p95"), ".3f"),
                         _f(v.get("speedup_p50"), ".2f") + "x", _rounds(v.get("speedup_rounds"))])
    return head, rows


def target_rows(results: dict) -> tuple[list[str], list[list[str]]]:
    head = ["target", "measured", "limit", "result"]
    return head, [[t["name"], t["measured"], t["limit"], "pass" if t["pass"] else "FAIL"]
                  for t in results["targets"]]


def rich_tables(results: dict):
    from rich.table import Table
    out = []
    for title, (head, rows) in (
            ("fp32 vs edgekit int8 vs ORT dynamic (x86-avx2, 2 threads, batch 1)", main_rows(results)),
            ("ISA study: static QDQ int8 on AVX2 without VNNI", isa_rows(results)),
            ("targets", target_rows(results))):
        t = Table(title=title, show_lines=False)
        for i, h in enumerate(head):
            t.add_column(h, justify="left" if i < 2 or h in ("target", "result") else "right",
                         overflow="fold")
        for r in rows:
            t.add_row(*[c.replace("FAIL", "[red]FAIL[/]").replace("pass", "[green]pass[/]") for c in r])
        out.append(t)
    return out


def _md_table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(lines)


def markdown(results: dict) -> str:
    m = results["machine"]
    s = results["settings"]
    flags = ", ".join(f"{k}={'yes' if v else 'no'}" for k, v in m["isa_flags"].items())
    parts = [
        "# edgekit benchmark: issue 2, x86-avx2 int8 (fp32 vs int8 vs dynamic; ISA study)", "",
        f"- date: {m['date']}; elapsed {results['elapsed_s']:.0f} s",
        f"- machine: {m['cpu_model']}, {m['cpu_count']} cores; {flags}; load average at start "
        f"{m['loadavg_start']}, at end {m.get('loadavg_end')}",
        f"- onnxruntime {m['versions'].get('onnxruntime')}, torch {m['versions'].get('torch')}, "
        f"onnx {m['versions'].get('onnx')}, Python {m['versions'].get('python')}",
        f"- timing: one process, ORT CPU EP, intra_op 2, inter_op 1, sequential, ORT_ENABLE_ALL; "
        f"warm-up {s['warmup']} runs per variant; interleaved rounds (shuffled order): digits "
        f"{s['digits']['rounds']} x {s['digits']['runs']} runs, ResNet-18 {s['resnet18']['rounds']} x "
        f"{s['resnet18']['runs']} runs per variant; batch 1; nearest-rank percentiles; speed-up = fp32 / variant "
        "(p50 over all samples; per-round: median and range over rounds of fp32 round p50 / variant round p50)",
        "- size check: int8 file <= 1.1 x parameter count bytes + 0.1 MiB (MiB = 2**20 bytes)",
        "- variants: " + "; ".join(f"{SHORT.get(k) or ISA_SHORT[k]}: {v}" for k, v in LABELS.items()),
        "- drop: points of top-1 vs the PyTorch source on the validation set (digits: 360 images)",
        "- ResNet-18: random seeded weights and random inputs/labels, so top-1 is n/a; agreement with "
        "fp32 and max|d| still apply", "",
        "## fp32 vs edgekit int8 vs ORT dynamic", "", _md_table(*main_rows(results)), "",
        "## ISA study (static QDQ, per-channel, MinMax)", "",
        "`kernels vs sim`: the same int8 file run with ORT's int8 kernels "
        "(ORT_ENABLE_ALL) vs with graph optimizations off (ORT_DISABLE_ALL: Q/DQ + float Conv/Gemm, no "
        "int8 kernel). It isolates kernel error (VPMADDUBSW saturation) from quantization error.", "",
        _md_table(*isa_rows(results)), "",
        "## Targets", "", _md_table(*target_rows(results)), "",
    ]
    for note in results.get("notes", []):
        parts.append(f"- {note}")
    return "\n".join(parts).rstrip() + "\n"
