"""The model server of a bundle: Open Inference Protocol v2 (KServe / Triton REST) for classifiers and
feature extractors, OpenAI-compatible completions (with SSE streaming) for generative bundles, and
Prometheus /metrics. Starlette + uvicorn, the harness's runtime adapters, numpy; no edgekit import.

    /v2/health/live   /v2/health/ready   /v2/models/{name}   /v2/models/{name}/ready
    /v2/models/{name}/infer                                       (classifiers, feature extractors)
    /v1/models   /v1/completions   /v1/chat/completions            (text generation)
    /metrics

Start-up verifies the bundle (sha256 of every file, the signature with --pubkey) and refuses to start
on a tampered one; it then runs the harness's self-check and goes ready only when it passes.
Requests are queued (bounded: 429 + Retry-After when full) and batched (up to max_batch_size, waiting
at most max_queue_delay_ms for more) onto one model thread; a body over the size limit is 413, an
invalid one 400 naming the field, a request over its deadline 504. SIGTERM drains: uvicorn stops
accepting, in-flight requests finish.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

import _ek_bundle as B

OIP_DTYPES = {"float32": "FP32", "float16": "FP16", "float64": "FP64", "int64": "INT64", "int32": "INT32",
              "int16": "INT16", "int8": "INT8", "uint8": "UINT8", "bool": "BOOL"}
NUMPY_DTYPES = {v: k for k, v in OIP_DTYPES.items()}


class BadRequest(Exception):
    """400, with a message naming the field."""


class Settings:
    def __init__(self, max_batch_size=8, max_queue_delay_ms=2.0, max_queue=64, max_request_bytes=1 << 20,
                 timeout_s=30.0, threads=None):
        self.max_batch_size = max(1, int(max_batch_size))
        self.max_queue_delay_ms = max(0.0, float(max_queue_delay_ms))
        self.max_queue = max(1, int(max_queue))
        self.max_request_bytes = int(max_request_bytes)
        self.timeout_s = float(timeout_s)
        self.threads = threads


class Metrics:
    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
        self.registry = r = CollectorRegistry()
        self.requests = Counter("edgekit_requests", "Requests by route and HTTP status", ["route", "status"], registry=r)
        self.latency = Histogram("edgekit_request_seconds", "Request latency (s)", ["route"], registry=r,
                                 buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30))
        self.queue = Gauge("edgekit_queue_depth", "Requests waiting for the model", registry=r)
        self.batch = Histogram("edgekit_batch_size", "Requests per model call", registry=r,
                               buckets=(1, 2, 4, 8, 16, 32, 64))
        self.tokens = Counter("edgekit_generated_tokens", "Tokens generated", registry=r)
        self.tps = Gauge("edgekit_decode_tokens_per_second", "Decode tokens/s of the last generation", registry=r)
        self.psi = Gauge("edgekit_input_psi", "PSI of live inputs against the bundle's drift reference "
                         "(drift_reference.json, as edgekit drift computes it)", ["feature"], registry=r)
        self.ready = Gauge("edgekit_ready", "1 when the bundle passed verification and its self-check", registry=r)


class Service:
    """The loaded bundle and the single thread that runs it."""

    def __init__(self, bundle: Path, settings: Settings, pubkey: Path | None = None):
        self.bundle = Path(bundle)
        self.settings = settings
        self.pubkey = pubkey
        self.metrics = Metrics()
        self.ready = False
        self.reason = "starting"
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="edgekit-model")
        self.queue: asyncio.Queue | None = None
        self.drift_ref = None
        self._drift_values: dict[str, list[float]] = {}
        self._drift_lock = threading.Lock()

    # -- start-up -------------------------------------------------------------------------------
    def verify(self) -> None:
        """Hashes and signature: a BundleError here means the server must not start."""
        self.manifest, sha = B.load_manifest(self.bundle)
        if self.pubkey is not None:
            import _ek_sign
            _ek_sign.verify_manifest(self.bundle, self.pubkey, sha)
        B.verify_files(self.bundle, self.manifest)
        self.manifest_sha = sha
        model = self.manifest["model"]
        self.task = model.get("task") or "classification"
        self.name = (self.manifest.get("bundle") or {}).get("name") or self.bundle.name
        settings = self.manifest.get("runtime_settings") or {}
        self.threads = self.settings.threads or settings.get("threads") or 1

    def load(self) -> None:
        """Load the model and run the self-check (the harness's): ready only if it passes."""
        import run as harness
        if self.task == "text-generation":
            import _ek_gen_bench as G
            self.lm = G.open_lm(self.bundle, self.manifest, self.threads)
            self.lm.import_runtime()
            self.lm.load()
            check = G.self_check(self.lm, self.bundle, self.manifest)
        else:
            from _ek_runtime import open_adapter
            self.adapter = open_adapter(self.bundle, self.manifest, self.threads)
            self.adapter.import_runtime()
            self.adapter.load()
            check = harness.self_check(self.adapter, self.bundle, self.manifest)
            self.tokenizer = self._tokenizer()
            drift = self.manifest.get("drift") or {}
            if drift.get("file") and (self.bundle / drift["file"]).is_file():
                self.drift_ref = json.loads((self.bundle / drift["file"]).read_text(encoding="utf-8"))
        self.self_check = check
        self.ready = bool(check["passed"])
        self.reason = "ready" if self.ready else "the self-check failed: outputs differ from the dev machine's"
        self.metrics.ready.set(1 if self.ready else 0)

    def _tokenizer(self):
        tok = self.manifest.get("tokenizer") or {}
        if not tok.get("file"):
            return None
        from tokenizers import Tokenizer
        t = Tokenizer.from_file(str(self.bundle / tok["file"]))
        n = int(tok["max_length"])
        t.enable_truncation(n)
        t.enable_padding(length=n, pad_id=int(tok.get("pad_id", 0)), pad_token=tok.get("pad_token", "[PAD]"))
        return t

    # -- single-call models -------------------------------------------------------------------
    def inputs_from_request(self, body: dict) -> dict[str, np.ndarray]:
        """OIP v2 request -> {manifest input name: array}; BadRequest names the bad field."""
        items = body.get("inputs")
        if not isinstance(items, list) or not items:
            raise BadRequest("'inputs' must be a non-empty list of tensors ({name, shape, datatype, data})")
        specs = {s["name"]: s for s in self.manifest["model"]["inputs"]}
        got: dict[str, np.ndarray] = {}
        for i, t in enumerate(items):
            where = f"inputs[{i}]"
            if not isinstance(t, dict) or not isinstance(t.get("name"), str):
                raise BadRequest(f"{where}: a tensor needs a 'name'")
            name, dt = t["name"], t.get("datatype")
            if dt == "BYTES":
                if self.tokenizer is None:
                    raise BadRequest(f"{where} '{name}': BYTES (text) input, but this bundle has no tokenizer; "
                                     f"send the model's inputs {sorted(specs)}")
                got.update(self._tokenize(t, where))
                continue
            if name not in specs:
                raise BadRequest(f"{where}: unknown input '{name}'; the model takes {sorted(specs)}")
            spec = specs[name]
            want = OIP_DTYPES.get(spec.get("dtype") or "float32", "FP32")
            if dt != want:
                raise BadRequest(f"{where} '{name}': datatype {dt!r}; the model takes {want}")
            shape = t.get("shape")
            if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 1 for d in shape):
                raise BadRequest(f"{where} '{name}': 'shape' must be a list of positive integers")
            model_shape = spec.get("shape")
            if model_shape is not None:
                if len(shape) != len(model_shape) or any(m is not None and m != d and k > 0
                                                         for k, (m, d) in enumerate(zip(model_shape, shape))):
                    raise BadRequest(f"{where} '{name}': shape {shape}; the model takes "
                                     f"{['N' if m is None else m for m in model_shape]} (first axis: batch)")
                if model_shape[0] is not None and shape[0] != model_shape[0]:
                    raise BadRequest(f"{where} '{name}': batch {shape[0]}; this model takes batch {model_shape[0]}")
            data = t.get("data")
            try:
                arr = np.asarray(data, dtype=NUMPY_DTYPES[dt])
            except (TypeError, ValueError) as exc:
                raise BadRequest(f"{where} '{name}': 'data' is not a list of {dt} values ({exc})") from exc
            if arr.size != math.prod(shape):
                raise BadRequest(f"{where} '{name}': {arr.size} values for shape {shape} ({math.prod(shape)} expected)")
            arr = arr.reshape(shape)
            if arr.dtype.kind == "f" and not np.isfinite(arr).all():
                bad = int(np.flatnonzero(~np.isfinite(arr.reshape(-1)))[0])
                raise BadRequest(f"{where} '{name}': NaN or Inf at element {bad}; the model takes finite values")
            got[name] = arr
        missing = [n for n in specs if n not in got]
        if missing:
            raise BadRequest(f"'inputs' lacks {missing}; the model takes {sorted(specs)}")
        batch = {a.shape[0] for a in got.values()}
        if len(batch) != 1:
            raise BadRequest(f"'inputs' disagree on the batch size {sorted(batch)}")
        return got

    def _tokenize(self, t: dict, where: str) -> dict[str, np.ndarray]:
        data = t.get("data")
        if not isinstance(data, list) or not data or not all(isinstance(x, str) for x in data):
            raise BadRequest(f"{where} '{t['name']}': BYTES data must be a non-empty list of strings")
        enc = self.tokenizer.encode_batch(data)
        names = {s["name"] for s in self.manifest["model"]["inputs"]}
        out = {"input_ids": np.asarray([e.ids for e in enc], np.int64),
               "attention_mask": np.asarray([e.attention_mask for e in enc], np.int64),
               "token_type_ids": np.asarray([e.type_ids for e in enc], np.int64)}
        return {k: v for k, v in out.items() if k in names}

    def run_batch(self, feeds_list: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
        """One model call for requests that can be stacked (dynamic batch axis), else one each."""
        shape0 = self.manifest["model"]["inputs"][0].get("shape") or [None]
        sizes = [next(iter(f.values())).shape[0] for f in feeds_list]
        stackable = shape0[0] is None and len({tuple((k, v.shape[1:]) for k, v in sorted(f.items()))
                                                for f in feeds_list}) == 1
        if stackable and len(feeds_list) > 1:
            outs = self.adapter.run({k: np.concatenate([f[k] for f in feeds_list]) for k in feeds_list[0]})
            self.metrics.batch.observe(len(feeds_list))
            res, start = [], 0
            for n in sizes:
                res.append({k: v[start:start + n] for k, v in outs.items()})
                start += n
        else:
            res = []
            for f in feeds_list:
                self.metrics.batch.observe(1)
                if shape0[0] is None or next(iter(f.values())).shape[0] == 1:
                    res.append(self.adapter.run(f))
                else:
                    parts = [self.adapter.run({k: v[i:i + 1] for k, v in f.items()}) for i in range(sizes[len(res)])]
                    res.append({k: np.concatenate([p[k] for p in parts]) for k in parts[0]})
        for f in feeds_list:
            self._observe_drift(f)
        return res

    def _observe_drift(self, feeds: dict[str, np.ndarray]) -> None:
        if self.drift_ref is None:
            return
        from _ek_drift import features_of, live_psi
        with self._drift_lock:
            for name, a in feeds.items():
                for fname, v in features_of(name, a).items():
                    vals = self._drift_values.setdefault(fname, [])
                    vals.extend(float(x) for x in v)
                    del vals[:-4096]  # a rolling window of the latest samples per feature
            for fname, value in live_psi({k: np.asarray(v) for k, v in self._drift_values.items()},
                                         self.drift_ref).items():
                self.metrics.psi.labels(fname).set(value)

    # -- queue + batching -------------------------------------------------------------------------
    async def batcher(self) -> None:
        loop = asyncio.get_running_loop()
        s = self.settings
        while True:
            first = await self.queue.get()
            batch = [first]
            deadline = loop.time() + s.max_queue_delay_ms / 1000.0
            while len(batch) < s.max_batch_size:
                timeout = deadline - loop.time()
                if timeout <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self.queue.get(), timeout))
                except asyncio.TimeoutError:
                    break
            self.metrics.queue.set(self.queue.qsize())
            live = [b for b in batch if not b[1].done()]
            if not live:
                continue
            try:
                outs = await loop.run_in_executor(self.executor, self.run_batch, [b[0] for b in live])
                for (_, fut), out in zip(live, outs):
                    if not fut.done():
                        fut.set_result(out)
            except Exception as exc:  # a runtime failure answers every request of the batch
                for _, fut in live:
                    if not fut.done():
                        fut.set_exception(exc)

    async def submit(self, feeds: dict[str, np.ndarray]):
        fut = asyncio.get_running_loop().create_future()
        self.queue.put_nowait((feeds, fut))  # QueueFull -> 429
        self.metrics.queue.set(self.queue.qsize())
        return await asyncio.wait_for(fut, self.settings.timeout_s)


