"""The harness's own regular-files rule (_ek_bundle.check_tree / path_problem), which the dev side
imports too: what lstat finds, in words, and which manifest paths are inside the bundle."""

from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path

import pytest


def test_tree_problems_name_each_kind(harness_module):
    B = harness_module("_ek_bundle")
    # AF_UNIX paths are limited to ~107 bytes: a short folder of its own, not pytest's tmp_path
    with tempfile.TemporaryDirectory(prefix="ek-") as d:
        root = Path(d)
        (root / "sub").mkdir()
        (root / "model.onnx").write_bytes(b"x")
        (root / "sub" / "ok.txt").write_text("fine")
        os.symlink("../model.onnx", root / "sub" / "alias.onnx")
        os.symlink("sub", root / "linked")
        os.mkfifo(root / "pipe")
        with socket.socket(socket.AF_UNIX) as s:
            s.bind(str(root / "sock"))
            assert B.tree_problems(root) == [
                "linked is a symbolic link (to 'sub')",
                "pipe is a FIFO (named pipe)",
                "sock is a socket",
                "sub/alias.onnx is a symbolic link (to '../model.onnx')",
            ]
            with pytest.raises(B.BundleError) as info:
                B.check_tree(root)
        assert str(info.value).startswith(f"{root}: linked is a symbolic link")
        assert str(info.value).endswith("; a bundle holds regular files and folders only")


def test_a_char_device_node(harness_module, tmp_path):
    """mknod needs privileges; where it is refused, the same rule is covered by the FIFO and socket."""
    B = harness_module("_ek_bundle")
    import stat
    try:
        os.mknod(tmp_path / "null", 0o600 | stat.S_IFCHR, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("mknod is not permitted here (not root, or a restricted container)")
    assert B.tree_problems(tmp_path) == ["null is a character device"]


def test_only_the_first_entries_are_named(harness_module, tmp_path):
    B = harness_module("_ek_bundle")
    for i in range(8):
        os.symlink("x", tmp_path / f"l{i}")
    with pytest.raises(B.BundleError, match=r"l4 is a symbolic link \(to 'x'\); and 3 more; a bundle holds"):
        B.check_tree(tmp_path)


@pytest.mark.parametrize("rel, problem", [
    ("model.onnx", None), ("harness/run.py", None), ("./samples.npz", None),
    ("../outside", "'../outside' contains '..'"), ("harness/../../x", "'harness/../../x' contains '..'"),
    ("/etc/passwd", "'/etc/passwd' is an absolute path"), ("", "'' is not a file name"),
    ("a\0b", "'a\\x00b' contains a NUL byte"),
])
def test_path_problem(harness_module, tmp_path, rel, problem):
    assert harness_module("_ek_bundle").path_problem(tmp_path, rel) == problem


def test_run_py_refuses_a_socket_before_anything_runs(onnx_bundle, hx):
    """The hand-built bundle, copied to a short path, with a socket beside its manifest."""
    import shutil
    import subprocess
    import sys
    with tempfile.TemporaryDirectory(prefix="ek-") as d:
        b = Path(d) / onnx_bundle.name
        shutil.copytree(onnx_bundle, b)
        with socket.socket(socket.AF_UNIX) as s:
            s.bind(str(b / "s"))
            proc = subprocess.run([sys.executable, "harness/run.py", *hx.FAST], cwd=b, capture_output=True,
                                  text=True, timeout=120)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.strip() == (f"harness: error: {b}: s is a socket; a bundle holds regular files "
                                       "and folders only")
        assert not (b / "report.json").exists()
