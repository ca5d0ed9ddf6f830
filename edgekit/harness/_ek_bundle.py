"""Bundle access for the device-side harness: manifest, integrity, data files, report writing.

Runs on the device with the stdlib and numpy only (never edgekit, torch, rich or scipy): the bundle
is the whole contract between the dev machine and the device (docs/FORMATS.md in the edgekit repo).

Every problem a user can cause (a bad, altered or incomplete bundle) is raised as BundleError with a
one-line message that names the file and what is wrong; run.py prints it as
"harness: error: <message>" and exits 2, never with a traceback.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

import numpy as np

MANIFEST_SCHEMA = "edgekit.manifest/1"
REPORT_SCHEMA = "edgekit.report/1"

# Hashing reads in 1 MiB chunks so that a multi-hundred-MiB model never sits in memory whole
# (the parent process's RSS is not measured, but the device may be small).
_CHUNK = 1 << 20


class BundleError(Exception):
    """The bundle is missing, malformed or altered. Exit code 2."""

    exit_code = 2


class TrialCrash(Exception):
    """A measurement trial process died or printed no result. Exit code 3."""

    exit_code = 3


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def load_manifest(bundle: Path) -> tuple[dict, str]:
    """Read and sanity-check <bundle>/manifest.json; return (manifest, sha256 of its bytes)."""
    if not bundle.is_dir():
        raise BundleError(f"{bundle}: bundle directory not found")
    path = bundle / "manifest.json"
    if not path.is_file():
        raise BundleError(f"{path}: missing (not an edgekit bundle, or an incomplete one)")
    try:
        raw = path.read_bytes()
        manifest = json.loads(raw.decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise BundleError(f"{path}: unreadable ({first})") from exc
    if not isinstance(manifest, dict):
        raise BundleError(f"{path}: not a JSON object")
    if manifest.get("schema") != MANIFEST_SCHEMA:
        raise BundleError(
            f"{path}: schema is {manifest.get('schema')!r}, expected {MANIFEST_SCHEMA!r}"
        )
    model = manifest.get("model")
    if not isinstance(model, dict):
        raise BundleError(f"{path}: key 'model' missing or not an object")
    for key in ("file", "runtime"):
        if not isinstance(model.get(key), str) or not model.get(key):
            raise BundleError(f"{path}: key 'model.{key}' missing or not a string")
    for key in ("inputs", "outputs"):
        specs = model.get(key)
        if not isinstance(specs, list) or not specs:
            raise BundleError(f"{path}: key 'model.{key}' missing or empty")
        for spec in specs:
            if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
                raise BundleError(f"{path}: every entry of 'model.{key}' needs a 'name'")
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise BundleError(f"{path}: key 'files' missing or empty (no sha256 to verify against)")
    return manifest, hashlib.sha256(raw).hexdigest()


def model_files(manifest: dict) -> list[str]:
    """The artifact's files (OpenVINO: model.xml + model.bin), main file first."""
    model = manifest["model"]
    files = list(model.get("files") or [])
    if model["file"] not in files:
        files.insert(0, model["file"])
    return files


def _safe_path(bundle: Path, rel: str, where: str) -> Path:
    # A manifest is data from elsewhere: refuse entries that point outside the bundle.
    p = Path(rel)
    if not rel or p.is_absolute() or ".." in p.parts:
        raise BundleError(f"{bundle / 'manifest.json'}: {where} entry {rel!r} is not a path inside the bundle")
    return bundle / p


