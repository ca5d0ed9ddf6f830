"""An emulated aarch64 device: the bundle's harness runs under qemu-user in an arm64 Python 3.11 root.

The root is built by scripts/build_arm_root.sh (Debian's arm64 packages + aarch64 wheels from PyPI)
into ${EDGEKIT_CACHE:-~/.cache/edgekit}/arm64. The harness runs as

    QEMU_CPU=<cpu> PYTHONPATH=ROOT/site-packages EDGEKIT_EMULATED=1 \
        qemu-aarch64-static -L ROOT/cpu/<cpu> ROOT/rootfs/usr/bin/python3.11 harness/run.py ...

through ROOT/rootfs/usr/bin/python3.11-qemu, a host shell wrapper that does exactly that and that
the harness's trial subprocesses re-execute (sys.executable), since no binfmt_misc handler is
registered for aarch64 ELF files here. `-L ROOT/cpu/<cpu>` gives each CPU model its own fake
/proc/cpuinfo (bookworm's qemu passes the host's x86 one through, and onnxruntime then crashes).

Self-check, accuracy and robustness are real aarch64 results (ARM kernels of the runtime, ARM numpy);
latency is marked emulated (environment.emulated) and the gate never checks a budget with it.
"""

from __future__ import annotations

import os
from pathlib import Path

from .base import DeviceError
from .local import LocalTransport


def default_root() -> Path:
    cache = os.environ.get("EDGEKIT_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "edgekit")
    return Path(cache) / "arm64"


def root_problem(root: Path, cpu: str = "cortex-a72") -> str | None:
    """Why the emulated root cannot run (None when it can)."""
    need = {"qemu": root / "bin" / "qemu-aarch64-static", "python": root / "rootfs" / "usr" / "bin" / "python3.11",
            "wrapper": root / "rootfs" / "usr" / "bin" / "python3.11-qemu",
            "wheels": root / "site-packages" / "numpy", f"cpu view {cpu}": root / "cpu" / cpu / "proc" / "cpuinfo"}
    missing = [k for k, p in need.items() if not p.exists()]
    if missing:
        return (f"the emulated ARM root is not built at {root} (missing: {', '.join(missing)}): "
                "run scripts/build_arm_root.sh (make arm-root)")
    return None


class QemuTransport(LocalTransport):
    def __init__(self, device):
        super().__init__(device)
        self.root = Path(device.root) if device.root else default_root()
        self.cpu = device.qemu_cpu

    @property
    def python(self) -> str:
        return self.device.python or str(self.root / "rootfs" / "usr" / "bin" / "python3.11-qemu")

    def env(self) -> dict:
        env = super().env()
        for key in ("PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV"):
            env.pop(key, None)
        # Only the aarch64 wheels: a host PYTHONPATH would offer x86 extension modules.
        env["PYTHONPATH"] = str(self.root / "site-packages")
        env["QEMU_CPU"] = env["EDGEKIT_QEMU_CPU"] = self.cpu
        env["EDGEKIT_EMULATED"] = "1"
        return env

    def _ready(self) -> None:
        problem = root_problem(self.root, self.cpu)
        if problem and not self.device.python:
            raise DeviceError(problem, "runtime-missing")

    def put(self, bundle: Path, extra: tuple[Path, ...] = ()) -> str:
        self._ready()
        return super().put(bundle, extra)

    def run(self, cmd: list[str], timeout: float | None = None) -> tuple[int, str, str]:
        self._ready()
        return super().run(cmd, timeout)
