"""Shared fixtures: a real digits CNN (trained in seconds) with its data, and converted bundles."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def digits_example(tmp_path_factory) -> dict:
    """digits_cnn.pt2 + calibration.npz + validation.npz, written by the demo's own code."""
    from edgekit.demo import write_example
    return write_example(tmp_path_factory.mktemp("digits"))


@pytest.fixture(scope="session")
def digits_bundles(digits_example, tmp_path_factory) -> dict:
    """x86-avx2 bundles in fp32 and int8, converted once per test session."""
    from edgekit.convert import convert
    out = tmp_path_factory.mktemp("bundles")
    results = convert(str(digits_example["model"]), ["x86-avx2"], str(digits_example["calibration"]),
                      str(digits_example["validation"]), out, precisions=["fp32", "int8"],
                      license="MIT", provenance="tests", progress=False)
    return {r.precision: r for r in results}


@pytest.fixture
def bundle_copy(digits_bundles, tmp_path):
    """A private copy of the int8 bundle, for tests that tamper with it."""
    def make(precision: str = "int8") -> Path:
        dest = tmp_path / f"bundle-{precision}"
        shutil.copytree(digits_bundles[precision].path, dest)
        return dest
    return make


def run_cli(*args: str, cwd: Path | None = None):
    """Run the real `edgekit` entry point in a fresh process."""
    import subprocess
    return subprocess.run([sys.executable, "-m", "edgekit", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd or REPO, timeout=600)


def assert_one_line_error(proc, *needles: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    err = proc.stderr.strip()
    assert "Traceback" not in proc.stderr, proc.stderr
    assert len(err.splitlines()) == 1, err
    for n in needles:
        assert n in err, (n, err)


def digits_arrays(example: dict):
    with np.load(example["calibration"]) as z:
        x, y = z["x"], z["labels"]
    return x, y
