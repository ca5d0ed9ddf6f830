"""Text generation: a causal LM run token by token with a KV cache (edgekit/lm, harness/_ek_generate.py).

Its quality is not a top-1 on labels but how closely the artifact's next-token distributions follow
the source's on the bundled validation text: perplexity (relative increase over the source's,
computed on the dev machine), top-1 next-token agreement and mean KL divergence from the source.
Its speed is time to first token at the profile's prompt length and decode tokens/s, not the
latency of one call. The conversion pipeline for it is edgekit/lm/convert.py; this module is what
the gate reads.
"""

from __future__ import annotations

from typing import Any

from ..checks import fmt, within


class TextGeneration:
    name = "text-generation"
    needs_labels = False
    metric = "perplexity"
    budgets = ("ttft_ms", "min_decode_tokens_per_s", "max_perplexity_increase", "min_token_agreement",
               "context_length")
    # One call's latency and top-1 on labels mean nothing for a generator: TTFT and tokens/s replace them.
    not_judged = ("latency_p95_ms", "max_accuracy_drop", "max_class_accuracy_drop")

    def rules(self) -> dict:
        return {"ttft_ms": _ttft, "min_decode_tokens_per_s": _decode,
                "max_perplexity_increase": _ppl, "min_token_agreement": _agreement,
                "context_length": _context}


def _gen(report: dict) -> dict:
    return report.get("generation") or {}


def _ttft(report: dict, limit: float) -> tuple[Any, str, str, str]:
    t = _gen(report).get("ttft_ms") or {}
    value = t.get("p95")
    statistic = f"time to first token p95 at {_gen(report).get('prompt_tokens')} prompt tokens"
    if value is None:
        return None, statistic, "fail", "generation.ttft_ms not in the report"
    if report["environment"].get("emulated"):
        return float(value), statistic, "skip", "emulated: time to first token never gates a budget"
    return float(value), statistic + f" (p50 {fmt(t.get('p50'))} ms)", "pass" if within(float(value), limit) else "fail", ""


def _decode(report: dict, limit: float) -> tuple[Any, str, str, str]:
    d = _gen(report).get("decode_tokens_per_s") or {}
    value = d.get("p50")
    statistic = "decode tokens/s, median over generations" + (f" (p5 {fmt(d.get('p5'))})" if d.get("p5") is not None else "")
    if value is None:
        return None, statistic, "fail", "generation.decode_tokens_per_s not in the report"
    if report["environment"].get("emulated"):
        return float(value), statistic, "skip", "emulated: tokens/s never gates a budget"
    slower = _gen(report).get("slower_than_fp32")
    if slower:
        return float(value), statistic, "fail", (f"int4 decodes slower than the fp32 export on this host "
                                                 f"({slower}): shipping it would cost speed for nothing")
    return float(value), statistic, "pass" if within(limit, float(value)) else "fail", ""


def _quality(report: dict) -> dict:
    return _gen(report).get("quality") or {}


def _ppl(report: dict, limit: float) -> tuple[Any, str, str, str]:
    q = _quality(report)
    value = q.get("perplexity_increase")
    if value is None:
        return None, "relative perplexity increase", "fail", "generation.quality.perplexity_increase not in the report (--skip-accuracy?)"
    statistic = (f"perplexity {fmt(q.get('source_perplexity'))} -> {fmt(q.get('perplexity'))} "
                 f"on {q.get('tokens')} validation tokens, relative increase")
    return float(value), statistic, "pass" if within(float(value), limit) else "fail", ""


def _agreement(report: dict, limit: float) -> tuple[Any, str, str, str]:
    q = _quality(report)
    value = q.get("token_agreement")
    if value is None:
        return None, "top-1 next-token agreement", "fail", "generation.quality.token_agreement not in the report (--skip-accuracy?)"
    statistic = f"top-1 next-token agreement with the source (mean KL {fmt(q.get('mean_kl'))} nats)"
    return float(value), statistic, "pass" if within(limit, float(value)) else "fail", ""


def _context(report: dict, limit: float) -> tuple[Any, str, str, str]:
    g = _gen(report)
    value = g.get("context_length")
    if value is None:
        return None, "context the KV cache holds", "fail", "generation.context_length not in the report"
    full = g.get("full_context") or {}
    reached = full.get("tokens")
    statistic = f"context the bundle holds (peak RSS at {reached} tokens: {fmt(full.get('peak_rss_mb'))} MiB)"
    if reached is None or reached < limit:
        return float(value), statistic, "fail", f"the harness did not run the model at {int(limit)} tokens"
    return float(value), statistic, "pass" if float(value) >= limit else "fail", ""
