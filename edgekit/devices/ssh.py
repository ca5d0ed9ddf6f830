"""A device reached over SSH, through the system's OpenSSH client (ssh(1)).

Why the OpenSSH client and not a Python SSH library (paramiko, asyncssh): it is on every machine
that can reach a board, and it already honours what users have set up - ~/.ssh/config host aliases,
ProxyJump, agents, certificates, known_hosts - which a library would have to re-implement. Every call
is `ssh -o BatchMode=yes ...` (never a password prompt, which would hang CI) with host key checking
on (StrictHostKeyChecking=yes) unless the device says `host_key_checking = false`.

One run: `mkdir -p WORKDIR && mktemp -d WORKDIR/run.XXXXXX` makes a fresh folder; the bundle's files
(manifest.json and what it lists, nothing else) travel as a tar stream over ssh's stdin; the harness
runs under the device's `timeout` (coreutils) in its own process group, whose id is written beside
the bundle so cleanup can stop it if the connection drops; the report comes back over ssh's stdout;
cleanup stops whatever is left and removes the folder. The harness verifies every file's sha256 on
the device before it runs anything.
"""

from __future__ import annotations

import os
import posixpath
import re
import shlex
import subprocess
import tarfile
from pathlib import Path

from .base import DeviceError, Transport, bundle_files, open_bundle_file

# Seconds beyond the device-side timeout before the local side gives up on the ssh client too
# (the device's `timeout` normally ends the run first, with a clearer exit status).
_GRACE = 30.0

_RUN_DIR = re.compile(r"^/?[^\n]*/run\.[A-Za-z0-9]{6,}$")


def _sh_path(p: str) -> str:
    """Quote a device path for sh, keeping a leading ~/ as the remote $HOME."""
    if p == "~":
        return '"$HOME"'
    if p.startswith("~/"):
        return '"$HOME"/' + shlex.quote(p[2:])
    return shlex.quote(p)


def classify_ssh(stderr: str, host: str) -> DeviceError | None:
    """ssh exits 255 for its own errors; its message says which."""
    text = stderr or ""
    last = next((ln.strip() for ln in reversed(text.splitlines()) if ln.strip()), "ssh exit 255")
    if "REMOTE HOST IDENTIFICATION HAS CHANGED" in text or "Host key for" in text and "has changed" in text:
        return DeviceError(f"host key mismatch: {host} presented a key other than the one in known_hosts "
                           "(a reinstalled device, or someone in the middle); verify it, then update "
                           "known_hosts (ssh-keygen -R)", "host-key")
    if "Host key verification failed" in text or "host key is known for" in text:
        return DeviceError(f"{host}'s host key is not in known_hosts and host key checking is on: connect "
                           "once by hand (ssh) to verify and record it, or set known_hosts", "host-key")
    for needle in ("Could not resolve hostname", "Connection refused", "No route to host",
                   "Network is unreachable", "Connection timed out", "Operation timed out",
                   "Name or service not known", "Temporary failure in name resolution"):
        if needle in text:
            return DeviceError(f"{host} is unreachable ({last})", "unreachable")
    if "Permission denied" in text or "Too many authentication failures" in text:
        hint = "wrong key or user? (check 'identity' and 'user')"
        if "Identity file" in text and "not accessible" in text:
            hint = "the identity file is not accessible (check 'identity')"
        return DeviceError(f"authentication refused by {host} ({last}): {hint}", "auth")
    for needle in ("Connection closed", "Connection reset", "Broken pipe", "closed by remote host",
                   "Timeout, server", "client_loop", "packet_write_wait", "Connection to"):
        if needle in text:
            return DeviceError(f"the connection to {host} dropped ({last})", "connection-lost")
    if "No space left on device" in text:
        return DeviceError(f"no space left on {host} ({last})", "no-space")
    return None