def _dt(a: np.ndarray) -> str:
    return OIP_DTYPES.get(a.dtype.name, "FP32")


def build_app(service: Service):
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
    from starlette.routing import Route
    m = service.metrics

    def answer(route: str, status: int, body, t0: float, headers=None):
        m.requests.labels(route, str(status)).inc()
        m.latency.labels(route).observe(time.perf_counter() - t0)
        if isinstance(body, Response):
            return body
        return JSONResponse(body, status_code=status, headers=headers)

    def error(route, status, msg, t0, headers=None):
        return answer(route, status, {"error": msg}, t0, headers)

    async def read_json(request: Request, route: str, t0: float):
        n = request.headers.get("content-length")
        if n is not None and n.isdigit() and int(n) > service.settings.max_request_bytes:
            return None, error(route, 413, f"request body of {n} bytes exceeds the limit of "
                               f"{service.settings.max_request_bytes} bytes (--max-request-bytes)", t0)
        raw = await request.body()
        if len(raw) > service.settings.max_request_bytes:
            return None, error(route, 413, f"request body of {len(raw)} bytes exceeds the limit of "
                               f"{service.settings.max_request_bytes} bytes", t0)
        try:
            body = json.loads(raw)
        except ValueError as exc:
            return None, error(route, 400, f"body is not JSON ({exc})", t0)
        if not isinstance(body, dict):
            return None, error(route, 400, "body must be a JSON object", t0)
        return body, None

    async def live(request):
        return answer("live", 200, {"live": True}, time.perf_counter())

    async def ready(request):
        t0 = time.perf_counter()
        return answer("ready", 200 if service.ready else 503, {"ready": service.ready, "reason": service.reason}, t0)

    def known(name: str) -> bool:
        return name == service.name

    async def model_meta(request):
        t0 = time.perf_counter()
        name = request.path_params["name"]
        if not known(name):
            return error("metadata", 404, f"no model {name!r}; this server serves {service.name!r}", t0)
        model = service.manifest["model"]
        return answer("metadata", 200, {
            "name": service.name, "versions": [service.manifest_sha[:12]], "platform": model["runtime"],
            "task": service.task,
            "inputs": [{"name": s["name"], "datatype": OIP_DTYPES.get(s.get("dtype") or "float32", "FP32"),
                        "shape": [-1 if d is None else d for d in (s.get("shape") or [])]} for s in model["inputs"]]
            + ([{"name": "text", "datatype": "BYTES", "shape": [-1]}] if getattr(service, "tokenizer", None) else []),
            "outputs": [{"name": o["name"], "datatype": OIP_DTYPES.get(o.get("dtype") or "float32", "FP32"),
                         "shape": [-1 if d is None else d for d in (o.get("shape") or [])]} for o in model["outputs"]]},
            t0)

    async def model_ready(request):
        t0 = time.perf_counter()
        name = request.path_params["name"]
        if not known(name):
            return error("model_ready", 404, f"no model {name!r}", t0)
        return answer("model_ready", 200 if service.ready else 503, {"name": name, "ready": service.ready}, t0)

    async def infer(request):
        t0 = time.perf_counter()
        route = "infer"
        name = request.path_params["name"]
        if not known(name):
            return error(route, 404, f"no model {name!r}; this server serves {service.name!r}", t0)
        if not service.ready:
            return error(route, 503, f"not ready: {service.reason}", t0)
        if service.task == "text-generation":
            return error(route, 400, "a text-generation bundle is served on /v1/completions", t0)
        body, err = await read_json(request, route, t0)
        if err:
            return err
        try:
            feeds = service.inputs_from_request(body)
        except BadRequest as exc:
            return error(route, 400, str(exc), t0)
        try:
            outs = await service.submit(feeds)
        except asyncio.QueueFull:
            return error(route, 429, f"queue full ({service.settings.max_queue} requests waiting)", t0,
                         {"Retry-After": "1"})
        except asyncio.TimeoutError:
            return error(route, 504, f"no answer within {service.settings.timeout_s:g} s", t0)
        wanted = [o.get("name") for o in body.get("outputs") or [] if isinstance(o, dict)] or list(outs)
        unknown = [w for w in wanted if w not in outs]
        if unknown:
            return error(route, 400, f"'outputs' names {unknown}; the model has {list(outs)}", t0)
        return answer(route, 200, {"model_name": service.name, "model_version": service.manifest_sha[:12],
                                   "id": body.get("id"),
                                   "outputs": [{"name": k, "datatype": _dt(outs[k]), "shape": list(outs[k].shape),
                                                "data": outs[k].reshape(-1).tolist()} for k in wanted]}, t0)

    # -- OpenAI-compatible generation ---------------------------------------------------------
    gen_lock = asyncio.Lock()  # one generation at a time on the model thread (batch 1, as measured)

    def sampling(body: dict) -> dict:
        def num(key, default, lo, hi, kind=float):
            v = body.get(key, default)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (lo <= v <= hi):
                raise BadRequest(f"'{key}' = {v!r}; expected a number in [{lo}, {hi}]")
            return kind(v)
        stop = body.get("stop")
        if isinstance(stop, str):
            stop = [stop]
        if stop is not None and not (isinstance(stop, list) and all(isinstance(s, str) for s in stop)):
            raise BadRequest("'stop' must be a string or a list of strings")
        return {"max_new_tokens": num("max_tokens", 64, 1, service.lm.context_length, int),
                "temperature": num("temperature", 0.0, 0.0, 2.0), "top_p": num("top_p", 1.0, 1e-9, 1.0),
                "stop": stop, "seed": body.get("seed") if isinstance(body.get("seed"), int) else None}

    def chat_prompt(messages) -> str:
        if not isinstance(messages, list) or not messages or not all(
                isinstance(x, dict) and isinstance(x.get("role"), str) and isinstance(x.get("content"), str)
                for x in messages):
            raise BadRequest("'messages' must be a non-empty list of {role, content} strings")
        tok = service.lm.tokenizer
        if tok.token_to_id("<|im_start|>") is not None:  # ChatML (SmolLM2, Qwen2)
            return "".join(f"<|im_start|>{x['role']}\n{x['content']}<|im_end|>\n" for x in messages) + \
                "<|im_start|>assistant\n"
        return "".join(f"{x['role']}: {x['content']}\n" for x in messages) + "assistant:"

    async def completions(request, chat: bool):
        t0 = time.perf_counter()
        route = "chat" if chat else "completions"
        if service.task != "text-generation":
            return error(route, 400, f"this bundle is a {service.task} model: use /v2/models/{service.name}/infer", t0)
        if not service.ready:
            return error(route, 503, f"not ready: {service.reason}", t0)
        body, err = await read_json(request, route, t0)
        if err:
            return err
        try:
            if chat:
                prompt = chat_prompt(body.get("messages"))
            else:
                prompt = body.get("prompt")
                if not isinstance(prompt, str) or not prompt:
                    raise BadRequest("'prompt' must be a non-empty string")
            kw = sampling(body)
            ids = service.lm.encode(prompt)
            service.lm.check_request(len(ids), kw["max_new_tokens"], kw["temperature"], kw["top_p"])
        except BadRequest as exc:
            return error(route, 400, str(exc), t0)
        except B.BundleError as exc:  # GenerationError: prompt longer than the context, ...
            return error(route, 400, str(exc), t0)
        if gen_lock.locked() and service.queue.qsize() >= service.settings.max_queue:
            return error(route, 429, "queue full", t0, {"Retry-After": "1"})
        created, rid = int(time.time()), f"cmpl-{base64.b32encode(np.random.bytes(10)).decode().lower()}"
        kind = "chat.completion" if chat else "text_completion"

        def chunk(text, reason):
            if chat:
                return {"id": rid, "object": "chat.completion.chunk", "created": created, "model": service.name,
                        "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": reason}]}
            return {"id": rid, "object": "text_completion", "created": created, "model": service.name,
                    "choices": [{"index": 0, "text": text, "finish_reason": reason}]}

        if body.get("stream"):
            loop = asyncio.get_running_loop()
            q: asyncio.Queue = asyncio.Queue()

            def produce():
                sent, n, t_first = "", 0, None
                try:
                    for tok, text, reason in service.lm.stream(ids, **kw):
                        n += 1
                        t_first = t_first or time.perf_counter()
                        loop.call_soon_threadsafe(q.put_nowait, (text[len(sent):], reason))
                        sent = text
                    m.tokens.inc(n)
                    if n > 1:
                        m.tps.set((n - 1) / max(time.perf_counter() - t_first, 1e-9))
                except Exception as exc:  # noqa: BLE001 - reported in the stream
                    loop.call_soon_threadsafe(q.put_nowait, (exc, "error"))
                loop.call_soon_threadsafe(q.put_nowait, None)

            async def events():
                async with gen_lock:
                    fut = loop.run_in_executor(service.executor, produce)
                    while True:
                        item = await q.get()
                        if item is None:
                            break
                        text, reason = item
                        if isinstance(text, Exception):
                            yield f"data: {json.dumps({'error': str(text)})}\n\n"
                            break
                        yield f"data: {json.dumps(chunk(text, reason))}\n\n"
                    await fut
                yield "data: [DONE]\n\n"
            return answer(route, 200, StreamingResponse(events(), media_type="text/event-stream"), t0)

        async with gen_lock:
            try:
                out = await asyncio.wait_for(asyncio.get_running_loop().run_in_executor(
                    service.executor, lambda: service.lm.generate(ids, **kw)), service.settings.timeout_s)
            except asyncio.TimeoutError:
                return error(route, 504, f"no answer within {service.settings.timeout_s:g} s", t0)
        n = len(out["token_ids"])
        m.tokens.inc(n)
        if out["decode_ms"]:
            m.tps.set(len(out["decode_ms"]) * 1000.0 / sum(out["decode_ms"]))
        usage = {"prompt_tokens": len(ids), "completion_tokens": n, "total_tokens": len(ids) + n}
        choice = ({"index": 0, "message": {"role": "assistant", "content": out["text"]},
                   "finish_reason": out["finish_reason"]} if chat else
                  {"index": 0, "text": out["text"], "finish_reason": out["finish_reason"]})
        return answer(route, 200, {"id": rid, "object": kind, "created": created, "model": service.name,
                                   "choices": [choice], "usage": usage}, t0)

    async def completions_route(request):
        return await completions(request, chat=False)

    async def chat_route(request):
        return await completions(request, chat=True)

    async def models(request):
        return answer("models", 200, {"object": "list", "data": [{"id": service.name, "object": "model",
                                                                   "owned_by": "edgekit"}]}, time.perf_counter())

    async def metrics(request):
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
        return PlainTextResponse(generate_latest(m.registry).decode(), media_type=CONTENT_TYPE_LATEST)

    async def startup():
        service.queue = asyncio.Queue(maxsize=service.settings.max_queue)
        if service.task != "text-generation":
            service._batcher = asyncio.create_task(service.batcher())

    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app):
        await startup()
        yield
        task = getattr(service, "_batcher", None)
        if task is not None:
            task.cancel()
        service.executor.shutdown(wait=True)

    routes = [Route("/v2/health/live", live), Route("/v2/health/ready", ready),
              Route("/v2/models/{name}", model_meta), Route("/v2/models/{name}/ready", model_ready),
              Route("/v2/models/{name}/infer", infer, methods=["POST"]),
              Route("/v1/models", models), Route("/v1/completions", completions_route, methods=["POST"]),
              Route("/v1/chat/completions", chat_route, methods=["POST"]), Route("/metrics", metrics)]
    return Starlette(routes=routes, lifespan=lifespan)
