"""The one small protocol every transport follows, and the errors a device run can end in.

The names every transport shares live here, below them (local.py, ssh.py and qemu.py import this
module, never the reverse); the registry that picks a transport for a device sits above them, in
transports.py, so no import points back up.

    t = transports.transport_for(device)
    remote = t.put(bundle, extra)      # copy the bundle's files (and extra files beside the bundle)
                                       # to a fresh work folder on the device; returns the bundle path
    rc, out, err = t.run(cmd, timeout) # run a command there (argv list), killed after `timeout` s
    t.get(remote_file, local_file)     # fetch a file back
    t.cleanup()                        # remove the work folder (and stop anything left running)
    t.check()                          # reachability + python + numpy + the profile's runtime

Every failure is a DeviceError whose `kind` says what went wrong, so the fleet can report and retry
per kind (docs/DEVICES.md): unreachable, auth, host-key, runtime-missing, python-missing, no-space,
timeout, connection-lost, crash, bundle, report, error.
"""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
from pathlib import Path

from ..bundle import check_paths, check_tree
from ..errors import BundleError, EdgekitError

# Kinds worth another attempt: the device or the network may do better next time. The others are
# deterministic (a wrong key stays wrong) and a retry would only delay the report.
TRANSIENT = ("unreachable", "connection-lost", "timeout", "crash")

# The runtime each profile names, as the device imports it and as pip installs it.
RUNTIME_MODULES = {"onnxruntime": (("onnxruntime",), "onnxruntime"),
                   "openvino": (("openvino",), "openvino"),
                   "litert": (("ai_edge_litert.interpreter", "tflite_runtime.interpreter"), "ai-edge-litert")}


class DeviceError(EdgekitError):
    """A run on one device failed; `kind` classifies it (see TRANSIENT)."""

    def __init__(self, message: str, kind: str = "error"):
        super().__init__(message)
        self.kind = kind

    @property
    def transient(self) -> bool:
        return self.kind in TRANSIENT


def bundle_files(bundle: Path) -> list[str]:
    """manifest.json and every file it lists: the bundle exactly, nothing left beside it
    (a local report.json, __pycache__) travels to the device. Refused before anything is copied:
    a bundle holding a link, FIFO, socket or device file, or listing a path outside itself
    (the harness's own rule, edgekit.bundle.check_tree / check_paths)."""
    try:
        check_tree(bundle)
        manifest = json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))
        if not isinstance(manifest, dict) or not isinstance(manifest.get("files", {}), dict):
            raise BundleError(f"{bundle / 'manifest.json'}: not an edgekit manifest ('files' missing)")
        check_paths(bundle, manifest.get("files", {}))
    except BundleError as exc:
        raise DeviceError(str(exc), "bundle") from exc
    except (OSError, ValueError) as exc:  # ValueError: JSON (and UnicodeDecodeError)
        raise DeviceError(f"{bundle / 'manifest.json'}: unreadable ({exc})", "bundle") from exc
    files = ["manifest.json"] + [f for f in manifest.get("files", {})]
    if (bundle / "manifest.sig").is_file():  # a signed bundle (docs/TRUST.md): the harness checks it
        files.append("manifest.sig")
    for f in files:
        if not (bundle / f).is_file():
            raise DeviceError(f"{bundle / f}: listed in manifest.json but missing from the bundle", "bundle")
    return files


def open_bundle_file(bundle: Path, rel: str):
    """Open one of bundle_files() for copying, never through a symbolic link (O_NOFOLLOW) and only
    if the open descriptor is a regular file: a file swapped for a link or a FIFO after the tree
    was checked is refused too, not followed or blocked on (O_NONBLOCK: opening a FIFO would wait)."""
    path = bundle / rel
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if os.path.islink(path):
            raise DeviceError(f"{bundle}: {rel} is a symbolic link; a bundle holds regular files and "
                              "folders only", "bundle") from exc
        raise DeviceError(f"{path}: cannot read ({exc.strerror or exc})", "bundle") from exc
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise DeviceError(f"{bundle}: {rel} is not a regular file (mode {stat.S_IFMT(mode):o}); a bundle "
                          "holds regular files and folders only", "bundle")
    return os.fdopen(fd, "rb")


def last_error_line(stderr: str) -> str:
    """The line that says what happened: the harness's own one-line error, else the last line."""
    lines = [ln.strip() for ln in (stderr or "").splitlines() if ln.strip()]
    own = [ln for ln in lines if ln.startswith("harness: error:")]
    if own:
        return own[-1][len("harness: error:"):].strip()
    return lines[-1] if lines else ""


def classify_harness(rc: int, stderr: str, *, python: str, timeout: float | None) -> DeviceError:
    """A non-zero exit of the harness command, as a DeviceError of the right kind."""
    msg = last_error_line(stderr)
    if "No space left on device" in (stderr or ""):
        return DeviceError(f"no space left on the device ({msg})", "no-space")
    if rc in (124, -signal.SIGTERM) or (rc in (137, -signal.SIGKILL) and timeout is not None and "timeout" in msg):
        return DeviceError(f"the harness was killed after the {timeout:g} s timeout", "timeout")
    if rc in (137, -signal.SIGKILL):
        return DeviceError("the harness was killed (SIGKILL: out of memory, or killed on the device)", "crash")
    if rc == 127 or re.search(r"(not found|No such file or directory)", msg) and python in msg:
        return DeviceError(f"{python}: no such interpreter on the device (set 'python' in the devices file)",
                           "python-missing")
    if rc == 2 and "not installed on this device" in msg:
        return DeviceError(msg, "runtime-missing")
    if rc == 2:
        return DeviceError(f"the harness refused the bundle: {msg}", "bundle")
    if rc == 3:
        return DeviceError(f"the harness crashed: {msg}", "crash")
    if rc < 0:
        try:
            name = signal.Signals(-rc).name
        except ValueError:
            name = f"signal {-rc}"
        return DeviceError(f"the harness was killed by {name}" + (f": {msg}" if msg else ""), "crash")
    return DeviceError(f"the harness failed (exit {rc})" + (f": {msg}" if msg else ""), "error")


