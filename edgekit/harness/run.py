#!/usr/bin/env python3
"""edgekit device-side benchmark harness: verify a bundle, check it, measure it, write report.json.

    python harness/run.py [--bundle DIR] [--out REPORT] [--runs N] [--warmup N] [--min-seconds S]
                          [--warmup-seconds S] [--trials K] [--threads N] [--skip-accuracy] [--quiet]
                          [--pubkey BUNDLE.pub] [--sign-key DEVICE.key]

Needs only the Python stdlib, numpy and the bundle's runtime (onnxruntime, openvino or
ai-edge-litert); it never imports edgekit, torch, rich or scipy, so it runs on a bare device
(`cryptography` only with --sign-key, to sign the report with the device's key).
The protocol is HARNESS_SPEC.md, the bundle and report formats are docs/FORMATS.md (edgekit repo):
  1. verify the sha256 of every file the manifest lists;
  2. self-check: run the bundled samples, compare with the dev machine's outputs;
  3. trials, each in a fresh process: cold start, warm-up, timed runs, peak memory;
  4. accuracy on the bundled validation set;
  5. statistics, environment, and the report, written atomically (signed with --sign-key).
Exit 0: report written (even when the self-check failed: it says passed false). Exit 2: the bundle
is bad or the runtime is missing (one line on stderr). Exit 3: a trial process crashed.
"""

from __future__ import annotations

import sys

# Bundles may sit on read-only or space-starved storage; never write __pycache__ beside run.py.
sys.dont_write_bytecode = True

import argparse  # noqa: E402
import os  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))  # sibling modules are _ek_*.py, prefixed to avoid name clashes

try:
    import numpy as np  # noqa: E402
except ImportError:
    sys.stderr.write("harness: error: numpy is not installed on this device: pip install numpy\n")
    sys.exit(2)

import _ek_bundle as B  # noqa: E402
import _ek_metrics as M  # noqa: E402
import _ek_stats as S  # noqa: E402
from _ek_probe import environment, temperature_c  # noqa: E402
from _ek_runtime import open_adapter  # noqa: E402
from _ek_trial import MAX_RUNS_PER_TRIAL, emit, spawn_trial, trial_main  # noqa: E402

HARNESS_VERSION = "1"


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, like every other harness error, instead of usage + error
        self.exit(2, f"harness: error: {message} (see --help)\n")