def verify_files(bundle: Path, manifest: dict) -> int:
    """Check that every file in manifest["files"] exists and matches its sha256; return the count.

    The files the harness reads (model, samples, validation) must be covered too: an unlisted
    artifact could be swapped without anyone noticing.
    """
    files = manifest["files"]
    required = list(model_files(manifest))
    for section in ("selfcheck", "validation"):
        name = (manifest.get(section) or {}).get("file")
        if name:
            required.append(name)
    for rel in required:
        if rel not in files:
            raise BundleError(
                f"{_safe_path(bundle, rel, 'model/data')}: not covered by manifest.json 'files' "
                "(cannot verify it)"
            )
    for rel, digest in files.items():
        path = _safe_path(bundle, rel, "'files'")
        if not path.is_file():
            raise BundleError(f"{path}: listed in manifest.json but missing from the bundle")
        if not isinstance(digest, str) or len(digest) != 64:
            raise BundleError(f"{bundle / 'manifest.json'}: 'files' entry {rel!r} has no valid sha256")
        try:
            actual = sha256_file(path)
        except OSError as exc:
            raise BundleError(f"{path}: unreadable ({exc.strerror or exc})") from exc
        if actual != digest.lower():
            raise BundleError(f"{path}: sha256 mismatch with manifest.json (bundle altered or corrupt)")
    return len(files)


def load_npz(path: Path) -> dict[str, np.ndarray]:
    """Load every array of an .npz; allow_pickle=False since bundle data must never run code."""
    if not path.is_file():
        raise BundleError(f"{path}: missing from the bundle")
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: np.asarray(z[k]) for k in z.files}
    except Exception as exc:  # zipfile/numpy raise many types for a corrupt file
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise BundleError(f"{path}: not a readable .npz ({first})") from exc


def input_arrays(arrays: dict[str, np.ndarray], manifest: dict, path: Path) -> dict[str, np.ndarray]:
    """The "input.<name>" array for every model input, all with the same N on axis 0."""
    out: dict[str, np.ndarray] = {}
    for spec in manifest["model"]["inputs"]:
        key = f"input.{spec['name']}"
        if key not in arrays:
            raise BundleError(f"{path}: no array {key!r} for model input {spec['name']!r}")
        arr = arrays[key]
        if arr.ndim < 1 or arr.shape[0] < 1:
            raise BundleError(f"{path}: array {key!r} holds no samples (shape {list(arr.shape)})")
        out[spec["name"]] = arr
    counts = {a.shape[0] for a in out.values()}
    if len(counts) != 1:
        raise BundleError(f"{path}: input arrays disagree on the number of samples {sorted(counts)}")
    return out


def n_samples(inputs: dict[str, np.ndarray]) -> int:
    return next(iter(inputs.values())).shape[0]


def batch(inputs: dict[str, np.ndarray], i: int) -> dict[str, np.ndarray]:
    """Sample i at batch 1 ([i:i+1] keeps the batch axis), contiguous as runtimes expect."""
    return {name: np.ascontiguousarray(arr[i : i + 1]) for name, arr in inputs.items()}


def json_safe(obj):
    """NaN/Inf are not JSON (RFC 8259): turn them into null, numpy scalars into Python numbers."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def dumps(obj, indent: int = 1, _level: int = 0) -> str:
    """JSON with one key per line, but a list of plain numbers/strings on a single line: raw latency
    samples (hundreds of thousands per trial) would otherwise take one line each, making the
    report several times longer and unreadable in an editor. Strict JSON (allow_nan=False)."""
    pad = " " * (indent * (_level + 1))
    end = " " * (indent * _level)
    if isinstance(obj, dict):
        if not obj:
            return "{}"
        items = [f"{pad}{json.dumps(str(k))}: {dumps(v, indent, _level + 1)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + end + "}"
    if isinstance(obj, (list, tuple)):
        if all(not isinstance(v, (dict, list, tuple)) for v in obj):
            return json.dumps(list(obj), separators=(", ", ": "), allow_nan=False)
        items = [pad + dumps(v, indent, _level + 1) for v in obj]
        return "[\n" + ",\n".join(items) + "\n" + end + "]"
    return json.dumps(obj, allow_nan=False)


def write_json_atomic(path: Path, data: dict) -> None:
    """Write to a temporary sibling, fsync, then os.replace: a reader (the gate) sees either the old
    report or the complete new one, never a truncated file, even if the device loses power."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = dumps(json_safe(data)) + "\n"
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise BundleError(f"{path}: cannot write the report ({exc.strerror or exc})") from exc