CHECK_SNIPPET = r"""
import json, platform, sys
out = {"python": platform.python_version(), "machine": platform.machine(), "executable": sys.executable}
try:
    import numpy
    out["numpy"] = numpy.__version__
except Exception as e:
    out["numpy"] = None
    out["numpy_error"] = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
out["runtime"] = None
errors = []
for mod in sys.argv[1:]:
    try:
        m = __import__(mod, fromlist=["_"])
        top = sys.modules[mod.split(".")[0]]
        out["runtime"] = "%s %s" % (mod.split(".")[0], getattr(top, "__version__", "?"))
        break
    except Exception as e:
        errors.append("%s: %s" % (mod, (str(e).splitlines() or [type(e).__name__])[0][:200]))
out["runtime_errors"] = errors
print("EDGEKIT_CHECK " + json.dumps(out))
"""


def check_result(device, rc: int, stdout: str, stderr: str, python: str) -> dict:
    """Turn the output of CHECK_SNIPPET (run on the device) into check()'s dict."""
    runtime = device.profile.runtime
    pip_name = RUNTIME_MODULES[runtime][1]
    res = {"device": device.name, "transport": device.transport, "target": device.profile.name,
           "address": device.address, "reachable": True, "python": None, "machine": None,
           "numpy": None, "runtime": None, "ok": False, "problems": [], "install": None}
    line = next((ln for ln in stdout.splitlines() if ln.startswith("EDGEKIT_CHECK ")), None)
    if rc != 0 or line is None:
        res["problems"].append(f"{python} did not run on the device (exit {rc}): "
                               f"{last_error_line(stderr) or 'no output'}")
        return res
    info = json.loads(line[len("EDGEKIT_CHECK "):])
    res.update(python=info.get("python"), machine=info.get("machine"), numpy=info.get("numpy"),
               runtime=info.get("runtime"))
    missing = []
    if not info.get("numpy"):
        missing.append("numpy")
    if not info.get("runtime"):
        missing.append(pip_name)
        errs = info.get("runtime_errors") or []
        detail = errs[0] if errs else ""
        if detail and "No module named" not in detail:
            res["problems"].append(f"{runtime} failed to import ({detail})")
    if missing:
        res["install"] = f"{python} -m pip install {' '.join(missing)}"
        res["problems"].append(f"missing on the device: {', '.join(missing)} "
                               f"(install: {res['install']})")
    arch = device.profile.arch
    if res["machine"] and res["machine"] not in (arch, {"aarch64": "arm64"}.get(arch)):
        res["problems"].append(f"the device is {res['machine']}, target {device.profile.name!r} is {arch}")
    res["ok"] = not res["problems"]
    return res


class Transport:
    """Base: subclasses implement put/run/get/cleanup and check via run()."""

    def __init__(self, device):
        self.device = device
        self.remote_dir: str | None = None

    @property
    def python(self) -> str:
        raise NotImplementedError

    def put(self, bundle: Path, extra: tuple[Path, ...] = ()) -> str:
        raise NotImplementedError

    def run(self, cmd: list[str], timeout: float | None = None) -> tuple[int, str, str]:
        raise NotImplementedError

    def get(self, remote: str, local: Path) -> None:
        raise NotImplementedError

    def cleanup(self) -> None:
        raise NotImplementedError

    def check(self) -> dict:
        modules = RUNTIME_MODULES[self.device.profile.runtime][0]
        try:
            rc, out, err = self.run([self.python, "-c", CHECK_SNIPPET, *modules], timeout=120)
        except DeviceError as exc:
            return {"device": self.device.name, "transport": self.device.transport,
                    "target": self.device.profile.name, "address": self.device.address,
                    "reachable": exc.kind not in ("unreachable", "auth", "host-key", "connection-lost"),
                    "python": None, "machine": None, "numpy": None, "runtime": None, "ok": False,
                    "problems": [str(exc)], "install": None, "kind": exc.kind}
        return check_result(self.device, rc, out, err, self.python)


def run_local(cmd: list[str], timeout: float | None, env: dict | None = None,
              cwd: str | None = None) -> tuple[int, str, str]:
    """Run a command in its own process group; on timeout kill the whole group (the harness and
    the trial processes it spawned) and raise DeviceError(kind="timeout")."""
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, errors="replace", env=env, cwd=cwd,
                                start_new_session=True)
    except OSError as exc:
        raise DeviceError(f"{cmd[0]}: cannot start ({exc.strerror or exc})", "python-missing") from exc
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.communicate()
        raise DeviceError(f"the harness was killed after the {timeout:g} s timeout", "timeout") from exc
    return proc.returncode, out, err

