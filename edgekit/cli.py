"""`edgekit` command line: a thin layer over the Python API.

Every EdgekitError becomes one line on stderr and exit code 2; `gate` exits 1 when a budget fails
and 3 when a baseline comparison is inconclusive (docs/TRUST.md).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ._version import __version__
from .errors import EdgekitError


def _console():
    from .progress import console
    return console()


_SHORT = {"latency_p95_ms": ("p95", "ms"), "peak_memory_mb": ("mem", "MB"), "model_size_mb": ("size", "MB"),
          "max_accuracy_drop": ("drop", ""), "max_class_accuracy_drop": ("class drop", ""),
          "load_time_ms": ("load", "ms"), "min_cosine_similarity": ("cos", ""), "min_recall_at_10": ("R@10", "")}



def cmd_targets(args) -> int:
    from .targets import available, load_target
    from .tasks import task_budgets  # the task budgets are floors (>=), the shared ones ceilings (<=)
    profiles = [load_target(p) for p in available().values()]
    if args.json:
        print(json.dumps([p.to_dict() for p in profiles], indent=2))
        return 0
    from rich.table import Table
    t = Table(title="edgekit target profiles")
    for col in ("name", "arch", "runtime", "device", "precision", "threads", "budgets"):
        t.add_column(col)
    for p in profiles:
        b = " ".join(f"{_SHORT[k][0]}{'≥' if k in task_budgets() else '≤'}{v:g}{_SHORT[k][1]}"
                     for k, v in vars(p.budget).items() if v is not None)
        t.add_row(p.name, p.arch, p.runtime, p.device, p.precision, str(p.threads), b)
    _console().print(t)
    return 0


def cmd_convert(args) -> int:
    from .convert import ConversionFailed
    try:
        results = _convert(args)
    except ConversionFailed as exc:
        _convert_table(args, exc.results)
        raise
    _convert_table(args, results)
    return 0


def _convert(args):
    from .convert import convert
    return convert(args.source, args.target or [], args.calibration, args.validation, args.out,
                   precisions=args.precision, targets_dir=args.targets, license=args.license,
                   provenance=args.provenance, sequence_length=args.sequence_length,
                   tokenizer=args.tokenizer, label=args.label, ignore_budgets=args.ignore_budgets,
                   recipe=args.recipe, train=args.train, task=args.task, test=args.test)


def _convert_table(args, results) -> None:
    from rich.table import Table
    t = Table(title=f"edgekit convert -> {args.out}")
    for col in ("bundle", "precision", "size MB", "quality (dev)", "source", "drop",
                "parity (max abs / top-1)", "accuracy control"):
        t.add_column(col)
    for r in results:
        par = "; ".join(f"{p['stage']} {p['max_abs_diff']:.2g}/{p['top1_agreement']:.3f}" for p in r.parity)
        # quality: top-1 for classifiers, mean cosine to the source's embeddings for feature extractors
        what = {"embedding": "cos ", "token_agreement": "agree "}.get(r.metric, "")
        t.add_row(r.name, r.precision, f"{r.size_mb:.3f}", f"{what}{r.accuracy:.4f}", f"{what}{r.source_accuracy:.4f}",
                  f"{r.accuracy_drop:+.4f}", par, r.accuracy_control)
    _console().print(t)


def cmd_bench(args) -> int:
    from .bench import bench, summary_row
    report = bench(args.bundle, args.out, runs=args.runs, warmup=args.warmup, min_seconds=args.min_seconds,
                   warmup_seconds=args.warmup_seconds, trials=args.trials, threads=args.threads,
                   pubkey=args.pubkey, sign_key=args.sign_key)
    row = summary_row(report)
    out = args.out or str(Path(args.bundle) / "report.json")
    acc = "n/a" if row["accuracy"] is None else f"{row['accuracy']:.4f}"
    q = report.get("quality")
    if q:  # feature extraction: the embedding geometry first; accuracy is then k-NN top-1
        acc = (f"cosine {q['mean_cosine']:.4f} (p5 {q['p5_cosine']:.4f}), recall@10 {q['recall_at_10']:.4f}, "
               f"k-NN top-1 {acc}")
    g = report.get("generation")
    if g:  # text generation: time to first token and tokens/s, not one call's latency
        gq = g.get("quality") or {}
        quality = (f"perplexity {gq['perplexity']:.3f} (source {gq['source_perplexity']:.3f}, "
                   f"{100 * gq['perplexity_increase']:+.2f}%), agreement {gq['token_agreement']:.4f}" if gq else "quality n/a")
        print(f"{row['bundle']}: TTFT p50 {g['ttft_ms']['p50']:.1f} ms (p95 {g['ttft_ms']['p95']:.1f}) at "
              f"{g['prompt_tokens']} tokens, decode {g['decode_tokens_per_s']['p50']:.1f} tokens/s "
              f"(p5 {g['decode_tokens_per_s']['p5']:.1f}), peak {row['peak_mb']:.1f} MB at "
              f"{g['full_context']['tokens']} tokens, size {row['size_mb']:.3f} MB, {quality}, self-check "
              f"{'pass' if report['self_check']['passed'] else 'FAIL'} -> {out}")
        return 0
    print(f"{row['bundle']}: p50 {row['p50_ms']:.3f} ms, p95 {row['p95_ms']:.3f} ms, peak {row['peak_mb']:.1f} MB, "
          f"size {row['size_mb']:.3f} MB, accuracy {acc}, self-check "
          f"{'pass' if report['self_check']['passed'] else 'FAIL'} -> {out}")
    return 0


def cmd_gate(args) -> int:
    from .gate import gate, render_table
    result = gate(args.reports)
    _console().print(render_table(result))
    if args.markdown:
        from .report.markdown import to_markdown
        Path(args.markdown).write_text(to_markdown(result), encoding="utf-8")
    if args.junit:
        from .report.junit import to_junit
        Path(args.junit).write_text(to_junit(result), encoding="utf-8")
    print(f"verdict: {result.verdict}")
    return result.exit_code


def cmd_serve(args) -> int:
    """The bundle's model server (edgekit/server/run.py, the copy every bundle carries as server/)."""
    from .bundle import SERVER_DIR
    import importlib.util
    spec = importlib.util.spec_from_file_location("_edgekit_server_run", SERVER_DIR / "run.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    argv = ["--bundle", args.bundle, "--host", args.host, "--port", str(args.port),
            "--max-batch-size", str(args.max_batch_size), "--max-queue-delay-ms", str(args.max_queue_delay_ms),
            "--max-queue", str(args.max_queue), "--max-request-bytes", str(args.max_request_bytes),
            "--timeout-s", str(args.timeout_s)]
    if args.pubkey:
        argv += ["--pubkey", args.pubkey]
    if args.threads:
        argv += ["--threads", str(args.threads)]
    return mod.main(argv)


