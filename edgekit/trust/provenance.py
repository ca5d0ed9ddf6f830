"""Provenance helpers for convert: the git commit of the repository a source model lives in."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any


def _source_path(spec: str) -> Path | None:
    """The file or folder a source spec names (file.py:factory -> file.py); None for module paths."""
    p = Path(spec)
    if p.exists():
        return p
    head, sep, _ = spec.rpartition(":")
    if sep and head and Path(head).exists():
        return Path(head)
    return None


def source_commit(spec: str | Path) -> dict[str, Any]:
    """{"source_commit": sha, "source_commit_dirty": bool} when the source sits in a git work tree
    (dirty: the source file, or anything in the repository, has uncommitted changes); {} otherwise
    (no git, not a repository, a package.module:factory spec)."""
    p = _source_path(str(spec))
    git = shutil.which("git")
    if p is None or git is None:
        return {}
    cwd = p if p.is_dir() else p.parent
    try:
        head = subprocess.run([git, "-C", str(cwd), "rev-parse", "--verify", "HEAD"], capture_output=True,
                              text=True, timeout=20)
        if head.returncode != 0 or not re.fullmatch(r"[0-9a-f]{40,64}", head.stdout.strip()):
            return {}
        status = subprocess.run([git, "-C", str(cwd), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return {}
    return {"source_commit": head.stdout.strip(), "source_commit_dirty": bool(status.stdout.strip())}
