"""source_commit: the git commit of the repository a source model lives in."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from edgekit.trust.provenance import source_commit

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def git(cwd, *args):
    return subprocess.run(["git", "-C", str(cwd), *args], check=True, capture_output=True, text=True).stdout.strip()


def test_commit_of_a_source_in_a_repository(tmp_path):
    git(tmp_path, "init", "-q")
    model = tmp_path / "model.py"
    model.write_text("def make(): pass\n")
    git(tmp_path, "add", "model.py")
    git(tmp_path, "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-q", "-m", "m")
    sha = git(tmp_path, "rev-parse", "HEAD")
    assert source_commit(f"{model}:make") == {"source_commit": sha, "source_commit_dirty": False}
    model.write_text("def make(): return 1\n")
    assert source_commit(model)["source_commit_dirty"] is True


def test_no_repository_or_module_spec(tmp_path):
    (tmp_path / "m.onnx").write_bytes(b"x")
    assert source_commit(tmp_path / "m.onnx") == {}           # /tmp is not in a repository
    assert source_commit("some.package.module:factory") == {}