def _regular_member(arcname: str, f) -> tarfile.TarInfo:
    """A tar member for an open regular file, built from its descriptor: only regular files go into
    the stream (gettarinfo on a path would add a link as a link, a second hard link as a LNKTYPE)."""
    st = os.fstat(f.fileno())
    info = tarfile.TarInfo(arcname)
    info.size, info.mtime, info.mode = st.st_size, int(st.st_mtime), st.st_mode & 0o755
    return info  # uid/gid 0, no user or group names: nothing of this machine's accounts travels


class SshTransport(Transport):
    def __init__(self, device):
        super().__init__(device)
        self.pid_file: str | None = None

    @property
    def python(self) -> str:
        return self.device.python or "python3"

    # -- ssh plumbing ------------------------------------------------------------------------
    def ssh_argv(self) -> list[str]:
        d = self.device
        argv = ["ssh", "-T", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={d.connect_timeout}",
                "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3", "-o", "LogLevel=ERROR"]
        if d.ssh_config:
            argv += ["-F", d.ssh_config]
        if d.host_key_checking:
            argv += ["-o", "StrictHostKeyChecking=yes"]
            if d.known_hosts:
                argv += ["-o", f"UserKnownHostsFile={d.known_hosts}"]
        else:  # said explicitly in the devices file: accept whatever key the device presents
            argv += ["-o", "StrictHostKeyChecking=no", "-o",
                     f"UserKnownHostsFile={d.known_hosts or '/dev/null'}"]
        if d.identity:
            argv += ["-i", d.identity, "-o", "IdentitiesOnly=yes"]
        if d.port:
            argv += ["-p", str(d.port)]
        if d.user:
            argv += ["-l", d.user]
        for opt in d.ssh_options:
            argv += ["-o", opt]
        return argv + ["--", d.host]

    def _ssh(self, script: str, *, timeout: float | None, stdin=None, input_bytes: bytes | None = None,
             text: bool = True) -> tuple[int, object, str]:
        """Run a shell script on the device; connection failures raise DeviceError."""
        argv = self.ssh_argv() + [script]
        try:
            proc = subprocess.run(argv, input=input_bytes, stdin=None if input_bytes is not None else
                                  (stdin or subprocess.DEVNULL), capture_output=True, timeout=timeout)
        except FileNotFoundError as exc:
            raise DeviceError("ssh: the OpenSSH client is not installed here (apt-get install "
                              "openssh-client)", "error") from exc
        except subprocess.TimeoutExpired as exc:
            raise DeviceError(f"no answer from {self.device.host} within {timeout:g} s", "timeout") from exc
        err = proc.stderr.decode("utf-8", "replace")
        if proc.returncode == 255:
            known = classify_ssh(err, self.device.host)
            if known is not None:
                raise known
            last = err.strip().splitlines()[-1] if err.strip() else "ssh exit 255"
            if self.remote_dir is not None:
                # This device answered a moment ago (the work folder exists): an unexplained exit
                # 255 now is the connection going away under a running command.
                raise DeviceError(f"the connection to {self.device.host} dropped ({last})", "connection-lost")
            raise DeviceError(f"ssh to {self.device.host} failed ({last})", "unreachable")
        out = proc.stdout.decode("utf-8", "replace") if text else proc.stdout
        return proc.returncode, out, err

    # -- protocol ----------------------------------------------------------------------------
    def put(self, bundle: Path, extra: tuple[Path, ...] = ()) -> str:
        bundle = Path(bundle)
        files = bundle_files(bundle)
        workdir = self.device.workdir
        rc, out, err = self._ssh(f"mkdir -p {_sh_path(workdir)} && mktemp -d {_sh_path(workdir)}/run.XXXXXXXX",
                                 timeout=60)
        remote = out.strip().splitlines()[-1] if out.strip() else ""
        if rc != 0 or not _RUN_DIR.match(remote):
            if "No space left" in err:
                raise DeviceError(f"no space left on the device in {workdir}", "no-space")
            raise DeviceError(f"cannot create a work folder in {workdir} on the device: "
                              f"{err.strip() or out.strip() or f'exit {rc}'}", "error")
        self.remote_dir = remote
        self.pid_file = posixpath.join(remote, ".harness.pid")
        # The tar stream: built in memory (a bundle is tens of MiB at most), then sent as ssh's stdin.
        import io
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for rel in files:
                with open_bundle_file(bundle, rel) as f:  # never a link: checked on the open file
                    tar.addfile(_regular_member(posixpath.join(bundle.name, rel), f), f)
            for path in map(Path, extra):  # beside the bundle, e.g. the public key for --pubkey
                with open(path, "rb") as f:  # the dev side's own file: its bytes, wherever a link leads
                    tar.addfile(_regular_member(path.name, f), f)
        q = shlex.quote(remote)
        size_mb = max(1, len(buf.getvalue()) // 2**20)
        rc, out, err = self._ssh(f"tar -C {q} -xf - && echo EDGEKIT_PUT_OK", timeout=120 + 10 * size_mb,
                                 input_bytes=buf.getvalue())
        if rc != 0 or "EDGEKIT_PUT_OK" not in out:
            if "No space left on device" in err:
                raise DeviceError(f"no space left on the device in {workdir} (the bundle is "
                                  f"{len(buf.getvalue()) / 2**20:.1f} MiB)", "no-space")
            raise DeviceError(f"copying the bundle to {remote} failed: "
                              f"{err.strip().splitlines()[-1] if err.strip() else f'exit {rc}'}", "error")
        return posixpath.join(remote, bundle.name)

    def run(self, cmd: list[str], timeout: float | None = None) -> tuple[int, str, str]:
        """Run argv on the device. With a timeout, coreutils `timeout` (when the device has it) kills
        the command's whole process group there; the local ssh client waits a little longer."""
        body = shlex.join(cmd)
        if self.remote_dir:
            cd = f"cd {shlex.quote(self.remote_dir)} && echo $$ > {shlex.quote(self.pid_file)} && "
        else:
            cd = ""
        if timeout is not None:
            t = f"{timeout:g}"
            script = (f"{cd}if command -v timeout >/dev/null 2>&1; then exec timeout -k 5 {t} {body}; "
                      f"else exec {body}; fi")
            local_timeout = timeout + _GRACE
        else:
            script = f"{cd}exec {body}"
            local_timeout = None
        return self._ssh(script, timeout=local_timeout)

    def get(self, remote: str, local: Path) -> None:
        rc, out, err = self._ssh(f"cat {shlex.quote(remote)}", timeout=120, text=False)
        if rc != 0:
            raise DeviceError(f"cannot fetch {remote} from the device: "
                              f"{err.strip().splitlines()[-1] if err.strip() else f'exit {rc}'}", "report")
        Path(local).write_bytes(out)

    def cleanup(self) -> None:
        """Stop the harness if it still runs (its process group, by the id it wrote) and remove the
        work folder. Best effort: a device that has gone away keeps its folder under workdir."""
        if not self.remote_dir:
            return
        q, p = shlex.quote(self.remote_dir), shlex.quote(self.pid_file or "")
        # Only a process whose command line names this run's folder is ours: after a normal end
        # the id may already belong to something else.
        script = (f'if [ -f {p} ]; then P=$(cat {p}); case "$P" in ""|*[!0-9]*) ;; *) '
                  f'if grep -qF -- {q} /proc/"$P"/cmdline 2>/dev/null; then kill -TERM -"$P" 2>/dev/null '
                  f'|| kill -TERM "$P" 2>/dev/null; sleep 1; kill -KILL -"$P" 2>/dev/null; fi ;; esac; fi; '
                  f'rm -rf {q}')
        try:
            self._ssh(script, timeout=60)
        except DeviceError:
            pass
        self.remote_dir = None
        self.pid_file = None
