"""Fixtures for the trust tests: fast hand-made bundles (for refusals that happen before any model
loads) and key pairs. Real converted bundles come from tests/conftest.py (digits_bundles)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def fake_bundle(tmp_path) -> Path:
    """A structurally valid bundle (manifest, hashes, the real harness) around a dummy model file."""
    from edgekit.bundle import copy_harness, write_manifest
    b = tmp_path / "fake-bundle"
    b.mkdir()
    (b / "model.onnx").write_bytes(b"\x08\x07not really onnx" * 10)
    copy_harness(b / "harness")
    (b / "README.txt").write_text("test bundle\n")
    write_manifest(b, {"bundle": {"name": "fake", "label": "v1"},
                       "model": {"file": "model.onnx", "files": ["model.onnx"], "format": "onnx",
                                 "runtime": "onnxruntime", "precision": "fp32",
                                 "inputs": [{"name": "x", "shape": [None, 4], "dtype": "float32"}],
                                 "outputs": [{"name": "y", "shape": [None, 2], "dtype": "float32"}]},
                       "target": {"name": "fake", "budget": {}},
                       "provenance": {"license": "MIT", "provenance": "tests"}})
    return b


@pytest.fixture
def keys(tmp_path):
    """Two key pairs: (a.key, a.pub), (b.key, b.pub)."""
    from edgekit.trust.sign import keygen
    d = tmp_path / "keys"
    d.mkdir()
    return keygen(d / "a"), keygen(d / "b")
