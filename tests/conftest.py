"""Shared fixtures: a real digits CNN (trained in seconds) with its data, and converted bundles."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ektest import REPO  # noqa: F401  (shared helpers live in ektest.py: conftest names clash)


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
