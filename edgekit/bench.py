"""Run a bundle's own harness here, in a fresh process, and return its report.

The harness is the device-side code inside the bundle (stdlib + numpy + one runtime); `bench`
runs exactly what a device would run, so a report made here and one made on a board are alike.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from .bundle import verify
from .errors import BundleError


def harness_command(bundle: Path, out: Path, *, python: str = sys.executable, runs: int | None = None,
                    warmup: int | None = None, min_seconds: float | None = None,
                    warmup_seconds: float | None = None, trials: int | None = None,
                    threads: int | None = None, quiet: bool = True, pubkey: str | Path | None = None,
                    sign_key: str | Path | None = None) -> list[str]:
    cmd = [python, str(bundle / "harness" / "run.py"), "--bundle", str(bundle), "--out", str(out)]
    for flag, value in (("--runs", runs), ("--warmup", warmup), ("--min-seconds", min_seconds),
                        ("--warmup-seconds", warmup_seconds), ("--trials", trials), ("--threads", threads)):
        if value is not None:
            cmd += [flag, str(value)]
    if pubkey is not None:  # the harness refuses a bundle whose manifest.sig does not verify (docs/TRUST.md)
        cmd += ["--pubkey", str(Path(pubkey).resolve())]
    if sign_key is not None:  # the harness signs its report with this device key (gate --device-pubkey)
        cmd += ["--sign-key", str(Path(sign_key).resolve())]
    return cmd + (["--quiet"] if quiet else [])


def bench(bundle: str | Path, out: str | Path | None = None, *, runs: int | None = None,
          warmup: int | None = None, min_seconds: float | None = None,
          warmup_seconds: float | None = None, trials: int | None = None,
          threads: int | None = None, timeout: float | None = None, pubkey: str | Path | None = None,
          sign_key: str | Path | None = None) -> dict:
    """Benchmark one bundle on this machine; writes the report (default BUNDLE/report.json)."""
    from .report.load import load_report
    b = Path(bundle)
    verify(b)  # the harness checks again on its side; failing here gives the dev-side message
    report = Path(out) if out else b / "report.json"
    report.parent.mkdir(parents=True, exist_ok=True)
    cmd = harness_command(b, report, runs=runs, warmup=warmup, min_seconds=min_seconds,
                          warmup_seconds=warmup_seconds, trials=trials, threads=threads, pubkey=pubkey,
                          sign_key=sign_key)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise BundleError(f"{b}: the harness did not finish within {timeout} s") from exc
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        msg = lines[-1] if lines else f"exit code {proc.returncode}"
        raise BundleError(f"{b}: harness failed: {msg}")
    return load_report(report)


def summary_row(report: dict) -> dict:
    """The figures people compare across bundles (used by the demo and the benchmarks)."""
    lat, mem, acc = report["latency"], report["memory"], report.get("accuracy") or {}
    return {"bundle": report["bundle"]["name"], "precision": report["bundle"]["precision"],
            "accuracy": acc.get("value"), "drop": acc.get("drop"), "p50_ms": lat["p50"],
            "p95_ms": lat["p95"], "peak_mb": mem["peak_rss_mb"], "size_mb": report["model_size_mb"]}


def dumps(report: dict) -> str:
    return json.dumps(report, indent=2)
