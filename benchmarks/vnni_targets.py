"""The VNNI profiles (x86-vnni, intel-cpu-openvino) beside x86-avx2, measured on THIS host, with the
host's ISA in every row (issue 11, item 2).

The x86-vnni and intel-cpu-openvino profiles target CPUs with AVX512_VNNI / AVX-VNNI. Their int8
bundles only show their real speed and accuracy on such a CPU: without VNNI, ONNX Runtime's u8s8
kernels saturate (FIELD_NOTES trap 1) and OpenVINO's int8 runs slower than its fp32. So this script
records which host it ran on and appends its rows to benchmarks/results/vnni_targets.json keyed by
the host's CPU model and ISA: run it on an AVX2 host and on a VNNI host, and both sets of rows stand
side by side in benchmarks/results/vnni_targets.md.

    .venv/bin/python benchmarks/vnni_targets.py                      # digits CNN, every profile
    .venv/bin/python benchmarks/vnni_targets.py --minilm build/minilm-debian   # + the MiniLM classifier

Each bundle is converted with the shipped profile, benchmarked by its own harness in fresh processes
(runs/trials below), and gated; threads = min(profile threads, this host's cores), since 4 threads
on a 2-core host oversubscribe (measured: x86-vnni p50 27 ms at 4 threads vs 9.5 ms at 2).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
PROFILES = ("x86-avx2", "x86-vnni", "intel-cpu-openvino")


def host() -> dict:
    from edgekit.harness._ek_probe import cpu_info
    info = cpu_info()
    flags = info["cpu_flags"]
    return {"cpu_model": info["cpu_model"], "cpu_flags": flags, "cores": os.cpu_count(),
            "vnni": any(f in flags for f in ("avx512_vnni", "avx_vnni", "amx")),
            "key": f"{info['cpu_model']} [{' '.join(flags)}]"}


def measure(name: str, source: str, calibration: str, validation: str, work: Path, args, extra: dict) -> list[dict]:
    from edgekit.bench import bench, summary_row
    from edgekit.convert import convert
    from edgekit.gate import gate
    from edgekit.targets import load_target

    rows = []
    for profile in PROFILES:
        target = load_target(profile)
        threads = min(target.threads, os.cpu_count() or 1)
        results = convert(source, [profile], calibration, validation, work / name, progress=False, **extra)
        for r in results:
            report_path = work / "reports" / f"{name}-{r.name}.json"
            report = bench(r.path, report_path, runs=args.runs, warmup=20, min_seconds=args.seconds,
                           warmup_seconds=0.5, trials=args.trials, threads=threads)
            verdict = gate([report_path])
            row = summary_row(report)
            manifest = json.loads((r.path / "manifest.json").read_text())
            rows.append({
                "model": name, "profile": profile, "runtime": target.runtime, "precision": r.precision,
                "threads": threads, "size_mb": round(r.size_mb, 3),
                "accuracy_dev": round(r.accuracy, 4), "source_accuracy": round(r.source_accuracy, 4),
                "accuracy_harness": row["accuracy"], "p50_ms": round(row["p50_ms"], 3),
                "p95_ms": round(row["p95_ms"], 3), "peak_mb": round(row["peak_mb"], 1),
                "dev_arithmetic": manifest["host"]["note"],
                "gate": verdict.verdict,
                "gate_detail": "; ".join(f"{c.budget}: {c.status}" for c in verdict.checks if c.status != "pass"),
            })
            print(f"{name} {profile}: p50 {row['p50_ms']:.3f} ms, acc {row['accuracy']}, gate {verdict.verdict}",
                  flush=True)
    return rows


def render(runs: dict) -> str:
    lines = ["# VNNI profiles beside x86-avx2, per host", "",
             "Command: `.venv/bin/python benchmarks/vnni_targets.py [--minilm build/minilm-debian]` "
             "(appends this host's rows). Host ISA in every row: a profile's figures are its target's "
             "only where the host has the profile's ISA (`host has VNNI`).", ""]
    cols = ["host", "host has VNNI", "model", "profile", "runtime", "precision", "threads", "size MB",
            "top-1 dev", "top-1 harness", "p50 ms", "p95 ms", "peak MB", "gate", "not passed"]
    lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for key, run in sorted(runs.items()):
        for r in run["rows"]:
            lines.append("| " + " | ".join(str(v) for v in (
                key, "yes" if run["host"]["vnni"] else "no", r["model"], r["profile"], r["runtime"],
                r["precision"], r["threads"], r["size_mb"], r["accuracy_dev"], r["accuracy_harness"],
                r["p50_ms"], r["p95_ms"], r["peak_mb"], r["gate"], r["gate_detail"] or "-")) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minilm", help="a fine-tuned MiniLM classifier directory (examples/text/finetune_minilm.py)")
    p.add_argument("--runs", type=int, default=300)
    p.add_argument("--seconds", type=float, default=3.0, help="minimum timed seconds per trial")
    p.add_argument("--trials", type=int, default=3)
    p.add_argument("--work", default=str(HERE / "work" / "vnni"))
    args = p.parse_args(argv)
    from edgekit.demo import write_example

    work = Path(args.work)
    h = host()
    print(f"host: {h['key']} ({h['cores']} cores); VNNI: {'yes' if h['vnni'] else 'no'}", flush=True)
    ex = write_example(work / "digits")
    rows = measure("digits-cnn", str(ex["model"]), str(ex["calibration"]), str(ex["validation"]), work, args,
                   {"license": "MIT", "provenance": "edgekit digits example"})
    if args.minilm:
        text = HERE.parent / "examples" / "text"
        rows += measure("minilm-debian", args.minilm, str(text / "debian_sections_calib.jsonl"),
                        str(text / "debian_sections_val.jsonl"), work, args,
                        {"license": "Apache-2.0", "provenance": "examples/text/DATA_CARD.md"})
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "vnni_targets.json"
    runs = json.loads(path.read_text()) if path.exists() else {}
    runs[h["key"]] = {"host": h, "python": sys.version.split()[0], "rows": rows}
    # written whole to a temporary file, then renamed: an interrupted run leaves the old results
    with tempfile.NamedTemporaryFile("w", dir=RESULTS, delete=False, suffix=".tmp") as f:
        json.dump(runs, f, indent=1)
    os.replace(f.name, path)
    (RESULTS / "vnni_targets.md").write_text(render(runs), encoding="utf-8")
    print(render(runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
