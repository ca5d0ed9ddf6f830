"""One measurement trial, run in a fresh process, and the parent side that launches and reads it.

Why a fresh process per trial (HARNESS_SPEC.md step 1): cold start (import, load, first inference)
only exists once per process, the memory high-water mark must start from this trial alone, and
allocator/cache state left by one trial must not flatter the next. The child is started with
subprocess (fork+exec or posix_spawn: a new program image), never multiprocessing's fork start
method, which would inherit the parent's heap, imported runtime and thread pools.

The child prints exactly one result line to stdout, prefixed with MARKER so that anything a runtime
writes to fd 1 from native code (OpenVINO and TFLite log there) cannot be mistaken for it.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import subprocess
import sys
import time
from array import array
from pathlib import Path

from _ek_bundle import TrialCrash, batch, input_arrays, load_npz
from _ek_probe import MemoryProbe
from _ek_runtime import open_adapter

MARKER = "EDGEKIT_TRIAL_RESULT "

# Upper bound on timed iterations per trial. At the defaults (>= 300 runs and >= 10 s) only a
# model faster than 50 us hits it (the trial then stops short of 10 s and says "capped"); the cap
# keeps the sample buffer (8 B each, 1.6 MB) out of the measured peak RSS and the report (about
# 8 B of JSON per sample) to a few MiB. 200k samples pin p99 far tighter than run-to-run drift.
MAX_RUNS_PER_TRIAL = 200_000


def _ms(ns: int) -> float:
    return round(ns / 1e6, 4)


def pin_threads(threads: int) -> list[int] | None:
    """Pin this trial to `threads` CPUs (the highest-numbered of those allowed: CPU 0 takes most
    interrupts) so the runtime's threads do not migrate between cores mid-series, as
    benchmark_model / benchmark_app users do with taskset. None where affinity is unavailable or
    fewer CPUs are allowed than threads asked for (then pinning would oversubscribe)."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    allowed = sorted(os.sched_getaffinity(0))
    if threads > len(allowed):
        return None
    if threads == len(allowed):
        return allowed  # already confined to exactly these
    chosen = allowed[-threads:]
    try:
        os.sched_setaffinity(0, chosen)
    except OSError:
        return None
    return chosen


def cold_start(probe: MemoryProbe, model) -> dict:
    """Baseline RSS (interpreter + numpy + harness + inputs: everything but the model), then the
    runtime's import and the model's load, each timed, and the peak RSS of the load. `model` follows
    the adapter protocol's import_runtime() / load() (an Adapter, or _ek_generate.LanguageModel)."""
    pc = time.perf_counter_ns
    gc.collect()
    baseline = probe.current_mib()
    probe.reset_peak()
    t0 = pc()
    model.import_runtime()
    t1 = pc()
    model.load()
    t2 = pc()
    return {"baseline": baseline, "import_ms": _ms(t1 - t0), "load_ms": _ms(t2 - t1), "load_peak": probe.peak_mib()}


