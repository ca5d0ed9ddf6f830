"""Device-side text generation over a bundle: the bundle's tokenizer and its KV-cache language model.

The one generation API the harness and the server (edgekit serve) share:

    lm = LanguageModel(bundle, manifest, threads); lm.import_runtime(); lm.load()
    ids = lm.encode("text")                       # tokenizer.json run by the `tokenizers` package
    out = lm.generate("prompt", max_new_tokens=64, temperature=0.0, top_p=1.0, stop=["\n\n"])
    out["text"], out["token_ids"], out["finish_reason"], out["ttft_ms"], out["decode_ms"]
    logits = lm.logits(ids)                       # [len(ids), vocab] for one fresh sequence

Needs the stdlib, numpy, the bundle's runtime and `tokenizers` (pip install tokenizers); never
edgekit or torch. The runtime is driven through the same adapters as every other bundle
(_ek_runtime.py), in one of two ways the manifest's "generation" section names:

  * kv = "explicit" (ONNX Runtime): the model takes past_key_values.<i>.key/value and returns
    present.<i>.key/value; this module keeps them between calls (the KV cache lives in numpy arrays
    owned here, so its size is what this process holds: 2 x layers x kv_heads x head_dim x 4 B per
    token, sized for the profile's context_length by the dev machine).
  * kv = "stateful" (OpenVINO): the cache is the infer request's internal state; reset() clears it.

A prompt is prefilled in chunks of at most `prefill_chunk` tokens (manifest; the profile's prompt
length), so the activations of a long prompt stay those of one chunk, not of the whole context.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from _ek_bundle import BundleError
from _ek_runtime import open_adapter


class GenerationError(BundleError):
    """A request the bundle cannot serve (prompt longer than the context, bad sampling value)."""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]


def load_tokenizer(path: Path):
    try:
        from tokenizers import Tokenizer
    except ImportError as exc:
        raise BundleError("tokenizers is not installed on this device: pip install tokenizers") from exc
    if not path.is_file():
        raise BundleError(f"{path}: missing from the bundle (the generation section names it as the tokenizer)")
    try:
        return Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises Exception with a serde message
        raise BundleError(f"{path}: not a tokenizer.json the tokenizers package can read ({_first_line(exc)})") from exc


def generation_section(manifest: dict, bundle: Path) -> dict:
    gen = manifest.get("generation")
    where = Path(bundle) / "manifest.json"
    if not isinstance(gen, dict):
        raise BundleError(f"{where}: key 'generation' missing (a text-generation bundle describes its "
                          "tokenizer and KV cache there)")
    for key in ("kv", "tokenizer", "layers", "kv_heads", "head_dim", "vocab_size", "context_length"):
        if key not in gen:
            raise BundleError(f"{where}: key 'generation.{key}' missing")
    if gen["kv"] not in ("explicit", "stateful"):
        raise BundleError(f"{where}: generation.kv = {gen['kv']!r}; expected 'explicit' or 'stateful'")
    if gen["kv"] == "explicit" and not gen.get("past"):
        raise BundleError(f"{where}: generation.past missing (pairs of past input and present output names)")
    return gen


class LanguageModel:
    def __init__(self, bundle: Path, manifest: dict, threads: int):
        self.bundle = Path(bundle)
        self.manifest = manifest
        self.gen = generation_section(manifest, self.bundle)
        self.adapter = open_adapter(self.bundle, manifest, threads)
        self.tokenizer = None
        self.context_length = int(self.gen["context_length"])
        self.vocab_size = int(self.gen["vocab_size"])
        self.eos = set(int(i) for i in self.gen.get("eos_token_ids") or [])
        self.prefill_chunk = max(1, int(self.gen.get("prefill_chunk") or self.context_length))
        self._names = {spec["name"] for spec in manifest["model"]["inputs"]}
        self._past: dict[str, np.ndarray] = {}
        self.length = 0  # tokens in the cache

    # -- lifecycle (the adapter protocol's steps, so cold start is timed the same way) ----------
    def import_runtime(self) -> None:
        self.adapter.import_runtime()

    def load(self) -> None:
        self.tokenizer = load_tokenizer(self.bundle / self.gen["tokenizer"])
        self.adapter.load()
        self.reset()

    def close(self) -> None:
        self._past = {}
        self.adapter.close()

    def info(self) -> dict:
        return self.adapter.info()

    @property
    def requested_device(self) -> str:
        return self.adapter.requested_device

    # -- tokens ---------------------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text).ids)

    def decode(self, ids) -> str:
        return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=True)

    # -- the model ------------------------------------------------------------------------------
    def reset(self) -> None:
        """Start a new sequence: empty KV cache."""
        self.length = 0
        if self.gen["kv"] == "stateful":
            self.adapter.reset()
            return
        shape = (1, int(self.gen["kv_heads"]), 0, int(self.gen["head_dim"]))
        dtype = np.dtype(self.gen.get("kv_dtype") or "float32")
        self._past = {p: np.zeros(shape, dtype) for p, _ in self.gen["past"]}

    def forward(self, ids) -> np.ndarray:
        """Append `ids` to the sequence (in prefill chunks); return their logits [len(ids), vocab]."""
        ids = [int(i) for i in ids]
        if not ids:
            raise GenerationError("forward() needs at least one token")
        if self.length + len(ids) > self.context_length:
            raise GenerationError(f"{self.length + len(ids)} tokens exceed the bundle's context_length "
                                  f"{self.context_length}")
        out = [self._step(ids[i:i + self.prefill_chunk]) for i in range(0, len(ids), self.prefill_chunk)]
        return out[0] if len(out) == 1 else np.concatenate(out)

    def _step(self, ids: list[int]) -> np.ndarray:
        n = len(ids)
        total = self.length + n
        feeds = {"input_ids": np.asarray([ids], np.int64)}
        if "attention_mask" in self._names:
            feeds["attention_mask"] = np.ones((1, total), np.int64)
        if "position_ids" in self._names:
            feeds["position_ids"] = np.arange(self.length, total, dtype=np.int64)[None, :]
        if "beam_idx" in self._names:  # optimum-intel's stateful models reorder the cache by beam
            feeds["beam_idx"] = np.zeros((1,), np.int32)
        feeds.update(self._past)
        outs = self.adapter.run(feeds)
        if self.gen["kv"] == "explicit":
            self._past = {p: outs[o] for p, o in self.gen["past"]}
        self.length = total
        logits = np.asarray(outs["logits"])
        return logits.reshape(-1, logits.shape[-1])[-n:]

    def logits(self, ids) -> np.ndarray:
        """Logits of one fresh sequence (the cache is reset first)."""
        self.reset()
        return self.forward(ids)

    # -- generation -----------------------------------------------------------------------------
    def check_request(self, n_prompt: int, max_new_tokens: int, temperature: float, top_p: float) -> None:
        if n_prompt < 1:
            raise GenerationError("the prompt tokenizes to no tokens")
        if max_new_tokens < 1:
            raise GenerationError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        if n_prompt + max_new_tokens > self.context_length:
            raise GenerationError(f"prompt of {n_prompt} tokens + max_new_tokens {max_new_tokens} exceeds the "
                                  f"bundle's context_length {self.context_length}")
        if not (temperature >= 0.0) or temperature == float("inf"):
            raise GenerationError(f"temperature must be a finite number >= 0, got {temperature}")
        if not (0.0 < top_p <= 1.0):
            raise GenerationError(f"top_p must be in (0, 1], got {top_p}")

    def stream(self, prompt, max_new_tokens: int = 64, temperature: float = 0.0, top_p: float = 1.0,
               stop=None, seed: int | None = None, ignore_eos: bool = False):
        """Yield (token_id, text_so_far, finish_reason or None) per new token; prompt is text or ids.
        ignore_eos: generate exactly max_new_tokens (benchmarks, as llama-bench does)."""
        ids = self.encode(prompt) if isinstance(prompt, str) else [int(i) for i in prompt]
        self.check_request(len(ids), max_new_tokens, temperature, top_p)
        stops = [s for s in (stop or []) if s]
        rng = np.random.default_rng(seed)
        self.reset()
        logits = self.forward(ids)[-1]
        new: list[int] = []
        while True:
            tok = sample(logits, temperature, top_p, rng)
            new.append(tok)
            text = self.decode(new)
            reason = None
            if tok in self.eos and not ignore_eos:
                reason = "stop"
            elif any(s in text for s in stops):
                text = text[:min(text.index(s) for s in stops if s in text)]
                reason = "stop"
            elif len(new) >= max_new_tokens:
                reason = "length"
            yield tok, text, reason
            if reason:
                return
            logits = self.forward([tok])[-1]

    def generate(self, prompt, max_new_tokens: int = 64, temperature: float = 0.0, top_p: float = 1.0,
                 stop=None, seed: int | None = None, ignore_eos: bool = False) -> dict:
        pc = time.perf_counter_ns
        t0 = pc()
        marks, tokens, text, reason = [], [], "", None
        for tok, text, reason in self.stream(prompt, max_new_tokens, temperature, top_p, stop, seed, ignore_eos):
            marks.append(pc())
            tokens.append(tok)
        ttft = (marks[0] - t0) / 1e6
        decode = [(b - a) / 1e6 for a, b in zip(marks, marks[1:])]
        return {"text": text, "token_ids": tokens, "finish_reason": reason, "ttft_ms": round(ttft, 4),
                "decode_ms": [round(d, 4) for d in decode]}


def sample(logits: np.ndarray, temperature: float, top_p: float, rng) -> int:
    """Greedy at temperature 0; else nucleus sampling (the smallest set of tokens whose probability
    reaches top_p), as OpenAI's and Hugging Face's samplers define it."""
    if temperature == 0.0:
        return int(np.argmax(logits))
    z = logits.astype(np.float64) / temperature
    p = np.exp(z - z.max())
    p /= p.sum()
    if top_p < 1.0:
        order = np.argsort(-p)
        keep = order[: int(np.searchsorted(np.cumsum(p[order]), top_p) + 1)]
        q = np.zeros_like(p)
        q[keep] = p[keep]
        p = q / q.sum()
    return int(rng.choice(len(p), p=p))


def log_softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def read_prompts(path: Path) -> list[dict]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise BundleError(f"{path}: missing from the bundle") from exc
    except (OSError, ValueError) as exc:
        raise BundleError(f"{path}: unreadable ({_first_line(exc)})") from exc
    if not isinstance(data, list) or not all(isinstance(p, dict) and isinstance(p.get("text"), str) for p in data):
        raise BundleError(f"{path}: expected a list of objects with a 'text' string")
    return data


def sequence_quality(lm: LanguageModel, windows: np.ndarray, nll_ref: np.ndarray, top_idx: np.ndarray,
                     top_logp: np.ndarray) -> dict:
    """How the artifact's next-token distributions follow the source's on the validation windows.

    windows [N, L] token ids; the source's figures per predicted position [N, L-1]: its negative
    log-likelihood of the actual next token, and its top-K token ids and log-probabilities.
    perplexity = exp(mean NLL) (llama.cpp's perplexity tool: the same windows, every position scored);
    token_agreement = share of positions where the artifact's argmax is the source's;
    mean_kl = KL(source || artifact) per position on the source's top K tokens plus one bucket for
    the rest of the vocabulary: a coarsening of the full KL, hence never above it (log-sum inequality).
    """
    nll, agree, kl = [], [], []
    rows = np.arange(windows.shape[1] - 1)
    for w, idx, lp_s in zip(windows, top_idx, top_logp):
        lp = log_softmax(lm.logits(w)[:-1])
        nll.append(-lp[rows, w[1:]])
        agree.append(lp.argmax(axis=1) == idx[:, 0])
        lp_s = lp_s.astype(np.float64)
        p_s = np.exp(lp_s)
        lq = np.take_along_axis(lp, idx.astype(np.int64), axis=1)
        tail_s = np.clip(1.0 - p_s.sum(axis=1), 1e-12, 1.0)
        tail_q = np.clip(1.0 - np.exp(lq).sum(axis=1), 1e-12, 1.0)
        kl.append((p_s * (lp_s - lq)).sum(axis=1) + tail_s * (np.log(tail_s) - np.log(tail_q)))
    nll, agree, kl = np.concatenate(nll), np.concatenate(agree), np.concatenate(kl)
    ppl = float(np.exp(nll.mean()))
    source_ppl = float(np.exp(np.asarray(nll_ref, np.float64).mean()))
    return {"metric": "perplexity", "windows": int(windows.shape[0]), "window_tokens": int(windows.shape[1]),
            "tokens": int(nll.size), "perplexity": round(ppl, 6), "source_perplexity": round(source_ppl, 6),
            "perplexity_increase": round(ppl / source_ppl - 1.0, 6), "token_agreement": round(float(agree.mean()), 6),
            "mean_kl": round(float(max(kl.mean(), 0.0)), 6), "kl_top_k": int(top_idx.shape[-1])}


def greedy_check(lm: LanguageModel, prompts: list[dict], min_prefix: int) -> dict:
    """The device's token ids for each bundled prompt against the dev machine's, and its greedy
    continuation against the dev machine's run of the same artifact ("greedy") and the source's
    ("source_greedy"). Passed: every prompt tokenizes identically and its first min_prefix greedy
    tokens (or all, if fewer) match the dev machine's."""
    rows, ok = [], True
    for p in prompts:
        ids = lm.encode(p["text"])
        same_ids = ids == list(p.get("ids") or [])
        want = list(p.get("greedy") or [])
        got = lm.generate(ids, max_new_tokens=max(1, len(want)), ignore_eos=True)["token_ids"] if ids else []
        prefix = _common_prefix(got, want)
        src = list(p.get("source_greedy") or [])
        rows.append({"tokenizer_match": same_ids, "n_ids": len(ids), "greedy_prefix": prefix, "greedy_n": len(want),
                     "source_prefix": _common_prefix(got, src)})
        ok = ok and same_ids and prefix >= min(min_prefix, len(want))
    return {"passed": ok, "n": len(rows), "tokenizer_match": all(r["tokenizer_match"] for r in rows),
            "min_prefix": min_prefix, "prompts": rows}


def _common_prefix(a, b) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n
