"""Helpers shared by the device tests (a plain module: `from conftest import` is ambiguous when
several conftest.py files exist)."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "ssh_test_server.sh"

# Harness settings small enough for a run in a few seconds (one trial, a handful of runs).
FAST = {"runs": 5, "warmup": 1, "min_seconds": 0.0, "warmup_seconds": 0.0, "trials": 1}


def write_devices(path: Path, *devices: dict) -> Path:
    """devices.toml from dicts (strings, ints, bools, lists of strings)."""
    def val(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, list):
            return "[" + ", ".join(val(x) for x in v) + "]"
        return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'
    text = "".join("[[device]]\n" + "".join(f"{k} = {val(v)}\n" for k, v in d.items()) + "\n"
                   for d in devices)
    path.write_text(text, encoding="utf-8")
    return path


def processes_mentioning(text: str) -> list[int]:
    """PIDs whose command line contains `text` (to prove nothing is left running)."""
    pids = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if text in (p / "cmdline").read_bytes().decode("utf-8", "replace"):
                    pids.append(int(p.name))
            except OSError:
                pass
    return pids
