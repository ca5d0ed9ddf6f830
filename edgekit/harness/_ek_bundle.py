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
import stat
from pathlib import Path, PurePosixPath

import numpy as np

MANIFEST_SCHEMA = "edgekit.manifest/1"
REPORT_SCHEMA = "edgekit.report/1"

# Hashing reads in 1 MiB chunks so that a multi-hundred-MiB model never sits in memory whole
# (the parent process's RSS is not measured, but the device may be small).
_CHUNK = 1 << 20


class BundleError(Exception):
    """The bundle is missing, malformed or altered. Exit code 2."""

    exit_code = 2


# What lstat may find in a bundle besides regular files and folders, in words. A symbolic link is
# refused even when it points inside the bundle: where it leads is decided wherever the bundle is
# unpacked, not where its sha256 was taken, and copies (scp -r, tar -h, cp -L) disagree on whether to
# follow it. A FIFO, socket or device has no fixed bytes to hash (and a FIFO blocks the reader).
_NOT_REGULAR = ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                (stat.S_ISBLK, "a block device"))
_MAX_NAMED = 5  # entries named in one error line; the rest are counted


class TrialCrash(Exception):
    """A measurement trial process died or printed no result. Exit code 3."""

    exit_code = 3


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _what(path: str, mode: int) -> str:
    for test, words in _NOT_REGULAR:
        if test(mode):
            if words == "a symbolic link":
                try:
                    return f"{words} (to {os.readlink(path)!r})"
                except OSError:
                    break
            return words
    return f"not a regular file (mode {stat.S_IFMT(mode):o})"


def tree_problems(bundle: Path) -> list[str]:
    """Every entry under `bundle` that is neither a regular file nor a folder, as "REL is WHAT"
    (REL relative to the bundle, sorted). Only lstat: no link is followed, no file opened."""
    problems = []
    pending = [("", str(bundle))]
    while pending:
        prefix, folder = pending.pop()
        try:
            with os.scandir(folder) as it:
                entries = list(it)
        except OSError as exc:
            raise BundleError(f"{folder}: unreadable ({exc.strerror or exc})") from exc
        for entry in entries:
            rel = prefix + entry.name
            try:
                mode = entry.stat(follow_symlinks=False).st_mode
            except OSError as exc:
                raise BundleError(f"{entry.path}: unreadable ({exc.strerror or exc})") from exc
            if stat.S_ISDIR(mode):
                pending.append((rel + "/", entry.path))
            elif not stat.S_ISREG(mode):
                problems.append(f"{rel} is {_what(entry.path, mode)}")
    return sorted(problems)


def check_tree(bundle: Path) -> None:
    """Refuse a bundle holding anything but regular files and folders, naming every such entry."""
    problems = tree_problems(bundle)
    if problems:
        named = problems[:_MAX_NAMED]
        if len(problems) > _MAX_NAMED:
            named.append(f"and {len(problems) - _MAX_NAMED} more")
        raise BundleError(f"{bundle}: {'; '.join(named)}; a bundle holds regular files and folders only")


def path_problem(bundle: Path, rel) -> str | None:
    """Why a manifest path is not a path inside the bundle, or None when it is one."""
    if not isinstance(rel, str) or not rel:
        return f"{rel!r} is not a file name"
    if "\0" in rel:
        return f"{rel!r} contains a NUL byte"
    p = PurePosixPath(rel)
    if p.is_absolute():
        return f"{rel!r} is an absolute path"
    if ".." in p.parts:
        return f"{rel!r} contains '..'"
    # With no links in the tree (check_tree) a plain relative path cannot leave the bundle; the
    # resolved path is still compared, since the manifest may be read before or without that walk.
    root = os.path.realpath(bundle)
    if os.path.commonpath([root, os.path.realpath(os.path.join(root, rel))]) != root:
        return f"{rel!r} resolves outside the bundle"
    return None


def load_manifest(bundle: Path) -> tuple[dict, str]:
    """Read and sanity-check <bundle>/manifest.json; return (manifest, sha256 of its bytes).
    The bundle's tree is checked first (check_tree): manifest.json itself may be a link."""
    if not bundle.is_dir():
        raise BundleError(f"{bundle}: bundle directory not found")
    check_tree(bundle)
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
    problem = path_problem(bundle, rel)
    if problem:
        raise BundleError(f"{bundle / 'manifest.json'}: {where} entry {problem}; expected a relative "
                          "path inside the bundle")
    return bundle / rel


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
