"""Robustness suite of the device-side harness (stdlib + numpy + the bundle's runtime only).

The failures users meet only after flashing: inputs the validation set never holds. Each case runs
the exact artifact once at batch 1 and records whether it ran and whether its outputs are finite:

  zeros            every input all zero (a blank image, an all-padding text)
  large            float inputs at +-1e4 x the validation data's largest magnitude (finite)
  float_max        float inputs at +-the dtype's largest finite value (overflow is expected)
  nan / inf        a validation sample with NaN / +-Inf written into a tenth of its values
  text_empty       text models: only the first and last real token of a sample (e.g. [CLS] [SEP])
  text_max_length  text models: every position a real token, attention mask all ones

A case ends as "ok" (finite outputs), "nonfinite" (NaN/Inf in the outputs), "error" (the runtime
raised: the input was refused, the process survived) or "crashed" (the process died). The cases run
in a child process, so a runtime that segfaults on NaN is reported instead of taking the harness
down; after a crash the remaining cases go on in a fresh child (EDGEKIT_HARNESS_FAULT=robust:<case>
makes the child segfault at that case, for tests). The suite passes when nothing
crashed and the cases with valid values (zeros, large, text_empty, text_max_length) gave finite
outputs; NaN/Inf inputs giving NaN outputs is recorded, not failed.

Then, on real data:
  reference_agreement  top-1 agreement of the artifact with the dev machine's fp32 source outputs
                       ("reference.<output>": validation.npz when it carries them, else samples.npz)
  noise                top-1 accuracy on the validation set with Gaussian noise added to float
                       inputs (sigma = level x the data's standard deviation, seeded), and the
                       agreement of the noisy predictions with the clean ones
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import _ek_bundle as B  # noqa: E402

MARK_BEGIN = "EDGEKIT_ROBUST_BEGIN "
MARK_CASE = "EDGEKIT_ROBUST_CASE "
MARK_DATA = "EDGEKIT_ROBUST_DATA "
NOISE_LEVELS = (0.01, 0.05)
MAX_DATA_SAMPLES = 1000        # noise/agreement use at most this many validation samples
REQUIRED_FINITE = ("zeros", "large", "text_empty", "text_max_length")
_SEED = 20240531


def _is_float(arr: np.ndarray) -> bool:
    return np.issubdtype(arr.dtype, np.floating)


def _role(name: str) -> str:
    n = name.lower()
    if "mask" in n:
        return "mask"
    if "type" in n or "segment" in n:
        return "type"
    return "ids"


def cases(manifest: dict, sample: dict[str, np.ndarray]) -> list[tuple[str, str, dict]]:
    """(name, description, feeds) for every case that applies to this model's inputs."""
    floats = {k: v for k, v in sample.items() if _is_float(v)}
    ints = {k: v for k, v in sample.items() if not _is_float(v)}
    out = [("zeros", "every input all zero", {k: np.zeros_like(v) for k, v in sample.items()})]
    if floats:
        def with_floats(fn):
            return {k: (fn(v) if _is_float(v) else v.copy()) for k, v in sample.items()}

        def alternating(v, mag):
            signs = np.where(np.arange(v.size) % 2 == 0, 1.0, -1.0).reshape(v.shape)
            return (signs * mag).astype(v.dtype)

        scale = max(float(np.nanmax(np.abs(v))) for v in floats.values()) or 1.0
        out.append(("large", f"float inputs at +-{1e4 * scale:.3g} (1e4 x the sample's largest magnitude)",
                    with_floats(lambda v: alternating(v, 1e4 * scale))))
        out.append(("float_max", "float inputs at +- the dtype's largest finite value",
                    with_floats(lambda v: alternating(v, float(np.finfo(v.dtype).max)))))
        rng = np.random.default_rng(_SEED)

        def poke(v, value):
            v = v.copy()
            flat = v.reshape(-1)
            idx = rng.choice(flat.size, size=max(1, flat.size // 10), replace=False)
            flat[idx] = value
            flat[0] = value
            return v
        out.append(("nan", "a real sample with NaN in a tenth of its float values",
                    with_floats(lambda v: poke(v, np.nan))))
        out.append(("inf", "a real sample with +Inf/-Inf in a tenth of its float values",
                    with_floats(lambda v: poke(poke(v, np.inf), -np.inf))))
    ids = {k: v for k, v in ints.items() if _role(k) == "ids"}
    if ids:
        masks = {k: v for k, v in ints.items() if _role(k) == "mask"}
        mask = next(iter(masks.values()), None)
        empty, full = {}, {}
        for k, v in sample.items():
            if k in ids:
                row = v.reshape(v.shape[0], -1)[0]
                valid = row[mask.reshape(mask.shape[0], -1)[0] > 0] if mask is not None and \
                    mask.size == v.size else row[row != 0]
                valid = valid if valid.size else row[:2]
                first, last = valid[0], valid[-1]
                e = np.zeros_like(row)
                e[0], e[min(1, e.size - 1)] = first, last
                body = valid[1:-1] if valid.size > 2 else valid
                f = np.resize(body, row.size).astype(row.dtype)
                f[0], f[-1] = first, last
                empty[k], full[k] = e.reshape(v.shape), f.reshape(v.shape)
            elif k in masks:
                e = np.zeros_like(v).reshape(v.shape[0], -1)
                e[:, :2] = 1
                empty[k], full[k] = e.reshape(v.shape), np.ones_like(v)
            else:
                empty[k], full[k] = np.zeros_like(v), np.zeros_like(v)
        out.append(("text_empty", "text: an empty text (first and last real token only)", empty))
        out.append(("text_max_length", "text: every position a real token, mask all ones", full))
    return out


def _finite(outputs: dict) -> bool:
    return all(bool(np.isfinite(np.asarray(v, dtype=np.float64)).all()) for v in outputs.values()
               if np.issubdtype(np.asarray(v).dtype, np.number))


def _emit(marker: str, obj) -> None:
    sys.stdout.write(marker + json.dumps(B.json_safe(obj), separators=(",", ":")) + "\n")
    sys.stdout.flush()


def _first(adapter) -> str:
    return adapter.output_names[0]


def _data_checks(adapter, bundle: Path, manifest: dict) -> dict:
    import _ek_stats as S
    first = _first(adapter)
    result: dict = {}
    # Top-1 agreement with the dev machine's fp32 (source) outputs.
    val_file = bundle / ((manifest.get("validation") or {}).get("file") or "validation.npz")
    sc_file = bundle / ((manifest.get("selfcheck") or {}).get("file") or "samples.npz")
    val = B.load_npz(val_file) if val_file.is_file() else {}
    src, arrays = ("validation", val) if f"reference.{first}" in val else ("samples", B.load_npz(sc_file))
    if f"reference.{first}" in arrays:
        inputs = B.input_arrays(arrays, manifest, sc_file if src == "samples" else val_file)
        n = min(B.n_samples(inputs), MAX_DATA_SAMPLES)
        ref = S.top1(arrays[f"reference.{first}"][:n])
        got = np.array([int(S.top1(adapter.run(B.batch(inputs, i))[first])[0]) for i in range(n)])
        result["reference_agreement"] = {"on": src, "n": n, "top1_agreement": float(np.mean(got == ref))}
    else:
        result["reference_agreement"] = {"on": None, "n": 0, "top1_agreement": None,
                                         "reason": "the bundle has no reference.<output> arrays"}
    # Accuracy under small input noise (float inputs only).
    if not val or "labels" not in val:
        result["noise"] = {"skipped": True, "reason": "the bundle has no labelled validation set"}
        return result
    inputs = B.input_arrays(val, manifest, val_file)
    floats = [k for k, v in inputs.items() if _is_float(v)]
    if not floats:
        result["noise"] = {"skipped": True, "reason": "no float inputs (noise applies to float inputs only)"}
        return result
    n = min(B.n_samples(inputs), MAX_DATA_SAMPLES)
    labels = val["labels"].reshape(-1)[:n]
    clean = np.array([int(S.top1(adapter.run(B.batch(inputs, i))[first])[0]) for i in range(n)])
    rng = np.random.default_rng(_SEED)
    levels = []
    for level in NOISE_LEVELS:
        noisy_inputs = dict(inputs)
        for k in floats:
            v = inputs[k][:n]
            sigma = level * float(np.std(v))
            noisy_inputs[k] = (v + rng.normal(0.0, sigma, size=v.shape)).astype(v.dtype)
        preds = np.array([int(S.top1(adapter.run(B.batch(noisy_inputs, i))[first])[0]) for i in range(n)])
        acc = float(np.mean(preds == labels))
        levels.append({"sigma_rel": level, "accuracy": acc,
                       "drop": round(float(np.mean(clean == labels)) - acc, 6),
                       "agreement_with_clean": float(np.mean(preds == clean))})
    result["noise"] = {"skipped": False, "n": n, "inputs": floats, "seed": _SEED,
                       "clean_accuracy": float(np.mean(clean == labels)), "levels": levels}
    return result


def child_main(argv: list[str]) -> int:
    """Run the cases not in --skip, then (unless --no-data) the data checks; one line per event."""
    import argparse
    from _ek_runtime import open_adapter
    p = argparse.ArgumentParser()
    p.add_argument("--bundle", type=Path, required=True)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--skip", default="")
    p.add_argument("--no-data", action="store_true")
    a = p.parse_args(argv)
    manifest, _ = B.load_manifest(a.bundle)
    sc_path = a.bundle / ((manifest.get("selfcheck") or {}).get("file") or "samples.npz")
    sample = B.batch(B.input_arrays(B.load_npz(sc_path), manifest, sc_path), 0)
    adapter = open_adapter(a.bundle, manifest, a.threads)
    adapter.import_runtime()
    adapter.load()
    skip = set(filter(None, a.skip.split(",")))
    import warnings
    warnings.simplefilter("ignore")  # numpy overflow warnings on purpose-made inputs
    for name, desc, feeds in cases(manifest, sample):
        if name in skip:
            continue
        sys.stdout.write(MARK_BEGIN + name + "\n")
        sys.stdout.flush()
        if os.environ.get("EDGEKIT_HARNESS_FAULT") == f"robust:{name}":  # tests: a real segfault here
            import signal
            os.kill(os.getpid(), signal.SIGSEGV)
        try:
            outs = adapter.run(feeds)
            finite = _finite(outs)
            first = np.asarray(outs[_first(adapter)])
            top = int(first.reshape(first.shape[0], -1)[0].argmax()) if first.size else None
            _emit(MARK_CASE, {"name": name, "input": desc, "status": "ok" if finite else "nonfinite",
                              "finite": finite, "top1": top if finite else None})
        except Exception as exc:  # the runtime refused the input; the process lives on
            text = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            _emit(MARK_CASE, {"name": name, "input": desc, "status": "error", "finite": None,
                              "error": f"{type(exc).__name__}: {text}"})
    if not a.no_data:
        sys.stdout.write(MARK_BEGIN + "data\n")
        sys.stdout.flush()
        _emit(MARK_DATA, _data_checks(adapter, a.bundle, manifest))
    adapter.close()
    return 0


def _describe(rc: int) -> str:
    if rc < 0:
        import signal
        try:
            return f"killed by {signal.Signals(-rc).name}"
        except ValueError:
            return f"killed by signal {-rc}"
    return f"exit status {rc}"


def robustness(bundle: Path, manifest: dict, threads: int, say=lambda msg: None) -> dict:
    """The report's "robustness" section; runs the suite in child processes (see module doc)."""
    t0 = time.time()
    results: dict[str, dict] = {}
    order: list[str] = []
    data = None
    data_error = None
    env = dict(os.environ)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    for _ in range(16):  # at most one restart per case, and then some
        skip = ",".join(order)
        cmd = [sys.executable, str(HERE / "_ek_robust.py"), "--bundle", str(bundle), "--threads", str(threads),
               "--skip", skip] + (["--no-data"] if data is not None or data_error else [])
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              env=env, text=True, errors="replace")
        begun = None
        for line in proc.stdout.splitlines():
            if line.startswith(MARK_BEGIN):
                begun = line[len(MARK_BEGIN):].strip()
            elif line.startswith(MARK_CASE):
                case = json.loads(line[len(MARK_CASE):])
                results[case["name"]] = case
                order.append(case["name"])
                begun = None
            elif line.startswith(MARK_DATA):
                data = json.loads(line[len(MARK_DATA):])
                begun = None
        if proc.returncode == 0 and begun is None:
            break
        err = [ln.strip() for ln in proc.stderr.splitlines() if ln.strip()]
        why = f"{_describe(proc.returncode)}" + (f": {err[-1][:300]}" if err else "")
        if begun is None:  # died before any case: the runtime cannot load at all
            data_error = f"the robustness process failed before any case ({why})"
            break
        if begun == "data":  # every case ran before the data checks
            data_error = f"the data checks crashed the process ({why})"
            break
        results[begun] = {"name": begun, "status": "crashed", "finite": None, "error": why}
        order.append(begun)
    cases_out = [results[n] for n in order]
    crashed = [c["name"] for c in cases_out if c["status"] == "crashed"]
    not_finite = [c["name"] for c in cases_out if c["name"] in REQUIRED_FINITE and c["status"] != "ok"]
    section = {"cases": cases_out, "crashed": crashed, "required_finite": list(REQUIRED_FINITE),
               "failed_required": not_finite,
               "passed": bool(cases_out) and not crashed and not not_finite and data_error is None}
    if data is not None:
        section.update(data)
    if data_error:
        section["error"] = data_error
    section["duration_s"] = round(time.time() - t0, 3)
    summary = ", ".join(f"{c['name']} {c['status']}" for c in cases_out)
    say(f"robustness: {'passed' if section['passed'] else 'FAILED'} ({summary})")
    return section


if __name__ == "__main__":
    sys.dont_write_bytecode = True
    try:
        sys.exit(child_main(sys.argv[1:]))
    except B.BundleError as exc:
        sys.stderr.write(f"harness: error: {exc}\n")
        sys.exit(exc.exit_code)
