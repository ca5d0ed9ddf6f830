#!/usr/bin/env python3
"""Serve a bundle over HTTP: python3 server/run.py [--bundle DIR] [--host 127.0.0.1] [--port 8000]
                                                 [--pubkey BUNDLE.pub] [--max-batch-size 8]
                                                 [--max-queue-delay-ms 2] [--max-queue 64]
                                                 [--max-request-bytes 1048576] [--timeout-s 30] [--threads N]

Runs on the device from inside the bundle (beside harness/, whose runtime adapters and generation
API it uses) with numpy, the bundle's runtime, starlette, uvicorn and prometheus-client
(pip install starlette uvicorn prometheus-client; tokenizers for text). Routes: _ek_app.py.
Exit 2 with one line when the bundle is tampered with, its signature does not verify, or a package
is missing; the server then never starts.
"""

from __future__ import annotations

import sys

sys.dont_write_bytecode = True

import argparse  # noqa: E402
import os  # noqa: E402
from pathlib import Path  # noqa: E402

HERE = Path(__file__).resolve().parent


def _paths(bundle: Path) -> None:
    # the bundle's own harness (adapters, generation) first, then this folder's _ek_app
    for d in (HERE, bundle / "harness" if (bundle / "harness").is_dir() else HERE.parent / "harness"):
        if str(d) not in sys.path:
            sys.path.insert(0, str(d))


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="server/run.py", description="edgekit model server")
    p.add_argument("--bundle", type=Path, help="bundle directory (default: the parent of server/)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--pubkey", type=Path, help="refuse to start unless manifest.sig verifies with this key")
    p.add_argument("--max-batch-size", type=int, default=8)
    p.add_argument("--max-queue-delay-ms", type=float, default=2.0)
    p.add_argument("--max-queue", type=int, default=64)
    p.add_argument("--max-request-bytes", type=int, default=1 << 20)
    p.add_argument("--timeout-s", type=float, default=30.0)
    p.add_argument("--threads", type=int)
    return p.parse_args(argv)


def main(argv=None) -> int:
    a = parse_args(argv)
    bundle = (a.bundle or HERE.parent).resolve()
    _paths(bundle)
    try:
        import numpy  # noqa: F401
        import starlette  # noqa: F401
        import uvicorn
        import prometheus_client  # noqa: F401
    except ImportError as exc:
        sys.stderr.write(f"server: error: {exc.name} is not installed on this device: "
                         "pip install starlette uvicorn prometheus-client\n")
        return 2
    import _ek_app as A
    import _ek_bundle as B
    svc = A.Service(bundle, A.Settings(a.max_batch_size, a.max_queue_delay_ms, a.max_queue, a.max_request_bytes,
                                       a.timeout_s, a.threads), a.pubkey)
    try:
        svc.verify()   # tampered or unsigned: never serve
        svc.load()     # self-check: ready only when it passes
    except B.BundleError as exc:
        sys.stderr.write(f"server: error: {exc}\n")
        return exc.exit_code
    sys.stderr.write(f"server: {svc.name} ({svc.task}) on http://{a.host}:{a.port} - "
                     f"{'ready' if svc.ready else 'NOT READY: ' + svc.reason}\n")
    sys.stderr.flush()
    # timeout_graceful_shutdown: SIGTERM drains in-flight requests for up to this long, then exits.
    uvicorn.run(A.build_app(svc), host=a.host, port=a.port, log_level=os.environ.get("EDGEKIT_LOG", "warning"),
                timeout_graceful_shutdown=int(max(1, a.timeout_s)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
