"""What a causal LM needs in memory at a given context, before anything is exported.

    weights      the artifact's bytes (it is read or mapped whole: every token touches every weight)
    KV cache     2 (K and V) x layers x kv_heads x head_dim x bytes per value, per token of context
    activations  one prefill chunk's logits and hidden states, plus what the runtime holds per token
                 of context beyond the KV cache itself: the exported attention repeats the KV heads
                 to the query heads, concatenates, masks and keeps copies across steps. Measured on
                 SmolLM2-135M (prefill chunks of 128 up to 2048 tokens, peak RSS over load):
                 ONNX Runtime ~0.41 MiB per token (5.9 x layers x heads x head_dim x 4 B), OpenVINO
                 ~0.86 MiB per token (12.5 x); per-token KV is 0.045 MiB. The factors are ACT_FACTOR.
    runtime      the interpreter, numpy and the runtime's own code and arenas (RUNTIME_MB, measured)

The harness then measures peak RSS at full context (harness/_ek_gen_bench.py), which the gate judges;
this estimate only refuses at conversion a bundle that cannot fit, and names the longest context that
would.
"""

from __future__ import annotations

import dataclasses

MB = 2**20
# Peak RSS of the harness with onnxruntime + tokenizers loaded and no model (measured: 74-82 MiB
# on x86-64 and under the emulated aarch64 device, harness trial baseline); openvino's is larger.
RUNTIME_MB = {"onnxruntime": 90.0, "openvino": 160.0, "litert": 90.0}
ACT_FACTOR = {"onnxruntime": 5.9, "openvino": 12.5}


def kv_bytes_per_token(dims: dict, bytes_per_value: int = 4) -> int:
    return 2 * dims["layers"] * dims["kv_heads"] * dims["head_dim"] * bytes_per_value


@dataclasses.dataclass
class LMEstimate:
    weights_mb: float
    kv_mb: float
    activations_mb: float
    runtime_mb: float
    context: int

    @property
    def total_mb(self) -> float:
        return self.weights_mb + self.kv_mb + self.activations_mb + self.runtime_mb

    def to_dict(self) -> dict:
        return {k: round(v, 3) if isinstance(v, float) else v for k, v in dataclasses.asdict(self).items()} | {
            "total_mb": round(self.total_mb, 3)}


def activations_bytes(dims: dict, chunk: int, context: int, heads: int, intermediate: int, runtime: str) -> int:
    logits = chunk * dims["vocab_size"] * 4
    hidden = chunk * (4 * dims["hidden"] + 2 * intermediate) * 4
    per_token = ACT_FACTOR.get(runtime, 12.5) * dims["layers"] * heads * dims["head_dim"] * 4
    return int(2 * (logits + hidden) + context * per_token)


def estimate(weights_bytes: int, dims: dict, context: int, chunk: int, heads: int, intermediate: int,
             runtime: str) -> LMEstimate:
    chunk = min(chunk, context)
    return LMEstimate(weights_bytes / MB, context * kv_bytes_per_token(dims) / MB,
                      activations_bytes(dims, chunk, context, heads, intermediate, runtime) / MB,
                      RUNTIME_MB.get(runtime, 90.0), context)


def longest_context(weights_bytes: int, dims: dict, budget_mb: float, chunk: int, heads: int,
                    intermediate: int, runtime: str, upper: int) -> int:
    """The longest context (tokens, <= upper) whose estimate fits budget_mb; 0 if none does."""
    lo, hi = 0, upper
    while lo < hi:  # the estimate grows with the context: bisect
        mid = (lo + hi + 1) // 2
        if estimate(weights_bytes, dims, mid, chunk, heads, intermediate, runtime).total_mb <= budget_mb:
            lo = mid
        else:
            hi = mid - 1
    return lo
