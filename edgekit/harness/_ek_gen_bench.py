"""The harness's protocol for text-generation bundles (manifest model.task = "text-generation").

Same steps as for every bundle (HARNESS_SPEC.md: verify, self-check, trials in fresh processes,
quality, report), with the figures a generator is judged on, as llama-bench and benchmark_app's
LLM mode report them:
  * self-check: the device's token ids for each bundled prompt equal the dev machine's, and its
    greedy continuation matches the dev machine's run of the same artifact (_ek_generate.greedy_check);
  * per trial (fresh process): import and load time; `runs` greedy generations of exactly
    new_tokens tokens (EOS ignored) from a prompt of prompt_length tokens of the bundled validation
    text: time to first token (prefill + first sample) and each decode step; then the cache is
    filled to context_length tokens (chunked prefill) and one more step run: the peak RSS there is
    what the device must hold at full context;
  * quality: perplexity, top-1 agreement and KL against the source on the validation windows.
Needs numpy, the runtime and `tokenizers` only.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

import _ek_stats as S
from _ek_bundle import BundleError, load_npz
from _ek_generate import LanguageModel, generation_section, greedy_check, read_prompts, sequence_quality
from _ek_probe import MemoryProbe

DEFAULT_RUNS = 5       # generations per trial (3 trials: 15 TTFT and 15 x (new_tokens - 1) decode samples)
DEFAULT_WARMUP = 1


def open_lm(bundle: Path, manifest: dict, threads: int) -> LanguageModel:
    return LanguageModel(bundle, manifest, threads)


def _validation(bundle: Path, gen: dict) -> dict[str, np.ndarray]:
    path = bundle / (gen.get("validation") or "lm_validation.npz")
    arrays = load_npz(path)
    for key in ("windows", "nll", "top_idx", "top_logp"):
        if key not in arrays:
            raise BundleError(f"{path}: no array {key!r}")
    w = arrays["windows"]
    if w.ndim != 2 or arrays["nll"].shape != (w.shape[0], w.shape[1] - 1) or arrays["top_idx"].shape[:2] != arrays["nll"].shape:
        raise BundleError(f"{path}: windows {list(w.shape)}, nll {list(arrays['nll'].shape)} and top_idx "
                          f"{list(arrays['top_idx'].shape)} disagree (expected [N, L], [N, L-1], [N, L-1, K])")
    return arrays


def prompt_ids(bundle: Path, manifest: dict) -> list[int]:
    gen = generation_section(manifest, bundle)
    stream = _validation(bundle, gen)["windows"].reshape(-1)
    n = int(gen.get("prompt_length") or 128)
    return [int(i) for i in np.resize(stream, n)]


def self_check(lm: LanguageModel, bundle: Path, manifest: dict) -> dict:
    gen = lm.gen
    check = greedy_check(lm, read_prompts(bundle / (gen.get("prompts") or "prompts.json")),
                         int(gen.get("min_greedy_prefix") or 4))
    # The keys every report's self_check has (the gate and the renderers read them).
    check.update({"max_abs_diff": None, "top1_agreement_expected": None})
    return check


def quality(lm: LanguageModel, bundle: Path, manifest: dict) -> dict:
    v = _validation(bundle, lm.gen)
    return sequence_quality(lm, v["windows"], v["nll"], v["top_idx"], v["top_logp"])


def trial_main(bundle: Path, manifest: dict, threads: int, runs: int, warmup: int, pin) -> dict:
    """One fresh-process trial: cold start, `runs` timed generations, one full-context step."""
    pinned = pin(threads)
    pc = time.perf_counter_ns
    probe = MemoryProbe()
    gen = generation_section(manifest, bundle)
    ids = prompt_ids(bundle, manifest)
    new_tokens = int(gen.get("new_tokens") or 64)
    lm = open_lm(bundle, manifest, threads)
    from _ek_trial import cold_start
    cold = cold_start(probe, lm)
    probe.reset_peak()
    first = lm.generate(ids, max_new_tokens=new_tokens, ignore_eos=True)
    for _ in range(warmup):
        lm.generate(ids, max_new_tokens=new_tokens, ignore_eos=True)
    ttft, decode, rates = [], [], []
    for _ in range(runs):
        out = lm.generate(ids, max_new_tokens=new_tokens, ignore_eos=True)
        ttft.append(out["ttft_ms"])
        decode.extend(out["decode_ms"])
        rates.append(len(out["decode_ms"]) * 1000.0 / sum(out["decode_ms"]) if out["decode_ms"] else None)
    prompt_peak = probe.peak_mib()

    # Full context: the KV cache at context_length tokens (the profile's budget.context_length).
    probe.reset_peak()
    ctx = lm.context_length
    fill = [int(i) for i in np.resize(np.asarray(ids), ctx - 1)]
    lm.reset()
    t3 = pc()
    logits = lm.forward(fill)[-1]
    lm.forward([int(np.argmax(logits))])
    t4 = pc()
    full_peak = probe.peak_mib()
    split = probe.split_mib()
    lm.close()
    return {"pid": os.getpid(), "import_ms": cold["import_ms"], "load_ms": cold["load_ms"],
            "first_inference_ms": first["ttft_ms"], "warmup_runs": warmup, "runs": runs,
            "timed_seconds": round((sum(ttft) + sum(decode)) / 1e3, 3), "capped": False, "pinned_cpus": pinned,
            "ttft_ms": ttft, "decode_ms": decode, "decode_tokens_per_s": rates, "prompt_tokens": len(ids),
            "new_tokens": new_tokens,
            "full_context": {"tokens": ctx, "seconds": round((t4 - t3) / 1e9, 3), "peak_rss_mb": full_peak},
            # samples_ns: the decode steps, so the shared latency statistics describe per-token latency
            "samples_ns": [int(d * 1e6) for d in decode],
            "memory": {"method": probe.method, "baseline_rss_mb": cold["baseline"], "load_peak_rss_mb": cold["load_peak"],
                       "inference_peak_rss_mb": max(v for v in (prompt_peak, full_peak) if v is not None)
                       if (prompt_peak or full_peak) else None, **split}}


def sections(results: list[dict], manifest: dict) -> dict:
    """The report's "generation" section from the trials."""
    gen = manifest.get("generation") or {}
    ttft = sorted(t for r in results for t in r["ttft_ms"])
    rates = sorted(x for r in results for x in r["decode_tokens_per_s"] if x is not None)
    prompt_tokens = results[0]["prompt_tokens"]
    p50 = S.nearest_rank(ttft, 0.5)
    full = [r["full_context"] for r in results]
    peaks = [f["peak_rss_mb"] for f in full if f["peak_rss_mb"] is not None]
    return {"prompt_tokens": prompt_tokens, "new_tokens": results[0]["new_tokens"],
            "context_length": gen.get("context_length"), "runs": len(ttft),
            "ttft_ms": {"p50": round(p50, 4), "p95": round(S.nearest_rank(ttft, 0.95), 4),
                        "min": round(ttft[0], 4), "max": round(ttft[-1], 4),
                        "samples": [r["ttft_ms"] for r in results]},
            "prefill_tokens_per_s": {"p50": round(prompt_tokens * 1000.0 / p50, 3) if p50 else None},
            "decode_tokens_per_s": {"p50": round(S.nearest_rank(rates, 0.5), 3) if rates else None,
                                    "p5": round(S.nearest_rank(rates, 0.05), 3) if rates else None,
                                    "samples": [r["decode_tokens_per_s"] for r in results]},
            "full_context": {"tokens": full[0]["tokens"], "peak_rss_mb": round(max(peaks), 3) if peaks else None,
                             "seconds": max(f["seconds"] for f in full)},
            "slower_than_fp32": gen.get("slower_than_fp32"),
            "dev_machine": gen.get("dev_speed")}
