"""Fixtures for the device tests: a real OpenSSH server on 127.0.0.1 (scripts/ssh_test_server.sh
prepares throwaway keys and an sshd_config; the fixture runs `sshd -D` itself so it owns and reaps
the server), and a devices.toml entry for it. Plain helpers live in devtest.py."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from devtest import SCRIPT


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="session")
def sshd(tmp_path_factory):
    """A running sshd: dict with port, user, identity, known_hosts, other_identity,
    other_known_hosts, dir, pid (the listener, our child)."""
    if shutil.which("ssh") is None:
        pytest.skip("the OpenSSH client is not installed (apt-get install openssh-client)")
    if not Path("/usr/sbin/sshd").exists():
        proc = subprocess.run(["bash", str(SCRIPT), "install"], capture_output=True, text=True, timeout=600)
        if proc.returncode != 0 or not Path("/usr/sbin/sshd").exists():
            pytest.skip("openssh-server is not installed and could not be installed "
                        f"(apt-get install openssh-server): {proc.stderr.strip()[-200:]}")
    base = tmp_path_factory.mktemp("sshd")
    for attempt in range(5):
        d = base / f"s{attempt}"
        d.mkdir()
        proc = subprocess.run(["bash", str(SCRIPT), "prepare", str(d)], capture_output=True, text=True,
                              timeout=60)
        assert proc.returncode == 0, proc.stderr
        info = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
        port = int(info["SSHD_PORT"])
        log = open(d / "sshd.log", "w")
        server = subprocess.Popen([info["SSHD"], "-D", "-e", "-f", info["SSHD_CONFIG"]],
                                  stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        deadline = time.time() + 10
        while time.time() < deadline and server.poll() is None and not _port_open(port):
            time.sleep(0.05)
        if server.poll() is None and _port_open(port):
            break
        server.kill()
        server.wait()
        log.close()
    else:
        pytest.fail(f"sshd would not start: {(d / 'sshd.log').read_text()[-500:]}")
    yield {"port": port, "user": info["SSH_USER"], "identity": info["SSH_IDENTITY"],
           "known_hosts": info["SSH_KNOWN_HOSTS"], "other_identity": info["SSH_OTHER_IDENTITY"],
           "other_known_hosts": info["SSH_OTHER_KNOWN_HOSTS"], "dir": d, "pid": server.pid,
           "log": d / "sshd.log"}
    server.send_signal(signal.SIGTERM)
    try:
        server.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()
    log.close()


@pytest.fixture
def ssh_device(sshd, tmp_path):
    """A devices.toml entry (dict) for the test server; override keys per test."""
    def make(**over) -> dict:
        d = {"name": "box", "transport": "ssh", "target": "x86-avx2", "host": "127.0.0.1",
             "port": sshd["port"], "user": sshd["user"], "identity": sshd["identity"],
             "known_hosts": sshd["known_hosts"], "workdir": str(tmp_path / "remote"),
             "python": os.environ.get("EDGEKIT_TEST_DEVICE_PYTHON") or _venv_python(),
             "connect_timeout": 5}
        d.update(over)
        return {k: v for k, v in d.items() if v is not None}
    return make


def _venv_python() -> str:
    import sys
    return sys.executable