def parse_args(argv=None) -> argparse.Namespace:
    p = _Parser(prog="run.py", description="edgekit device-side benchmark harness")
    p.add_argument("--bundle", type=Path, help="bundle directory (default: the parent of harness/)")
    p.add_argument("--out", type=Path, help="report path (default: <bundle>/report.json)")
    p.add_argument("--runs", type=int, help="fewest timed runs per trial (300; text generation: 5 generations)")
    p.add_argument("--warmup", type=int, help="fewest warm-up runs per trial (10; text generation: 1)")
    p.add_argument("--min-seconds", type=float, default=10.0, help="fewest timed seconds per trial (10; "
                   "text generation: the runs alone)")
    p.add_argument("--warmup-seconds", type=float, default=2.0, help="fewest warm-up seconds (2)")
    p.add_argument("--trials", type=int, default=3, help="trials, each in a fresh process (3)")
    p.add_argument("--threads", type=int, help="runtime threads (default: manifest runtime_settings)")
    p.add_argument("--skip-accuracy", action="store_true", help="do not run the validation set")
    p.add_argument("--skip-robustness", action="store_true", help="do not run the robustness suite")
    p.add_argument("--pubkey", type=Path, help="Ed25519 public key (PEM): refuse a bundle whose manifest.sig "
                   "does not verify with it (edgekit convert --sign)")
    p.add_argument("--sign-key", type=Path, metavar="KEY", help="the device's Ed25519 private key (PEM, from "
                   "edgekit keygen): sign the report with it, for edgekit gate --device-pubkey (needs the "
                   "cryptography package)")
    p.add_argument("--log-field", type=Path, metavar="DIR", help="log the validation run's inputs and outputs "
                   "to a bounded rolling JSONL log in DIR (for edgekit drift)")
    p.add_argument("--log-max-mb", type=float, default=16.0, help="size bound of the --log-field log (16 MiB)")
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")
    p.add_argument("--_trial", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    for name, low in (("runs", 1), ("warmup", 0), ("trials", 1), ("threads", 1)):
        v = getattr(a, name)
        if v is not None and v < low:
            p.error(f"--{name} must be >= {low}, got {v}")
    for name in ("min_seconds", "warmup_seconds"):
        v = getattr(a, name)
        if not v >= 0.0 or v == float("inf"):
            p.error(f"--{name.replace('_', '-')} must be a finite number >= 0, got {v}")
    if not a.log_max_mb > 0.0 or a.log_max_mb == float("inf"):
        p.error(f"--log-max-mb must be a finite number > 0, got {a.log_max_mb}")
    return a


def _threads(args, manifest: dict) -> int:
    if args.threads:
        return args.threads
    for section in (manifest.get("runtime_settings"), manifest.get("target")):
        v = (section or {}).get("threads")
        if isinstance(v, int) and v >= 1:
            return v
    return 1


def _num(section: dict, key: str, default: float, where: str, bundle: Path) -> float:
    v = section.get(key, default)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise B.BundleError(f"{bundle / 'manifest.json'}: '{where}.{key}' is not a number ({v!r})")
    return float(v)


def self_check(adapter, bundle: Path, manifest: dict) -> dict:
    """Step 2: every bundled sample at batch 1 against "expected.*" and "reference.*"."""
    sc = manifest.get("selfcheck") or {}
    path = bundle / (sc.get("file") or "samples.npz")
    arrays = B.load_npz(path)
    inputs = B.input_arrays(arrays, manifest, path)
    n = B.n_samples(inputs)
    outs = adapter.output_names
    expected = {o: arrays[f"expected.{o}"] for o in outs if f"expected.{o}" in arrays}
    reference = {o: arrays[f"reference.{o}"] for o in outs if f"reference.{o}" in arrays}
    if not expected:
        raise B.BundleError(f"{path}: no 'expected.<output>' array for any of {outs}")
    for key, arr in list(expected.items()) + list(reference.items()):
        if arr.shape[0] != n:
            raise B.BundleError(f"{path}: {key} arrays hold {arr.shape[0]} samples, inputs {n}")
    check = S.SelfCheck(_num(sc, "atol", 1e-4, "selfcheck", bundle),
                        _num(sc, "rtol", 1e-3, "selfcheck", bundle),
                        _num(sc, "min_top1_agreement", 1.0, "selfcheck", bundle))
    for i in range(n):
        got = adapter.run(B.batch(inputs, i))
        check.add(got, {k: v[i:i + 1] for k, v in expected.items()},
                  {k: v[i:i + 1] for k, v in reference.items()}, outs[0])
    return check.result()


def accuracy(adapter, bundle: Path, manifest: dict, field_log=None) -> tuple[dict, dict | None]:
    """Step 4: the exact artifact on every validation sample, at batch 1; returns (accuracy section,
    quality section or None). The task (manifest model.task) decides the figures: classifiers get
    top-1 against the labels; feature extractors get the embedding geometry against the source's
    embeddings (reference.<output>: cosine, recall@k; _ek_metrics.py) and, with labels, 1-NN top-1."""
    val = manifest.get("validation") or {}
    src = manifest.get("source") or {}
    task = (manifest.get("model") or {}).get("task") or "classification"
    path = bundle / (val.get("file") or "validation.npz")
    if not val and not path.is_file():
        out = S.accuracy_section([], np.zeros(0), src.get("accuracy"))
        out.update({"value": None, "skipped": True, "reason": "bundle has no validation set"})
        return out, None
    arrays = B.load_npz(path)
    inputs = B.input_arrays(arrays, manifest, path)
    n = B.n_samples(inputs)
    labels = arrays["labels"].reshape(-1) if "labels" in arrays else None
    sections = TASK_SECTIONS.get(task)
    if sections is None:
        raise B.BundleError(f"{bundle / 'manifest.json'}: model.task {task!r} is not one this harness "
                            f"knows ({', '.join(TASK_SECTIONS)})")
    if labels is not None and labels.shape[0] != n:
        raise B.BundleError(f"{path}: {labels.shape[0]} labels for {n} samples")
    first = adapter.output_names[0]
    outs = []
    for i in range(n):
        x = B.batch(inputs, i)
        got = adapter.run(x)
        if field_log is not None:  # --log-field: _ek_fieldlog.py
            field_log.log(x, got)
        outs.append(np.asarray(got[first]))
    return sections(outs, labels, arrays.get(f"reference.{first}"), src, path)


def _classification_sections(outs, labels, reference, src: dict, path: Path) -> tuple[dict, None]:
    if labels is None:
        raise B.BundleError(f"{path}: no 'labels' array")
    out = S.accuracy_section([int(S.top1(o)[0]) for o in outs], labels, src.get("accuracy"))
    out["skipped"] = False
    return out, None


def _embedding_sections(outs, labels, reference, src: dict, path: Path) -> tuple[dict, dict]:
    if reference is None:
        raise B.BundleError(f"{path}: no 'reference.<output>' array (the source's embeddings to compare with)")
    n = len(outs)
    emb = np.concatenate([o.reshape(1, -1) for o in outs])
    quality = M.embedding_quality(emb, np.asarray(reference).reshape(n, -1), labels)
    source_knn = (src.get("quality") or {}).get("knn_top1")
    if labels is None:
        return {"metric": "knn_top1", "n": n, "value": None, "source_value": None, "drop": None,
                "skipped": True, "reason": "unlabelled feature-extraction set: see quality"}, quality
    value = quality["knn_top1"]
    return {"metric": "knn_top1", "n": n, "value": value, "source_value": source_knn,
            "drop": None if source_knn is None else round(source_knn - value, S.STAT_DECIMALS),
            "skipped": False}, quality


# model.task -> (outputs, labels, reference, manifest source, file) -> (accuracy, quality)
TASK_SECTIONS = {"classification": _classification_sections, "feature-extraction": _embedding_sections}


def memory_section(results: list[dict]) -> dict:
    mem = [r["memory"] for r in results]

    def col(key):
        return [m.get(key) for m in mem]

    def top(values):
        values = [v for v in values if v is not None]
        return round(max(values), 3) if values else None

    peaks = [top([m["load_peak_rss_mb"], m["inference_peak_rss_mb"]]) for m in mem]
    shares = [round(p - m["baseline_rss_mb"], 3) for p, m in zip(peaks, mem)
              if p is not None and m["baseline_rss_mb"] is not None]
    # Maximum over trials (HARNESS_SPEC.md "Deciding"): the worst trial is what the device must fit.
    return {"method": mem[0]["method"] if mem else None,
            "baseline_rss_mb": col("baseline_rss_mb"), "load_peak_rss_mb": col("load_peak_rss_mb"),
            "inference_peak_rss_mb": col("inference_peak_rss_mb"), "peak_rss_mb": top(peaks),
            "model_share_mb": top(shares), "anon_mb": top(col("anon_mb")), "file_mb": top(col("file_mb"))}


def _is_generation(manifest: dict) -> bool:
    return (manifest.get("model") or {}).get("task") == "text-generation"


def _counts(args, manifest: dict) -> None:
    """--runs/--warmup defaults by task: 300/10 single calls, or 5/1 whole generations."""
    gen = _is_generation(manifest)
    if args.runs is None:
        args.runs = 5 if gen else 300
    if args.warmup is None:
        args.warmup = 1 if gen else 10


def run_trial_mode(args, bundle: Path) -> int:
    manifest, _ = B.load_manifest(bundle)
    _counts(args, manifest)
    if _is_generation(manifest):
        import _ek_gen_bench as G
        from _ek_trial import pin_threads
        emit(G.trial_main(bundle, manifest, _threads(args, manifest), args.runs, args.warmup, pin_threads))
        return 0
    result = trial_main(bundle, manifest, _threads(args, manifest), args.runs, args.warmup,
                        args.min_seconds, args.warmup_seconds)
    emit(result)
    return 0


def write_report(path: Path, report: dict, signer=None) -> None:
    """Write the report atomically; with --sign-key, first add report["signature"] (_ek_sign.py) over
    the very values the file will hold once parsed (json_safe: NaN -> null, numpy -> Python)."""
    if signer is not None:
        import _ek_sign
        report = B.json_safe(report)
        report[_ek_sign.REPORT_SIGNATURE] = _ek_sign.sign_report(report, signer)
    B.write_json_atomic(path, report)


def run(args, bundle: Path) -> int:
    say = (lambda *_: None) if args.quiet else (lambda msg: print(f"harness: {msg}", flush=True))
    t_start = time.time()
    signer = None
    if args.sign_key:  # load the key first: a missing key or package costs no measurement
        import _ek_sign
        signer = _ek_sign.load_private_key(args.sign_key)
    out_path = args.out or bundle / "report.json"
    manifest, manifest_sha = B.load_manifest(bundle)
    model = manifest["model"]
    threads = _threads(args, manifest)
    _counts(args, manifest)
    generation = _is_generation(manifest)
    if generation:
        import _ek_gen_bench as G
        if args.log_field:
            raise B.BundleError("--log-field logs input tensors of single-call models; a text-generation "
                                "bundle has no such inputs (leave it out)")

    signature = {"checked": False}
    if args.pubkey:  # signature first: it authenticates the manifest whose hashes are checked next
        import _ek_sign
        signature = {"checked": True, "verified": True,
                     "key_id": _ek_sign.verify_manifest(bundle, args.pubkey, manifest_sha)}
        say(f"manifest.sig verified with {args.pubkey} (key id {signature['key_id']})")
    n_files = B.verify_files(bundle, manifest)
    say(f"bundle {bundle} ({model['runtime']}, {model.get('precision')}): {n_files} files verified")

    adapter = G.open_lm(bundle, manifest, threads) if generation else open_adapter(bundle, manifest, threads)
    adapter.import_runtime()
    adapter.load()
    env = environment(threads, adapter.info(), adapter.requested_device)
    if generation:
        check = G.self_check(adapter, bundle, manifest)
        say(f"self-check on {check['n']} prompts: {'passed' if check['passed'] else 'FAILED'} (token ids "
            f"{'equal' if check['tokenizer_match'] else 'DIFFER'}; greedy prefixes "
            f"{[r['greedy_prefix'] for r in check['prompts']]})")
    else:
        check = self_check(adapter, bundle, manifest)
        say(f"self-check on {check['n']} samples: {'passed' if check['passed'] else 'FAILED'} "
            f"(max abs diff {check['max_abs_diff']:.3g}, top-1 agreement {check['top1_agreement_expected']})")
    adapter.close()  # no idle runtime threads or arenas in this process while trials measure
    del adapter

    settings = {"runs": args.runs, "warmup": args.warmup, "min_seconds": args.min_seconds,
                "warmup_seconds": args.warmup_seconds, "trials": args.trials, "batch": 1,
                "max_runs_per_trial": MAX_RUNS_PER_TRIAL}
    report = {
        "schema": B.REPORT_SCHEMA, "status": "ok",
        "harness": {"version": HARNESS_VERSION, "started_unix": round(t_start, 3)},
        "bundle": {"name": (manifest.get("bundle") or {}).get("name") or bundle.name,
                   "label": (manifest.get("bundle") or {}).get("label"), "path": str(bundle),
                   "manifest_sha256": manifest_sha, "model_sha256": manifest["files"][model["file"]],
                   "model_file": model["file"], "runtime": model["runtime"],
                   "precision": model.get("precision"), "task": model.get("task") or "classification",
                   "integrity": {"verified": True, "n_files": n_files}, "signature": signature},
        "provenance": {**(manifest.get("provenance") or {}),
                       "source_sha256": (manifest.get("source") or {}).get("sha256"),
                       "data_sha256": {k: (v or {}).get("sha256") for k, v in (manifest.get("data") or {}).items()
                                       if isinstance(v, dict)}},
        "target": manifest.get("target"),
        "environment": env, "settings": settings, "self_check": check,
        "cold_start": None, "latency": None, "memory": None,
        "model_size_mb": round(sum((bundle / f).stat().st_size for f in B.model_files(manifest)) / 2**20, 6),
        "accuracy": None, "trials": [],
    }

    results = []
    try:
        for k in range(1, args.trials + 1):
            r = spawn_trial(HERE / "run.py", bundle, k, args.trials, threads, args.runs, args.warmup,
                            args.min_seconds, args.warmup_seconds)
            results.append(r)
            if generation:
                say(f"trial {k}/{args.trials}: {r['runs']} generations of {r['new_tokens']} tokens, load "
                    f"{r['load_ms']} ms, TTFT median {S.nearest_rank(sorted(r['ttft_ms']), 0.5):.1f} ms, decode "
                    f"{S.nearest_rank(sorted(x for x in r['decode_tokens_per_s'] if x), 0.5):.1f} tokens/s, "
                    f"{r['full_context']['tokens']} tokens in {r['full_context']['seconds']} s")
            else:
                say(f"trial {k}/{args.trials}: {r['runs']} runs in {r['timed_seconds']} s, load "
                    f"{r['load_ms']} ms, median {S.nearest_rank(sorted(r['samples_ns']), 0.5) / 1e6:.4f} ms")
    except B.TrialCrash as exc:
        report.update(status="error", error=str(exc))
        report["harness"]["duration_s"] = round(time.time() - t_start, 3)
        write_report(out_path, report, signer)  # replaces any stale report the gate could misread
        raise

    report["cold_start"] = {k: [r[k] for r in results] for k in ("import_ms", "load_ms", "first_inference_ms")}
    report["latency"] = S.latency_section([S.ns_to_ms(r["samples_ns"]) for r in results])
    report["memory"] = memory_section(results)
    report["trials"] = [{k: r[k] for k in ("pid", "warmup_runs", "runs", "timed_seconds", "capped")}
                        | {"pinned_cpus": r.get("pinned_cpus")}
                        for r in results]
    env["temperature_c_end"] = temperature_c()
    if generation:
        report["generation"] = G.sections(results, manifest)
        return _finish_generation(args, bundle, manifest, threads, report, out_path, signer, say, t_start)

    if args.skip_accuracy:
        acc = S.accuracy_section([], np.zeros(0), (manifest.get("source") or {}).get("accuracy"))
        acc.update({"value": None, "skipped": True, "reason": "--skip-accuracy"})
    else:
        adapter = open_adapter(bundle, manifest, threads)
        adapter.import_runtime()
        adapter.load()
        field_log = None
        if args.log_field:
            from _ek_fieldlog import FieldLog
            field_log = FieldLog(args.log_field, args.log_max_mb)
        acc, quality = accuracy(adapter, bundle, manifest, field_log)
        if quality is not None:
            report["quality"] = quality
            say(f"embeddings vs source: mean cosine {quality['mean_cosine']:.4f}, p5 {quality['p5_cosine']:.4f}, "
                f"recall@10 {quality['recall_at_10']:.4f} on {quality['n']} items")
        adapter.close()
        if field_log is not None:
            field_log.close()
            report["field_log"] = field_log.describe()
            say(f"field log: {field_log.records} records -> {args.log_field}")
        if not acc.get("skipped"):
            say(f"{acc['metric']} {acc['value']:.4f} on {acc['n']} samples (source {acc['source_value']})")
    report["accuracy"] = acc
    if not args.skip_robustness:  # _ek_robust.py: odd inputs (in child processes), noise, agreement
        import _ek_robust
        report["robustness"] = _ek_robust.robustness(bundle, manifest, threads, say)
    report["harness"]["duration_s"] = round(time.time() - t_start, 3)
    write_report(out_path, report, signer)
    lat, mem = report["latency"], report["memory"]
    say(f"p50 {lat['p50']} ms, p95 {lat['p95']} ms, p99 {lat['p99']} ms over {lat['n']} runs; "
        f"peak RSS {mem['peak_rss_mb']} MiB ({mem['method']}) -> {out_path}")
    return 0


def _finish_generation(args, bundle, manifest, threads, report, out_path, signer, say, t_start) -> int:
    """Quality of a text-generation bundle (perplexity, agreement, KL against the source), then the report."""
    import _ek_gen_bench as G
    if args.skip_accuracy:
        report["accuracy"] = {"metric": "perplexity", "n": 0, "value": None, "source_value": None, "drop": None,
                              "skipped": True, "reason": "--skip-accuracy"}
    else:
        lm = G.open_lm(bundle, manifest, threads)
        lm.import_runtime()
        lm.load()
        q = G.quality(lm, bundle, manifest)
        lm.close()
        report["generation"]["quality"] = q
        report["accuracy"] = {"metric": "perplexity", "n": q["tokens"], "value": None, "source_value": None,
                              "drop": None, "skipped": True, "reason": "text generation: see quality"}
        say(f"perplexity {q['perplexity']:.3f} (source {q['source_perplexity']:.3f}, +{100 * q['perplexity_increase']:.2f}%), "
            f"top-1 agreement {q['token_agreement']:.4f}, mean KL {q['mean_kl']:.4f} on {q['tokens']} tokens")
    report["harness"]["duration_s"] = round(time.time() - t_start, 3)
    write_report(out_path, report, signer)
    g = report["generation"]
    say(f"TTFT p50 {g['ttft_ms']['p50']} ms, p95 {g['ttft_ms']['p95']} ms at {g['prompt_tokens']} prompt tokens; "
        f"decode {g['decode_tokens_per_s']['p50']} tokens/s (p5 {g['decode_tokens_per_s']['p5']}); peak RSS "
        f"{report['memory']['peak_rss_mb']} MiB ({g['full_context']['tokens']}-token context) -> {out_path}")
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    bundle = args.bundle.resolve() if args.bundle else HERE.parent
    try:
        return run_trial_mode(args, bundle) if args._trial else run(args, bundle)
    except (B.BundleError, B.TrialCrash) as exc:
        sys.stderr.write(f"harness: error: {exc}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("harness: error: interrupted\n")
        return 130
    except Exception as exc:  # a harness bug or an unforeseen bundle shape: still one line
        if os.environ.get("EDGEKIT_HARNESS_DEBUG") == "1":
            raise
        first = (str(exc).splitlines() or [""])[0]
        sys.stderr.write(f"harness: error: internal error {type(exc).__name__}: {first} "
                         "(set EDGEKIT_HARNESS_DEBUG=1 for a traceback)\n")
        return 1


if __name__ == "__main__":
    sys.exit(main())
