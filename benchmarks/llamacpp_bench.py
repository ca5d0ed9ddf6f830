"""llama.cpp's side of benchmarks/generation.py, run by the interpreter of an environment that has
llama-cpp-python (kept out of edgekit's own: it builds from source for ~20 min on 2 cores).

    LLAMA_PY llamacpp_bench.py SOURCE.gguf WORK_DIR WINDOWS.npy PROMPT.json --threads 1 --runs 5 --new 64

Makes Q4_0, Q4_K_M and Q8_0 files from SOURCE (llama_model_quantize, requantizing its tensors: the
same float weights edgekit starts from), then per file: perplexity on the same token windows edgekit
scores (every position after the first, as harness/_ek_generate.sequence_quality), and the harness's
timing protocol: time to first token of the 128-token prompt (prefill + first argmax), then `--new`
greedy decode steps, over `--runs` generations after one warm-up. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

TYPES = {"Q4_0": 2, "Q8_0": 7, "Q4_K_M": 15}  # llama_ftype values (llama.h: LLAMA_FTYPE_MOSTLY_*)


def quantize(src: str, dst: str, ftype: int) -> None:
    import llama_cpp
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.allow_requantize = True
    params.nthread = 2
    rc = llama_cpp.llama_model_quantize(src.encode(), dst.encode(), params)
    if rc != 0:
        raise SystemExit(f"llama_model_quantize({dst}) failed: {rc}")


def log_softmax(z):
    z = z.astype(np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def measure(path: str, windows: np.ndarray, prompt: list[int], threads: int, runs: int, new: int) -> dict:
    from llama_cpp import Llama
    t0 = time.perf_counter()
    llm = Llama(model_path=path, n_ctx=max(windows.shape[1], len(prompt) + new) + 8, n_threads=threads,
                n_threads_batch=threads, n_batch=512, logits_all=True, verbose=False)
    load_ms = (time.perf_counter() - t0) * 1e3
    nll = []
    for w in windows:
        llm.reset()
        llm.eval([int(t) for t in w])
        lp = log_softmax(np.asarray(llm.scores[: len(w) - 1]))
        nll.append(-lp[np.arange(len(w) - 1), w[1:]])
    ppl = float(np.exp(np.concatenate(nll).mean()))

    def generate():
        llm.reset()
        a = time.perf_counter_ns()
        llm.eval(prompt)
        tok = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        ttft = (time.perf_counter_ns() - a) / 1e6
        steps = []
        for _ in range(new - 1):
            b = time.perf_counter_ns()
            llm.eval([tok])
            tok = int(np.argmax(llm.scores[llm.n_tokens - 1]))
            steps.append((time.perf_counter_ns() - b) / 1e6)
        return ttft, steps
    generate()  # warm-up
    ttft, rates = [], []
    for _ in range(runs):
        t, steps = generate()
        ttft.append(t)
        rates.append(len(steps) * 1000.0 / sum(steps))
    return {"file_mb": os.path.getsize(path) / 2**20, "load_ms": load_ms, "perplexity": ppl,
            "ttft_ms_p50": float(np.median(ttft)), "decode_tokens_per_s_p50": float(np.median(rates)),
            "decode_tokens_per_s_p5": float(np.percentile(rates, 5))}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("source")
    p.add_argument("work")
    p.add_argument("windows")
    p.add_argument("prompt")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--new", type=int, default=64)
    a = p.parse_args()
    import llama_cpp
    os.makedirs(a.work, exist_ok=True)
    windows = np.load(a.windows)
    prompt = json.load(open(a.prompt))
    out = {"llama_cpp_python": llama_cpp.__version__, "files": {}}
    for name, ftype in TYPES.items():
        dst = os.path.join(a.work, f"smollm2-135m-{name}.gguf")
        if not os.path.exists(dst):
            quantize(a.source, dst, ftype)
        out["files"][name] = measure(dst, windows, prompt, a.threads, a.runs, a.new)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