def trial_main(bundle: Path, manifest: dict, threads: int, runs: int, warmup: int,
               min_seconds: float, warmup_seconds: float) -> dict:
    """Measure one cold start and one steady-state series in this (fresh) process."""
    pinned = pin_threads(threads)
    pc = time.perf_counter_ns
    probe = MemoryProbe()
    sc_file = (manifest.get("selfcheck") or {}).get("file") or "samples.npz"
    sc_path = bundle / sc_file
    feeds = batch(input_arrays(load_npz(sc_path), manifest, sc_path), 0)
    adapter = open_adapter(bundle, manifest, threads)  # harness code only; the runtime comes next
    cold = cold_start(probe, adapter)
    baseline, load_peak = cold["baseline"], cold["load_peak"]
    fn = adapter.runner(feeds)

    probe.reset_peak()
    t3 = pc()
    fn()
    t4 = pc()

    # timeit's reasoning: a collection in the middle of a timed call is the harness's cost, not the
    # model's; nothing below allocates cyclic garbage, so collection can wait until the end.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        deadline = pc() + int(warmup_seconds * 1e9)
        done = 0
        while done < warmup or pc() < deadline:
            fn()
            done += 1
        warmup_done = done

        # Preallocated for the requested run count; beyond it array.append is amortized O(1),
        # outside the timed window. The buffer (8 B a sample) lands in the inference peak: about
        # 80 KB at 10,000 runs, 1.6 MB at the cap - small next to any runtime's own footprint.
        prealloc = max(1, runs)
        buf = array("q", bytes(8 * prealloc))
        i = 0
        capped = False
        start = pc()
        deadline = start + int(min_seconds * 1e9)
        while True:
            a = pc()
            fn()
            b = pc()
            if i < prealloc:
                buf[i] = b - a
            else:
                buf.append(b - a)
            i += 1
            if i >= runs and b >= deadline:
                break
            if i >= MAX_RUNS_PER_TRIAL:
                capped = True
                break
        timed_seconds = (pc() - start) / 1e9
    finally:
        if gc_was_enabled:
            gc.enable()

    inference_peak = probe.peak_mib()
    split = probe.split_mib()
    adapter.close()
    return {
        "pid": os.getpid(),
        "import_ms": cold["import_ms"],
        "load_ms": cold["load_ms"],
        "first_inference_ms": _ms(t4 - t3),
        "warmup_runs": warmup_done,
        "runs": i,
        "timed_seconds": round(timed_seconds, 3),
        "capped": capped,
        "pinned_cpus": pinned,
        "samples_ns": buf[:i].tolist(),
        "memory": {"method": probe.method, "baseline_rss_mb": baseline,
                   "load_peak_rss_mb": load_peak, "inference_peak_rss_mb": inference_peak, **split},
    }


def emit(result: dict) -> None:
    sys.stdout.write(MARKER + json.dumps(result, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def _describe_exit(rc: int) -> str:
    if rc < 0:
        try:
            name = signal.Signals(-rc).name
        except ValueError:
            name = f"signal {-rc}"
        hint = " - likely the out-of-memory killer" if -rc == signal.SIGKILL else ""
        return f"killed by {name}{hint}"
    return f"exit status {rc}"


def spawn_trial(run_py: Path, bundle: Path, index: int, total: int, threads: int, runs: int,
                warmup: int, min_seconds: float, warmup_seconds: float) -> dict:
    """Run one trial in a fresh interpreter; return its result or raise TrialCrash."""
    cmd = [sys.executable, str(run_py), "--_trial", "--bundle", str(bundle),
           "--threads", str(threads), "--runs", str(runs), "--warmup", str(warmup),
           "--min-seconds", repr(float(min_seconds)), "--warmup-seconds", repr(float(warmup_seconds))]
    env = dict(os.environ)
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # never write __pycache__ into a (possibly read-only) bundle
    try:
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, env=env, text=True, errors="replace")
    except OSError as exc:
        raise TrialCrash(f"trial {index}/{total} could not start {sys.executable} ({exc})") from exc
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(MARKER)]
    if proc.returncode != 0 or not lines:
        err = [ln.strip() for ln in proc.stderr.splitlines() if ln.strip()]
        # The child's own one-line error, else the last line of whatever it printed (a traceback's
        # last line names the exception).
        own = [ln for ln in err if ln.startswith("harness: error:")]
        last = own[-1][len("harness: error:"):].strip() if own else (err[-1] if err else "no output")
        how = _describe_exit(proc.returncode) if proc.returncode != 0 else "exit status 0 but no result"
        raise TrialCrash(f"trial {index}/{total} crashed ({how}): {last[:300]}")
    try:
        return json.loads(lines[-1][len(MARKER):])
    except ValueError as exc:
        raise TrialCrash(f"trial {index}/{total} printed an unreadable result line") from exc
