"""A bundle holds regular files and folders only (issue #11, item 4): a symbolic link (even one that
points inside the bundle), a FIFO, or a manifest entry that leaves the bundle is refused by
`edgekit verify`, `edgekit bench`, the harness itself (`python3 harness/run.py` inside the bundle)
and the local transport, each with exit 2 and one line naming the entry. Real bundles (the digits
CNN converted by the session fixture), real links and FIFOs; nothing mocked."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ektest import assert_one_line_error

FAST = ["--runs", "5", "--warmup", "1", "--min-seconds", "0", "--warmup-seconds", "0", "--trials", "1"]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _link_inside(b: Path) -> str:
    """samples.npz becomes a link to a byte-identical copy: every sha256 still matches."""
    shutil.copyfile(b / "samples.npz", b / "samples-copy.npz")
    (b / "samples.npz").unlink()
    os.symlink("samples-copy.npz", b / "samples.npz")
    return "samples.npz is a symbolic link"


def _link_outside(b: Path) -> str:
    (b / "README.txt").unlink()
    os.symlink("/etc/passwd", b / "README.txt")
    return "README.txt is a symbolic link (to '/etc/passwd')"


def _linked_folder(b: Path) -> str:
    """harness/ moved to harness-real/ and linked back: the same bytes under every listed path."""
    os.rename(b / "harness", b / "harness-real")
    os.symlink("harness-real", b / "harness")
    return "harness is a symbolic link (to 'harness-real')"


def _fifo(b: Path) -> str:
    """validation.npz, a listed file, becomes a FIFO: a reader that opened it would block forever
    (the subprocess timeouts below turn that into a failure instead of a hang)."""
    (b / "validation.npz").unlink()
    os.mkfifo(b / "validation.npz")
    return "validation.npz is a FIFO (named pipe)"


def _escaping_entry(b: Path) -> str:
    """A manifest entry '../outside' with the right sha256 of a real file beside the bundle: only
    the path rule can refuse it."""
    outside = b.parent / "outside"
    outside.write_bytes(b"not part of the bundle\n")
    m = json.loads((b / "manifest.json").read_text())
    m["files"]["../outside"] = _sha256(outside)
    (b / "manifest.json").write_text(json.dumps(m, indent=2) + "\n")
    return "'../outside' contains '..'"


CASES = {"link-inside": _link_inside, "link-to-etc-passwd": _link_outside, "linked-folder": _linked_folder,
         "fifo": _fifo, "dotdot-entry": _escaping_entry}


@pytest.fixture(params=sorted(CASES))
def bad_bundle(request, bundle_copy):
    b = bundle_copy("int8")
    return b, CASES[request.param](b)


def _run(*argv, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *map(str, argv)], capture_output=True, text=True, cwd=cwd,
                          timeout=120)


def test_edgekit_verify_refuses(bad_bundle):
    b, needle = bad_bundle
    proc = _run("-m", "edgekit", "verify", b)
    assert_one_line_error(proc, needle)
    assert proc.stderr.startswith("edgekit: error: ")


def test_edgekit_bench_refuses(bad_bundle, tmp_path):
    b, needle = bad_bundle
    proc = _run("-m", "edgekit", "bench", b, "--out", tmp_path / "r.json", *FAST)
    assert_one_line_error(proc, needle)
    assert not (tmp_path / "r.json").exists()


def test_the_harness_refuses(bad_bundle, tmp_path):
    """As on a device: cwd = the bundle, `python3 harness/run.py`, no edgekit involved."""
    b, needle = bad_bundle
    proc = _run(Path("harness") / "run.py", "--out", tmp_path / "r.json", *FAST, cwd=b)
    assert_one_line_error(proc, needle)
    assert proc.stderr.startswith("harness: error: ")
    assert not (tmp_path / "r.json").exists()


def test_the_local_transport_refuses_before_copying(bad_bundle, tmp_path):
    from edgekit.devices.base import DeviceError
    from edgekit.devices.inventory import load_devices
    from edgekit.devices.transports import transport_for

    b, needle = bad_bundle
    work = tmp_path / "work"
    f = tmp_path / "devices.toml"
    f.write_text(f'[[device]]\nname = "here"\ntransport = "local"\ntarget = "x86-avx2"\nworkdir = "{work}"\n')
    t = transport_for(load_devices(f)[0])
    with pytest.raises(DeviceError) as info:
        t.put(b)
    assert info.value.kind == "bundle" and needle in str(info.value) and "\n" not in str(info.value)
    assert not work.exists()  # refused before a work folder was made, nothing copied
    # and the fleet command line: exit 2, one line, no device used
    proc = _run("-m", "edgekit", "bench", b, "--devices", f, "--out", tmp_path / "out", *FAST)
    assert_one_line_error(proc, needle)
    assert not work.exists()


def test_a_good_bundle_still_passes(bundle_copy):
    """The same checks accept the converted bundle as it is (with a report.json beside the manifest)."""
    b = bundle_copy("int8")
    (b / "report.json").write_text("{}\n")
    proc = _run("-m", "edgekit", "verify", b)
    assert proc.returncode == 0, proc.stderr


def test_every_offending_entry_is_named_on_one_line(bundle_copy):
    from edgekit.bundle import verify
    from edgekit.errors import BundleError

    b = bundle_copy("int8")
    _link_outside(b)
    _fifo(b)
    os.symlink("../../elsewhere", b / "harness" / "dangling.py")  # dangling: lstat still sees it
    with pytest.raises(BundleError) as info:
        verify(b)
    msg = str(info.value)
    assert "\n" not in msg
    assert msg == (f"{b}: README.txt is a symbolic link (to '/etc/passwd'); harness/dangling.py is a "
                   "symbolic link (to '../../elsewhere'); validation.npz is a FIFO (named pipe); a bundle "
                   "holds regular files and folders only")


def test_absolute_entry_refused(bundle_copy):
    from edgekit.bundle import verify
    from edgekit.errors import BundleError

    b = bundle_copy("int8")
    m = json.loads((b / "manifest.json").read_text())
    m["files"]["/etc/passwd"] = _sha256(Path("/etc/passwd"))
    (b / "manifest.json").write_text(json.dumps(m, indent=2) + "\n")
    with pytest.raises(BundleError, match=r"'files' entry '/etc/passwd' is an absolute path; expected a relative path"):
        verify(b)
    proc = _run(b / "harness" / "run.py", "--out", b.parent / "r.json", *FAST)
    assert_one_line_error(proc, "'/etc/passwd' is an absolute path")


def test_a_manifest_is_never_written_over_a_link(tmp_path):
    """The write side keeps the rule too: convert cannot produce a bundle the readers would refuse."""
    from edgekit.bundle import write_manifest
    from edgekit.errors import BundleError

    (tmp_path / "model.onnx").write_bytes(b"x")
    os.symlink("model.onnx", tmp_path / "alias.onnx")
    with pytest.raises(BundleError, match="alias.onnx is a symbolic link"):
        write_manifest(tmp_path, {})
    assert not (tmp_path / "manifest.json").exists()
