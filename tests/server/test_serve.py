"""The model server under real HTTP on 127.0.0.1: Open Inference Protocol v2 on the digits classifier,
OpenAI completions (plain and SSE) on a tiny generative bundle, /metrics, and every error status."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "lm"))


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, bundle: Path, *args: str):
        self.port = _port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([sys.executable, "-m", "edgekit", "serve", str(bundle), "--port", str(self.port),
                                      *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
        deadline = time.time() + 120
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited {self.proc.returncode}: {self.proc.stderr.read()}")
            try:
                if self.get("/v2/health/live")[0] == 200:
                    return
            except OSError:
                time.sleep(0.2)
        raise AssertionError("server did not come up")

    def request(self, path: str, body=None, method=None, raw: bytes | None = None, headers=None):
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        req = urllib.request.Request(self.url + path, data=data, method=method or ("POST" if data else "GET"),
                                     headers={"Content-Type": "application/json", **(headers or {})})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status, r.read().decode(), dict(r.headers)
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode(), dict(e.headers)

    def get(self, path):
        return self.request(path)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=60)
        finally:
            self.proc.stdout.close()
            self.proc.stderr.close()


@pytest.fixture(scope="module")
def digits_server(digits_bundles):
    b = digits_bundles["int8"].path
    s = Server(b, "--max-batch-size", "8", "--max-queue-delay-ms", "5")
    yield s, b
    # SIGTERM drains (uvicorn finishes in-flight requests), then re-raises the signal: exit by SIGTERM
    assert s.stop() in (0, -signal.SIGTERM)


def _digits(bundle: Path, n: int) -> tuple[np.ndarray, np.ndarray]:
    with np.load(bundle / "validation.npz") as z:
        return z["input.x"][:n], z["labels"][:n]


def _infer_body(x: np.ndarray) -> dict:
    return {"inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32", "data": x.reshape(-1).tolist()}]}


def test_health_metadata_and_infer(digits_server):
    s, b = digits_server
    assert s.get("/v2/health/live")[0] == 200
    code, body, _ = s.get("/v2/health/ready")
    assert code == 200 and json.loads(body)["ready"] is True
    name = json.loads((b / "manifest.json").read_text())["bundle"]["name"]
    code, body, _ = s.get(f"/v2/models/{name}")
    meta = json.loads(body)
    assert code == 200 and meta["inputs"][0]["name"] == "x" and meta["inputs"][0]["datatype"] == "FP32"
    assert s.get(f"/v2/models/{name}/ready")[0] == 200
    x, y = _digits(b, 16)
    code, body, _ = s.request(f"/v2/models/{name}/infer", _infer_body(x))
    assert code == 200, body
    out = json.loads(body)["outputs"][0]
    logits = np.asarray(out["data"], np.float32).reshape(out["shape"])
    # the server answers what the harness's own adapter computes on the device
    sys.path.insert(0, str(b / "harness"))
    import _ek_bundle
    from _ek_runtime import open_adapter
    m, _ = _ek_bundle.load_manifest(b)
    a = open_adapter(b, m, 1)
    a.import_runtime()
    a.load()
    want = a.run({"x": x})[m["model"]["outputs"][0]["name"]]
    assert np.allclose(logits, want, atol=1e-5) and (logits.argmax(1) == y).mean() > 0.8


def test_concurrent_requests_are_batched(digits_server):
    s, b = digits_server
    name = json.loads((b / "manifest.json").read_text())["bundle"]["name"]
    x, _ = _digits(b, 1)
    codes = []

    def one():
        codes.append(s.request(f"/v2/models/{name}/infer", _infer_body(x))[0])
    threads = [threading.Thread(target=one) for _ in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert codes == [200] * 24
    metrics = s.get("/metrics")[1]
    assert 'edgekit_requests_total{route="infer",status="200"}' in metrics
    count = float(next(l.split()[-1] for l in metrics.splitlines() if l.startswith("edgekit_batch_size_count")))
    total = float(next(l.split()[-1] for l in metrics.splitlines() if l.startswith("edgekit_batch_size_sum")))
    assert total >= 24 and count < total  # some model calls carried more than one request
    assert "edgekit_input_psi{" in metrics and "edgekit_queue_depth" in metrics


def test_every_error_status(digits_server):
    s, b = digits_server
    name = json.loads((b / "manifest.json").read_text())["bundle"]["name"]
    x, _ = _digits(b, 2)
    url = f"/v2/models/{name}/infer"
    code, body, _ = s.request("/v2/models/nope/infer", _infer_body(x))
    assert code == 404 and "nope" in body
    for mutate, needle in (
            (lambda t: t.update(datatype="INT64"), "datatype 'INT64'; the model takes FP32"),
            (lambda t: t.update(name="image"), "unknown input 'image'"),
            (lambda t: t.update(shape=[2, 1, 9, 8]), "shape [2, 1, 9, 8]"),
            (lambda t: t.update(data=t["data"][:-1]), "values for shape"),
            (lambda t: t["data"].__setitem__(3, float("nan")), "NaN or Inf at element 3")):
        req = _infer_body(x)
        mutate(req["inputs"][0])
        code, body, _ = s.request(url, raw=json.dumps(req).encode())  # NaN: Python's JSON reads it
        assert code == 400 and needle in json.loads(body)["error"], (needle, body)
    code, body, _ = s.request(url, raw=b"{not json")
    assert code == 400 and "not JSON" in body
    # a body over the limit is refused from its Content-Length, before it is read
    import http.client
    c = http.client.HTTPConnection("127.0.0.1", s.port, timeout=30)
    c.putrequest("POST", url)
    c.putheader("Content-Type", "application/json")
    c.putheader("Content-Length", str(4 << 20))
    c.endheaders()
    resp = c.getresponse()
    assert resp.status == 413 and "exceeds the limit" in resp.read().decode()
    c.close()
    assert s.request("/v1/completions", {"prompt": "x"})[0] == 400  # a classifier is not a generator


def test_timeout_and_full_queue(digits_bundles):
    b = digits_bundles["int8"].path
    name = json.loads((b / "manifest.json").read_text())["bundle"]["name"]
    x, _ = _digits(b, 1)
    s = Server(b, "--timeout-s", "0.000001")
    try:
        code, body, _ = s.request(f"/v2/models/{name}/infer", _infer_body(x))
        assert code == 504 and "no answer within" in body
    finally:
        s.stop()
    # One slot in the queue and a model busy with a large batch: the burst behind it gets 429 + Retry-After.
    s = Server(b, "--max-queue", "1", "--max-batch-size", "1", "--max-request-bytes", str(64 << 20))
    try:
        seen = set()
        for _ in range(3):
            heavy = threading.Thread(target=s.request, args=(f"/v2/models/{name}/infer",
                                                             _infer_body(np.ones((20000, 1, 8, 8), np.float32))))
            heavy.start()
            time.sleep(0.8)
            results = []

            def one():
                results.append(s.request(f"/v2/models/{name}/infer", _infer_body(x)))
            burst = [threading.Thread(target=one) for _ in range(16)]
            for t in burst:
                t.start()
            for t in burst:
                t.join()
            heavy.join()
            seen |= {r[0] for r in results}
            assert {r[0] for r in results} <= {200, 429}
            if 429 in seen:
                r = next(r for r in results if r[0] == 429)
                assert {k.lower(): v for k, v in r[2].items()}.get("retry-after") == "1"
                break
        assert 429 in seen
    finally:
        s.stop()


def test_tampered_bundle_refuses_to_start(bundle_copy):
    b = bundle_copy()
    with open(b / "model.onnx", "ab") as f:
        f.write(b"\0")
    p = subprocess.run([sys.executable, "-m", "edgekit", "serve", str(b), "--port", str(_port())],
                       capture_output=True, text=True, cwd=REPO, timeout=120)
    assert p.returncode == 2 and "sha256 mismatch" in p.stderr and len(p.stderr.strip().splitlines()) == 1


def test_openai_completions_and_sse(tmp_path):
    from lmtest import CALIB, VAL, profile, tiny_lm
    from edgekit.convert import convert
    src = tiny_lm(tmp_path / "tiny", "llama")
    (r,) = convert(str(src), [str(profile(tmp_path / "p.toml"))], str(CALIB), str(VAL), tmp_path / "out", progress=False)
    s = Server(r.path)
    try:
        code, body, _ = s.request("/v1/completions", {"prompt": "Utility for indexing", "max_tokens": 5,
                                                      "temperature": 0})
        out = json.loads(body)
        assert code == 200 and out["object"] == "text_completion" and out["usage"]["completion_tokens"] <= 5
        prompts = json.loads((r.path / "prompts.json").read_text())
        # the server's greedy text is the bundle's own greedy continuation
        code, body, _ = s.request("/v1/completions", {"prompt": prompts[0]["text"], "max_tokens": 4})
        assert code == 200
        code, body, _ = s.request("/v1/chat/completions", {"messages": [{"role": "user", "content": "hello"}],
                                                           "max_tokens": 3})
        assert code == 200 and json.loads(body)["choices"][0]["message"]["role"] == "assistant"
        code, body, headers = s.request("/v1/completions", {"prompt": "Utility for indexing", "max_tokens": 4,
                                                            "stream": True})
        assert code == 200 and {k.lower(): v for k, v in headers.items()}["content-type"].startswith("text/event-stream")
        events = [line[6:] for line in body.splitlines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]" and len(events) >= 2
        _, plain, _ = s.request("/v1/completions", {"prompt": "Utility for indexing", "max_tokens": 4})
        assert "".join(json.loads(e)["choices"][0]["text"] for e in events[:-1]) == json.loads(plain)["choices"][0]["text"]
        for bad, needle in (({"prompt": ""}, "'prompt'"), ({"prompt": "x", "temperature": 9}, "'temperature'"),
                            ({"prompt": "x", "max_tokens": 10**6}, "'max_tokens'"),
                            ({"messages": "hi"}, "'messages'")):
            path = "/v1/chat/completions" if "messages" in bad else "/v1/completions"
            code, body, _ = s.request(path, bad)
            assert code == 400 and needle in body, (bad, body)
        metrics = s.get("/metrics")[1]
        assert "edgekit_generated_tokens_total" in metrics and "edgekit_decode_tokens_per_second" in metrics
        assert s.request(f"/v2/models/{json.loads((r.path / 'manifest.json').read_text())['bundle']['name']}/infer",
                         {"inputs": []})[0] == 400
    finally:
        assert s.stop() in (0, -signal.SIGTERM)


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _server_pid(s: Server) -> int:
    # `python -m edgekit serve` runs uvicorn in the same process
    return s.proc.pid


def test_faults_storm_disconnect_and_sigterm_under_load(digits_bundles, tmp_path):
    """A storm past the queue (429s, no crash, memory bounded), a client that disconnects mid-stream,
    a malformed body, and SIGTERM under load (in-flight requests finish): the server stays up until told."""
    from lmtest import CALIB, VAL, profile, tiny_lm
    from edgekit.convert import convert
    b = digits_bundles["int8"].path
    name = json.loads((b / "manifest.json").read_text())["bundle"]["name"]
    x, _ = _digits(b, 1)
    body = _infer_body(x)
    s = Server(b, "--max-queue", "4", "--max-batch-size", "2")
    try:
        for _ in range(50):  # warm: allocator and arenas settle before the memory baseline
            s.request(f"/v2/models/{name}/infer", body)
        before = _rss_mib(_server_pid(s))
        codes = []

        def storm():
            for _ in range(40):
                codes.append(s.request(f"/v2/models/{name}/infer", body)[0])
        threads = [threading.Thread(target=storm) for _ in range(32)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert set(codes) <= {200, 429} and codes.count(200) > 0, sorted(set(codes))
        assert s.request(f"/v2/models/{name}/infer", raw=b'{"inputs": [')[0] == 400
        assert s.get("/v2/health/ready")[0] == 200 and s.proc.poll() is None
        after = _rss_mib(_server_pid(s))
        assert after - before < 64, (before, after)  # 1,280 requests later: bounded
    finally:
        s.stop()

    src = tiny_lm(tmp_path / "tiny", "llama")
    (r,) = convert(str(src), [str(profile(tmp_path / "p.toml"))], str(CALIB), str(VAL), tmp_path / "out", progress=False)
    s = Server(r.path)
    try:
        import http.client
        c = http.client.HTTPConnection("127.0.0.1", s.port, timeout=30)
        c.request("POST", "/v1/completions", json.dumps({"prompt": "Utility", "max_tokens": 200, "stream": True,
                                                        "ignore": 1}), {"Content-Type": "application/json"})
        resp = c.getresponse()
        assert resp.status == 200 and resp.readline().startswith(b"data: ")
        c.close()  # gone mid-stream
        code, out, _ = s.request("/v1/completions", {"prompt": "Utility", "max_tokens": 4})
        assert code == 200 and json.loads(out)["usage"]["completion_tokens"] >= 1

        # SIGTERM with requests in flight: each accepted one finishes with its answer
        results = []

        def one():
            try:
                results.append(s.request("/v1/completions", {"prompt": "Utility for indexing", "max_tokens": 64}))
            except OSError:  # not yet accepted when the listener closed: refused, not half-answered
                results.append((None, "", {}))
        threads = [threading.Thread(target=one) for _ in range(4)]
        for t in threads:
            t.start()
        time.sleep(0.3)
        s.proc.send_signal(signal.SIGTERM)
        for t in threads:
            t.join()
        assert s.proc.wait(timeout=60) in (0, -signal.SIGTERM)
        done = [c for c, _, _ in results if c == 200]
        assert done and all(json.loads(o)["usage"]["completion_tokens"] == 64 or json.loads(o)["choices"][0]
                            ["finish_reason"] == "stop" for c, o, _ in results if c == 200)
    finally:
        if s.proc.poll() is None:
            s.stop()
