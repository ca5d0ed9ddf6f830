"""Load on the model server (issue 14): 64 concurrent clients, 5,000 requests of the MiniLM classifier
(text as BYTES, tokenized in the server), against 127.0.0.1 only, bounded and self-stopping.

    .venv/bin/python benchmarks/serve_load.py [--source build/minilm-debian] [--clients 64] [--requests 5000]

One run, side by side: the server with dynamic batching (max_batch_size 8, 2 ms) and without
(max_batch_size 1), each fed the same requests; per run the status counts (only 200 and 429 are
allowed), p50/p99 latency and throughput. Server overhead: the p50 of one client's sequential
requests over the harness's in-process p50 at batch 1 (same bundle, same threads).
Results: benchmarks/results/serve_load.json and .md.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
TEXT = REPO / "examples" / "text"


def port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url: str, body: bytes) -> tuple[int, float]:
    t = time.perf_counter()
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            r.read()
            code = r.status
    except urllib.error.HTTPError as e:
        code = e.code
    return code, (time.perf_counter() - t) * 1e3


def serve(bundle: Path, *args: str):
    p = port()
    proc = subprocess.Popen([sys.executable, "-m", "edgekit", "serve", str(bundle), "--port", str(p), *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=REPO)
    for _ in range(600):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{p}/v2/health/ready", timeout=2):
                return proc, f"http://127.0.0.1:{p}"
        except (OSError, urllib.error.HTTPError):
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("server did not become ready")


def load(url: str, bodies: list[bytes], clients: int) -> dict:
    results: list[tuple[int, float]] = []
    lock = threading.Lock()
    it = iter(bodies)

    def worker():
        while True:
            with lock:
                b = next(it, None)
            if b is None:
                return
            r = post(url, b)
            with lock:
                results.append(r)
    t = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - t
    codes: dict[str, int] = {}
    for c, _ in results:
        codes[str(c)] = codes.get(str(c), 0) + 1
    ok = sorted(ms for c, ms in results if c == 200)
    return {"requests": len(results), "status": codes, "seconds": round(wall, 3),
            "throughput_rps": round(codes.get("200", 0) / wall, 2),
            "p50_ms": round(float(np.percentile(ok, 50)), 3), "p99_ms": round(float(np.percentile(ok, 99)), 3)}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--source", default=str(REPO / "build" / "minilm-debian"))
    ap.add_argument("--work", default=str(HERE / "work" / "serve_load"))
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--requests", type=int, default=5000)
    a = ap.parse_args()
    work = Path(a.work)
    bundle = work / "x86-avx2"
    if not (bundle / "manifest.json").is_file():
        from edgekit.convert import convert
        convert(a.source, ["x86-avx2"], str(TEXT / "debian_sections_calib.jsonl"),
                str(TEXT / "debian_sections_val.jsonl"), work, license="Apache-2.0", provenance="benchmark")
    manifest = json.loads((bundle / "manifest.json").read_text())
    name = manifest["bundle"]["name"]
    texts = [json.loads(line)["text"] for line in (TEXT / "debian_sections_val.jsonl").read_text().splitlines() if line]
    bodies = [json.dumps({"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES",
                                      "data": [texts[i % len(texts)]]}]}).encode() for i in range(a.requests)]
    # the harness's in-process p50 at batch 1 (same bundle, profile threads)
    rep = work / "harness.json"
    subprocess.run([sys.executable, str(bundle / "harness" / "run.py"), "--quiet", "--trials", "1", "--runs", "300",
                    "--min-seconds", "3", "--skip-accuracy", "--skip-robustness", "--out", str(rep)], check=True)
    harness_p50 = json.loads(rep.read_text())["latency"]["p50"]
    out = {"command": "python benchmarks/serve_load.py", "clients": a.clients, "requests": a.requests,
           "harness_p50_ms": harness_p50, "runs": {}}
    for label, args in (("batching (max_batch_size 8, 2 ms)", ["--max-batch-size", "8", "--max-queue-delay-ms", "2",
                                                               "--max-queue", "256"]),
                        ("no batching (max_batch_size 1)", ["--max-batch-size", "1", "--max-queue", "256"])):
        proc, url = serve(bundle, *args)
        try:
            infer = f"{url}/v2/models/{name}/infer"
            single = sorted(post(infer, bodies[i])[1] for i in range(200))  # one client: the overhead figure
            r = load(infer, bodies, a.clients)
            r["single_client_p50_ms"] = round(float(np.percentile(single, 50)), 3)
            out["runs"][label] = r
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    b, n = out["runs"]["batching (max_batch_size 8, 2 ms)"], out["runs"]["no batching (max_batch_size 1)"]
    out["batching_speedup"] = round(b["throughput_rps"] / n["throughput_rps"], 3)
    out["server_overhead"] = round(n["single_client_p50_ms"] / harness_p50, 3)
    out["only_200_or_429"] = all(set(r["status"]) <= {"200", "429"} for r in out["runs"].values())
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "serve_load.json").write_text(json.dumps(out, indent=1) + "\n")
    md = ["# Model server under load: MiniLM classifier (x86-avx2 bundle), text in, 127.0.0.1", "",
          f"Command: `.venv/bin/python benchmarks/serve_load.py` ({a.clients} clients, {a.requests} requests per run).", "",
          "| server | statuses | throughput req/s | p50 ms | p99 ms | one client p50 ms |", "|---|---|---|---|---|---|"]
    for label, r in out["runs"].items():
        md.append(f"| {label} | {r['status']} | {r['throughput_rps']} | {r['p50_ms']} | {r['p99_ms']} | "
                  f"{r['single_client_p50_ms']} |")
    md += ["", f"Batching throughput / no batching: **{out['batching_speedup']}x** (target >= 1.5x). Server overhead "
           f"(one client's p50 / the harness's in-process p50 {harness_p50} ms): **{out['server_overhead']}x** "
           "(target <= 1.3x)."]
    (HERE / "results" / "serve_load.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
