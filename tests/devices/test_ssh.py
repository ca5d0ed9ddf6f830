"""The SSH transport against a real OpenSSH server on 127.0.0.1 (throwaway keys, non-default port):
a real run, and every fault a user meets - each one a clear per-device error, no report written,
the other devices unaffected, the remote work folder removed."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from devtest import processes_mentioning as _processes_mentioning
from devtest import FAST, write_devices
from edgekit.devices.fleet import fleet_bench
from edgekit.report.load import load_report
from ektest import run_cli


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _python_without_onnxruntime(tmp_path: Path) -> str:
    """A real interpreter with numpy but no onnxruntime: this venv's python without site-packages
    (-S), given only numpy on its path."""
    import numpy
    site = Path(numpy.__file__).resolve().parent.parent
    sp = tmp_path / "only-numpy"
    sp.mkdir()
    for name in ("numpy", "numpy.libs"):
        if (site / name).exists():
            (sp / name).symlink_to(site / name)
    py = tmp_path / "python-no-ort"
    py.write_text(f'#!/bin/sh\nPYTHONPATH={sp} exec {sys.executable} -S "$@"\n')
    py.chmod(0o755)
    return str(py)


def _leftovers(workdir: Path) -> list[str]:
    return sorted(p.name for p in workdir.iterdir()) if workdir.exists() else []


def test_a_fleet_of_good_and_broken_ssh_devices(sshd, ssh_device, digits_bundles, tmp_path):
    alias_config = tmp_path / "ssh_config"
    alias_config.write_text(f"Host edgekit-test-alias\n  HostName 127.0.0.1\n  Port {sshd['port']}\n"
                            f"  User {sshd['user']}\n  IdentityFile {sshd['identity']}\n"
                            f"  UserKnownHostsFile {sshd['known_hosts']}\n")
    remote = tmp_path / "remote"
    devices = [
        ssh_device(name="good", labels=["lab"]),
        # ~/.ssh/config aliases are honoured: the host is handed to ssh as written (-F points at a
        # test config here instead of ~/.ssh/config)
        ssh_device(name="alias", host="edgekit-test-alias", port=None, user=None, identity=None,
                   known_hosts=None, ssh_config=str(alias_config), labels=["lab"]),
        ssh_device(name="no-hostkey-check", known_hosts=None, host_key_checking=False, labels=["lab"]),
        ssh_device(name="closed-port", port=_closed_port(), labels=["lab"]),
        ssh_device(name="wrong-key", identity=sshd["other_identity"], labels=["lab"]),
        ssh_device(name="hostkey-mismatch", known_hosts=sshd["other_known_hosts"], labels=["lab"]),
        ssh_device(name="hostkey-unknown", known_hosts=str(tmp_path / "empty_known_hosts"), labels=["lab"]),
        ssh_device(name="no-numpy", python="/usr/bin/python3", labels=["lab"]),
        ssh_device(name="no-onnxruntime", python=_python_without_onnxruntime(tmp_path), labels=["lab"]),
        ssh_device(name="no-python", python="/nonexistent/python3", labels=["lab"]),
        ssh_device(name="not-in-lab", labels=["elsewhere"]),
    ]
    (tmp_path / "empty_known_hosts").write_text("")
    f = write_devices(tmp_path / "devices.toml", *devices)
    out = tmp_path / "reports"
    # A stale report from an earlier run must not survive a failed run of the same pair.
    (out / "closed-port").mkdir(parents=True)
    (out / "closed-port" / "x86-avx2.json").write_text("{}")
    t0 = time.time()
    res = fleet_bench(digits_bundles["int8"].path, f, "lab", out=out, retries=1, retry_delay=0.1,
                      parallel=4, progress=False, table=False, **FAST)
    took = time.time() - t0
    rows = {r.device: r for r in res.results}
    assert "not-in-lab" not in rows
    for name in ("good", "alias", "no-hostkey-check"):
        r = rows[name]
        assert r.status == "ok", (name, r.error)
        report = load_report(out / name / "x86-avx2.json")
        assert report["self_check"]["passed"] and report["bundle"]["integrity"]["verified"]
        assert report["environment"]["emulated"] is False
        assert abs(report["accuracy"]["value"] - digits_bundles["int8"].accuracy) < 1e-9
        assert r.summary["p50_ms"] > 0
    expect = {"closed-port": ("unreachable", "unreachable"),
              "wrong-key": ("auth", "authentication refused"),
              "hostkey-mismatch": ("host-key", "host key mismatch"),
              "hostkey-unknown": ("host-key", "not in known_hosts"),
              "no-numpy": ("runtime-missing", "pip install numpy"),
              "no-onnxruntime": ("runtime-missing", "pip install onnxruntime"),
              "no-python": ("python-missing", "/nonexistent/python3")}
    for name, (kind, needle) in expect.items():
        r = rows[name]
        assert r.status == "failed" and r.kind == kind, (name, r.kind, r.error)
        assert needle in r.error and "\n" not in r.error, (name, r.error)
        assert not (out / name / "x86-avx2.json").exists(), name
        # transient failures are retried once, deterministic ones are not
        assert r.attempts == (2 if kind == "unreachable" else 1), (name, r.attempts)
    assert _leftovers(remote) == []  # every remote work folder removed
    assert not res.ok and res.exit_code == 1
    summary = json.loads((out / "fleet.json").read_text())
    assert summary["schema"] == "edgekit.fleet/1"
    assert {r["device"]: r["status"] for r in summary["results"]}["good"] == "ok"
    assert took < 60


def test_harness_killed_by_the_timeout(sshd, ssh_device, digits_bundles, tmp_path):
    f = write_devices(tmp_path / "devices.toml", ssh_device(name="slow"))
    res = fleet_bench(digits_bundles["int8"].path, f, out=tmp_path / "out", retries=0, progress=False,
                      table=False, timeout=3, **{**FAST, "min_seconds": 120.0})
    r = res.results[0]
    assert r.status == "failed" and r.kind == "timeout" and "3 s timeout" in r.error, r.error
    assert not (tmp_path / "out" / "slow" / "x86-avx2.json").exists()
    assert _leftovers(tmp_path / "remote") == []
    assert _processes_mentioning(str(tmp_path / "remote")) == []


def test_connection_dropped_mid_run(sshd, ssh_device, digits_bundles, tmp_path):
    """The sshd session carrying the run is killed while the harness measures: the run fails as
    'connection-lost', cleanup (a new connection) stops the orphaned harness and removes its folder."""
    remote = tmp_path / "remote"
    f = write_devices(tmp_path / "devices.toml", ssh_device(name="flaky"))
    box = {}

    def run():
        box["res"] = fleet_bench(digits_bundles["int8"].path, f, out=tmp_path / "out", retries=0,
                                 progress=False, table=False, timeout=120, **{**FAST, "min_seconds": 60.0})

    th = threading.Thread(target=run)
    th.start()
    # Wait for the harness on the server side: a run.py process below our sshd. The local ssh
    # client's command line names run.py too, and on a loaded host it exists well before sshd has
    # accepted the connection and forked the session (CI once found no session to kill).
    deadline = time.time() + 30
    while time.time() < deadline and not [p for p in _processes_mentioning(str(remote))
                                          if _is_harness(p) and _descends_from(p, sshd["pid"])]:
        time.sleep(0.1)
    sessions = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and _ppid(p) == sshd["pid"]]
    assert sessions, "the harness never started under sshd"
    for pid in sessions:  # children of our own sshd: the per-connection processes
        os.kill(pid, 9)
    th.join(60)
    r = box["res"].results[0]
    assert r.status == "failed" and r.kind == "connection-lost", (r.kind, r.error)
    assert not (tmp_path / "out" / "flaky" / "x86-avx2.json").exists()
    for _ in range(50):
        if not _processes_mentioning(str(remote)):
            break
        time.sleep(0.1)
    assert _processes_mentioning(str(remote)) == []
    assert _leftovers(remote) == []


def _ppid(p: Path) -> int | None:
    try:
        return int((p / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def _descends_from(pid: int, ancestor: int) -> bool:
    for _ in range(64):  # bounded: a pid can be reused while we walk
        pid = _ppid(Path(f"/proc/{pid}"))
        if pid is None or pid <= 1:
            return False
        if pid == ancestor:
            return True
    return False


def _is_harness(pid: int) -> bool:
    try:
        return b"run.py" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def test_no_space_left_on_the_device(sshd, ssh_device, digits_bundles, tmp_path):
    tiny = tmp_path / "tiny"
    tiny.mkdir()
    mnt = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48k", "tmpfs", str(tiny)], capture_output=True,
                         text=True)
    if mnt.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here to fill up ({mnt.stderr.strip()})")
    try:
        f = write_devices(tmp_path / "devices.toml", ssh_device(name="full", workdir=str(tiny)))
        res = fleet_bench(digits_bundles["int8"].path, f, out=tmp_path / "out", retries=1, progress=False,
                          table=False, **FAST)
        r = res.results[0]
        assert r.status == "failed" and r.kind == "no-space" and "no space left" in r.error, r.error
        assert r.attempts == 1  # a full disk stays full: not retried
        assert _leftovers(tiny) == []
        assert not (tmp_path / "out" / "full" / "x86-avx2.json").exists()
    finally:
        subprocess.run(["umount", str(tiny)], check=False)


def test_cli_fleet_bench_and_devices_check(sshd, ssh_device, digits_bundles, tmp_path):
    f = write_devices(tmp_path / "devices.toml", ssh_device(name="box"),
                      ssh_device(name="bare", python="/usr/bin/python3"))
    proc = run_cli("devices", "--devices", f, "--check", "--json")
    rows = {r["name"]: r["check"] for r in json.loads(proc.stdout)}
    assert proc.returncode == 1
    assert rows["box"]["ok"] and rows["box"]["runtime"].startswith("onnxruntime")
    assert not rows["bare"]["ok"] and "pip install" in (rows["bare"]["install"] or "")
    out = tmp_path / "reports"
    proc = run_cli("bench", digits_bundles["int8"].path.parent, "--devices", f, "--only", "box", "--out", out,
                   "--runs", "5", "--warmup", "1", "--min-seconds", "0", "--warmup-seconds", "0", "--trials", "1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2/2 device x bundle runs ok" in proc.stdout  # the folder holds the fp32 and int8 bundles
    assert {p.name for p in (out / "box").iterdir()} == {"x86-avx2.json", "x86-avx2-fp32.json"}
    proc = run_cli("gate", *sorted((out / "box").glob("*.json")))
    assert proc.returncode in (0, 1) and "verdict" in proc.stdout


def test_ssh_transport_sends_regular_files_only(sshd, ssh_device, bundle_copy, tmp_path):
    """A bundle holding a link is refused before any connection (no work folder on the device); a
    good one arrives as regular files and folders only, and a key passed beside it through a link
    arrives as the key's bytes, not as a link (the tar stream is built from open descriptors)."""
    from edgekit.devices.base import DeviceError
    from edgekit.devices.inventory import load_devices
    from edgekit.devices.transports import transport_for

    remote = tmp_path / "remote"
    f = write_devices(tmp_path / "devices.toml", ssh_device(workdir=str(remote)))
    bad = bundle_copy("int8")
    (bad / "README.txt").unlink()
    os.symlink("/etc/passwd", bad / "README.txt")
    t = transport_for(load_devices(f)[0])
    with pytest.raises(DeviceError) as info:
        t.put(bad)
    assert info.value.kind == "bundle" and "README.txt is a symbolic link (to '/etc/passwd')" in str(info.value)
    assert not remote.exists()

    good = bundle_copy("fp32")
    key = tmp_path / "release.pub"
    key.write_text("not a real key, just bytes\n")
    os.symlink(key, tmp_path / "link.pub")
    t = transport_for(load_devices(f)[0])
    try:
        dest = Path(t.put(good, (tmp_path / "link.pub",)))
        kinds = {p.relative_to(dest.parent).as_posix(): ("dir" if p.is_dir() else "file")
                 for p in dest.parent.rglob("*") if not p.is_symlink() and (p.is_dir() or p.is_file())}
        everything = [p for p in dest.parent.rglob("*")]
        assert len(kinds) == len(everything), sorted(map(str, everything))  # no link, FIFO, ...
        assert kinds["link.pub"] == "file" and (dest.parent / "link.pub").read_text() == key.read_text()
        assert (dest / "manifest.json").read_bytes() == (good / "manifest.json").read_bytes()
    finally:
        t.cleanup()
    assert _leftovers(remote) == []