def cmd_package(args) -> int:
    from .package import package
    r = package(args.bundle, args.out, args.arch, args.base)
    print(f"{r['image']}: OCI image archive, {', '.join('linux/' + a for a in r['arches'])}, {r['size_mb']:.1f} MiB "
          f"({', '.join(f'{a} {m:.1f} MiB' for a, m in r['per_arch_mb'].items())}), sha256 {r['sha256'][:16]}..."
          + (f", budget max_image_mb {r['max_image_mb']:g}" if r.get("max_image_mb") is not None else ""))
    return 0


def cmd_demo(args) -> int:
    from .demo import run_demo
    return run_demo(Path(args.out), quick=not args.full)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edgekit", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=f"edgekit {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("targets", help="list the shipped target profiles")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(func=cmd_targets)

    s = sub.add_parser("convert", help="convert a source model into one bundle per target")
    s.add_argument("source", help="model.pt2 | model.onnx | HF model dir | file.py:factory | package.module:factory "
                   "| model.gguf (text generation)")
    s.add_argument("--target", action="append", help="profile name or .toml path (repeatable)")
    s.add_argument("--targets", metavar="DIR", help="every .toml profile in DIR")
    s.add_argument("--calibration", required=True, help="calibration data (.npz, .jsonl, image folder; text "
                   "generation: .txt or .jsonl text)")
    s.add_argument("--validation", required=True,
                   help="validation data (same formats); labelled for classifiers, labels optional for "
                        "feature extractors (k-NN top-1). Every choice (accuracy back-off, recipe stages) "
                        "is judged on it; without --test, on one half of it (stratified) and the reported "
                        "drop on the other half")
    s.add_argument("--test", metavar="DATA",
                   help="held-out data (same format as --validation) no choice sees: the reported drop, the "
                        "bundle's validation set and so the gate's accuracy figure")
    from .source import TASK_NAMES
    s.add_argument("--task", choices=TASK_NAMES + ("text-generation",),
                   help="what the model is for (default: detected from the source: a HF head or none, a "
                        "factory's edgekit_task attribute, an ONNX output named 'embedding')")
    s.add_argument("--out", required=True, help="output folder; bundles land in OUT/<bundle name>/")
    s.add_argument("--precision", action="append", choices=["fp32", "fp16", "int8", "int8-dynamic"],
                   help="override the profile's precision (repeatable: one bundle each, named <target>-<precision>)")
    s.add_argument("--license", default="unknown", help="SPDX licence id of the model (recorded in the manifest)")
    s.add_argument("--provenance", default="unknown", help="where the model and its data come from")
    s.add_argument("--sequence-length", type=int, help="text models: tokenizer max length (default: the profile's)")
    s.add_argument("--tokenizer", help="tokenizer directory for JSONL data when the source is not a HF directory")
    s.add_argument("--label", help="a version label recorded in the manifest")
    s.add_argument("--recipe", metavar="FILE", help="compression recipe (TOML): distillation / pruning stages "
                                                   "run once before export (docs/COMPRESS.md)")
    s.add_argument("--train", metavar="DATA", help="training data for the recipe's stages (same formats)")
    s.add_argument("--ignore-budgets", action="store_true",
                   help="convert even what cannot fit the profile's size/memory budgets (e.g. an fp32 baseline); "
                        "the gate still judges the device's report")
    s.set_defaults(func=cmd_convert)

    s = sub.add_parser("bench", help="run a bundle's harness here in a fresh process; writes report.json")
    s.add_argument("bundle")
    s.add_argument("--out", help="report path (default BUNDLE/report.json)")
    s.add_argument("--runs", type=int, help="timed runs per trial (default 300)")
    s.add_argument("--warmup", type=int, help="warm-up runs (default 10)")
    s.add_argument("--min-seconds", type=float, help="minimum timed seconds per trial (default 10)")
    s.add_argument("--warmup-seconds", type=float, help="minimum warm-up seconds (default 2)")
    s.add_argument("--trials", type=int, help="fresh processes (default 3)")
    s.add_argument("--threads", type=int, help="override the profile's threads")
    s.add_argument("--pubkey", metavar="KEY", help="require manifest.sig to verify with this public key (PREFIX.pub)")
    s.add_argument("--sign-key", metavar="KEY", help="the harness signs its report with this device private key "
                   "(PREFIX.key from edgekit keygen) for `edgekit gate --device-pubkey PREFIX.pub`; local runs only")
    s.set_defaults(func=cmd_bench)

    s = sub.add_parser("gate", help="check reports against their targets' budgets; exit 0 pass, 1 fail, 2 bad input, "
                                    "3 inconclusive (--baseline)")
    s.add_argument("reports", nargs="+")
    s.add_argument("--markdown", metavar="FILE", help="write a Markdown summary (PR comment / CI step summary)")
    s.add_argument("--junit", metavar="FILE", help="write JUnit XML (one testcase per budget)")
    s.set_defaults(func=cmd_gate)

    s = sub.add_parser("serve", help="serve a bundle over HTTP: Open Inference Protocol v2, OpenAI completions, /metrics")
    s.add_argument("bundle")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--pubkey", metavar="KEY", help="refuse to start unless manifest.sig verifies with this key")
    s.add_argument("--max-batch-size", type=int, default=8, help="requests per model call (dynamic batching)")
    s.add_argument("--max-queue-delay-ms", type=float, default=2.0, help="longest wait for a batch to fill")
    s.add_argument("--max-queue", type=int, default=64, help="requests waiting; beyond: 429 + Retry-After")
    s.add_argument("--max-request-bytes", type=int, default=1 << 20, help="larger bodies: 413")
    s.add_argument("--timeout-s", type=float, default=30.0, help="per-request deadline (504), and the SIGTERM drain")
    s.add_argument("--threads", type=int, help="override the profile's threads")
    s.set_defaults(func=cmd_serve)

    s = sub.add_parser("package", help="pack a bundle and its server into a multi-arch OCI image archive (no daemon)")
    s.add_argument("bundle")
    s.add_argument("--out", required=True, help="image archive to write (oci-archive tar)")
    s.add_argument("--arch", action="append", choices=["amd64", "arm64"], help="architecture (repeatable; default amd64)")
    s.add_argument("--base", default="debian-slim", help="base root: debian-slim (Debian 12 packages)")
    s.set_defaults(func=cmd_package)

    s = sub.add_parser("demo", help="train a digits CNN, convert for both x86 targets (fp32, int8), bench and gate")
    s.add_argument("--out", default="build/demo")
    s.add_argument("--full", action="store_true", help="use the harness's full default measurement (slower)")
    s.set_defaults(func=cmd_demo)

    # Command groups that live beside their stage: each module has register(subparsers).
    import importlib
    for module in _COMMAND_MODULES:
        importlib.import_module(module).register(sub)
    return p


_COMMAND_MODULES = ("edgekit.devices.commands", "edgekit.trust.commands", "edgekit.search.commands")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except EdgekitError as exc:
        print(f"edgekit: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("edgekit: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
