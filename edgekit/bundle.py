"""Bundle layout, manifest, atomic write and verification (layout in docs/FORMATS.md).

A bundle is assembled in a hidden temporary sibling folder and renamed into place only once every
file and the manifest are written: an interrupted convert never leaves a folder that looks valid.
Nothing time-dependent goes into what is hashed (npz members carry a fixed date), so the same
inputs give byte-identical bundles.

A bundle holds regular files and folders only, and its manifest lists relative paths inside it. The
rule is the device harness's own (harness/_ek_bundle.py: check_tree, path_problem), imported here so
that `edgekit verify`, `edgekit bench`, the transports and the harness refuse exactly the same bundles.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from .errors import BundleError
from .harness import _ek_bundle as _device  # stdlib + numpy only: the dev side may import it, never the reverse
from .hashing import sha256_file

MANIFEST = "manifest.json"
MANIFEST_SCHEMA = "edgekit.manifest/1"
HARNESS_DIR = Path(__file__).parent / "harness"
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # the earliest date zip can store: reproducible npz files


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """np.savez, minus the wall-clock timestamps it stores per member."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name in sorted(arrays):
            info = zipfile.ZipInfo(name + ".npy", date_time=_ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            with zf.open(info, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.ascontiguousarray(arrays[name]), allow_pickle=False)


def copy_harness(dest: Path) -> list[Path]:
    dest.mkdir(parents=True, exist_ok=True)
    files = sorted(HARNESS_DIR.glob("*.py")) + sorted(HARNESS_DIR.glob("*.txt"))
    for f in files:
        shutil.copyfile(f, dest / f.name)
    return [dest / f.name for f in files]


SERVER_DIR = Path(__file__).resolve().parent / "server"


def copy_server(dest: Path) -> list[Path]:
    """The model server (server/run.py + _ek_app.py) beside the harness, for `python3 server/run.py`."""
    dest.mkdir(parents=True, exist_ok=True)
    files = sorted(SERVER_DIR.glob("*.py"))
    for f in files:
        shutil.copyfile(f, dest / f.name)
    return [dest / f.name for f in files]


def check_tree(bundle: str | Path) -> None:
    """Refuse a bundle holding a symbolic link, FIFO, socket or device file (one line naming each)."""
    try:
        _device.check_tree(Path(bundle))
    except _device.BundleError as exc:
        raise BundleError(str(exc)) from exc


def check_paths(bundle: str | Path, files) -> None:
    """Refuse manifest 'files' entries that are absolute, contain '..' or resolve outside the bundle."""
    b = Path(bundle)
    bad = [problem for rel in files if (problem := _device.path_problem(b, rel))]
    if bad:
        what = ("entry", "a relative path") if len(bad) == 1 else ("entries", "relative paths")
        raise BundleError(f"{b / MANIFEST}: 'files' {what[0]} {'; '.join(bad)}; expected {what[1]} "
                          "inside the bundle")


def hash_files(root: Path) -> dict[str, str]:
    check_tree(root)  # a link copied in by a stage would be refused by every reader of the bundle
    return {p.relative_to(root).as_posix(): sha256_file(p)
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != MANIFEST}


def write_manifest(root: Path, manifest: dict[str, Any]) -> Path:
    manifest = {"schema": MANIFEST_SCHEMA, **manifest, "files": hash_files(root)}
    path = root / MANIFEST
    path.write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return path


class BundleWriter:
    """Context manager: yields a temporary folder; on success it replaces `final` atomically."""

    def __init__(self, final: Path):
        self.final = Path(final)

    def __enter__(self) -> Path:
        self.final.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.final.name}.partial-", dir=self.final.parent))
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return
        os.chmod(self.tmp, 0o755)  # mkdtemp makes it private; a bundle is meant to be copied around
        old = None
        if self.final.exists():
            old = self.final.with_name(f".{self.final.name}.old-{os.getpid()}")
            os.replace(self.final, old)
        os.replace(self.tmp, self.final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def read_manifest(bundle: str | Path) -> dict[str, Any]:
    b = Path(bundle)
    path = b / MANIFEST
    if not path.is_file():
        raise BundleError(f"{b}: not an edgekit bundle (no {MANIFEST})")
    try:
        m = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(m, dict) or m.get("schema") != MANIFEST_SCHEMA:
        raise BundleError(f"{path}: not an edgekit manifest (schema {m.get('schema') if isinstance(m, dict) else None!r}, "
                          f"expected {MANIFEST_SCHEMA!r})")
    return m


def verify(bundle: str | Path) -> dict[str, Any]:
    """Check that the bundle holds regular files only and every file matches the manifest's sha256;
    collect all hash problems, raise them together."""
    b = Path(bundle)
    if b.is_dir():  # else read_manifest says it is not a bundle
        check_tree(b)  # before any file is read: manifest.json itself may be a link or a FIFO
    m = read_manifest(b)
    files = m.get("files", {})
    if not isinstance(files, dict):
        raise BundleError(f"{b / MANIFEST}: 'files' is not an object of path -> sha256")
    check_paths(b, files)
    problems = []
    for rel, digest in files.items():
        f = b / rel
        if not f.is_file():
            problems.append(f"{rel} missing")
        elif sha256_file(f) != digest:
            problems.append(f"{rel} sha256 mismatch")
    if problems:
        raise BundleError(f"{b}: bundle altered or corrupt: {'; '.join(problems)}")
    return m


def manifest_sha256(bundle: str | Path) -> str:
    return sha256_file(Path(bundle) / MANIFEST)
