"""Read a TOML configuration file (profiles, recipes, device inventories, gate policies)."""

from __future__ import annotations

import tomllib
from pathlib import Path

from .errors import ConfigError


def read_toml(path: str | Path, what: str, hint: str = "") -> dict:
    """The parsed file; a missing, unreadable or invalid file is a ConfigError naming it."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: {what} file not found{hint}")
    try:
        return tomllib.loads(p.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, OSError) as exc:
        raise ConfigError(f"{p}: not valid TOML ({exc})") from exc
