"""What the device is and how much memory this process uses (stdlib only, Linux first).

Memory follows HARNESS_SPEC.md step 7: VmRSS after imports is the baseline; writing "5" to
/proc/self/clear_refs (Linux >= 4.0, Documentation/filesystems/proc.rst) resets VmHWM, the resident
high-water mark, to the current RSS, so a later VmHWM is the peak of exactly the phase in between.
VmPeak is never used: it is virtual size, which the OOM killer does not look at.

Where /proc is missing (macOS, some RTOS-like builds) the fallback is getrusage's ru_maxrss: a
process-lifetime peak that cannot be reset, KiB on Linux but bytes on macOS (getrusage(2) on each).
It also inherits the launching process's peak across exec, so it is an upper bound; the report
records which method produced the figures.
"""

from __future__ import annotations

import glob
import os
import platform
import socket
import sys

_MIB = 1024 * 1024
_STATUS = "/proc/self/status"
_CLEAR_REFS = "/proc/self/clear_refs"

# CPU features that change which kernels a runtime picks, as /proc/cpuinfo spells them (x86 "flags",
# ARM "Features"), mapped to the target profile's isa vocabulary (docs/FORMATS.md) so the gate can
# compare a profile's isa list with what the device has.
_FLAG_NAMES = {
    "sse4_2": "sse4_2", "avx2": "avx2", "fma": "fma", "avx512f": "avx512f", "avx512_vnni": "avx512_vnni",
    "avx512_bf16": "avx512_bf16", "avx512_fp16": "avx512_fp16", "amx_fp16": "amx_fp16",
    "avx_vnni": "avx_vnni", "amx_tile": "amx", "amx_int8": "amx_int8", "amx_bf16": "amx_bf16",
    "asimd": "neon", "neon": "neon", "asimddp": "dotprod", "i8mm": "i8mm", "sve": "sve",
    "sve2": "sve2", "asimdhp": "fp16", "bf16": "bf16",
}


# ---------------------------------------------------------------- memory

def _status_kib() -> dict[str, int]:
    """The kB fields of /proc/self/status (VmRSS, VmHWM, RssAnon, RssFile, RssShmem, ...)."""
    out: dict[str, int] = {}
    with open(_STATUS, "r", encoding="ascii", errors="replace") as f:
        for line in f:
            key, _, rest = line.partition(":")
            parts = rest.split()
            if len(parts) == 2 and parts[1] == "kB" and parts[0].isdigit():
                out[key] = int(parts[0])
    return out


def _mib(kib) -> float | None:
    return None if kib is None else round(kib / 1024.0, 3)


class MemoryProbe:
    """Reads peak RSS phase by phase; picks the best method the device offers once, at creation."""

    def __init__(self):
        self.method = "unavailable"
        self.can_reset = False
        try:
            if "VmHWM" in _status_kib():
                self.method = "VmHWM"
                self.can_reset = self._clear_refs()
                if self.can_reset:
                    self.method = "VmHWM+clear_refs"
        except OSError:
            pass
        if self.method == "unavailable":
            try:
                import resource  # noqa: F401  (not on Windows)
                self.method = "ru_maxrss"
            except ImportError:
                pass

    @staticmethod
    def _clear_refs() -> bool:
        try:
            with open(_CLEAR_REFS, "w") as f:
                f.write("5")
            return True
        except OSError:  # kernel < 4.0, or a hardened /proc that refuses the write
            return False

    def reset_peak(self) -> None:
        if self.can_reset:
            self._clear_refs()

    @staticmethod
    def _maxrss_mib() -> float | None:
        try:
            import resource
        except ImportError:
            return None
        v = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return round(v / (_MIB if sys.platform == "darwin" else 1024.0), 3)

    def current_mib(self) -> float | None:
        """Resident set now (VmRSS); with ru_maxrss only the lifetime peak is known."""
        if self.method.startswith("VmHWM"):
            return _mib(_status_kib().get("VmRSS"))
        return self._maxrss_mib()

    def peak_mib(self) -> float | None:
        """Peak RSS since the last reset_peak() (or process start when it cannot be reset)."""
        if self.method.startswith("VmHWM"):
            return _mib(_status_kib().get("VmHWM"))
        return self._maxrss_mib()

    def split_mib(self) -> dict:
        """Anonymous (heap, weights copied into arenas) vs file-backed (mmapped model, libraries)."""
        if not self.method.startswith("VmHWM"):
            return {"anon_mb": None, "file_mb": None}
        s = _status_kib()
        return {"anon_mb": _mib(s.get("RssAnon")), "file_mb": _mib(s.get("RssFile"))}


# ---------------------------------------------------------------- environment

def _read(path: str) -> str | None:
    try:
        with open(path, "r", encoding="utf-8", errors="replace") as f:
            return f.read().strip()
    except OSError:
        return None


def cpu_info() -> dict:
    """CPU model and the relevant feature flags, from /proc/cpuinfo (Linux) or sysctl (macOS)."""
    text = _read("/proc/cpuinfo") or ""
    fields: dict[str, str] = {}
    raw_flags: set[str] = set()
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key = key.strip()
        if key in ("flags", "Features"):
            raw_flags.update(value.split())
        elif key not in fields:
            fields[key] = value.strip()
    model = fields.get("model name") or fields.get("Hardware") or fields.get("Model")
    if not model and ("CPU part" in fields or "CPU implementer" in fields):
        # Many aarch64 kernels print only part numbers (e.g. 0xd0b = Cortex-A76).
        model = f"implementer {fields.get('CPU implementer', '?')} part {fields.get('CPU part', '?')}"
    if not model and sys.platform == "darwin":
        model = _sysctl("machdep.cpu.brand_string")
    relevant = sorted(f for f in raw_flags if f in _FLAG_NAMES)
    return {"cpu_model": model or platform.processor() or None,
            "cpu_flags": sorted({_FLAG_NAMES[f] for f in relevant}),
            "cpu_flags_raw": relevant}


def _sysctl(name: str) -> str | None:
    import subprocess
    try:
        r = subprocess.run(["sysctl", "-n", name], capture_output=True, text=True, timeout=5)
        return r.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def temperature_c() -> float | None:
    """Hottest thermal zone in degrees C (sysfs reports millidegrees); None where unreadable."""
    temps = []
    for path in glob.glob("/sys/class/thermal/thermal_zone*/temp"):
        v = _read(path)
        try:
            t = int(v) / 1000.0 if v is not None else None
        except ValueError:
            t = None
        # Some zones report 0 or negative sentinel values when the sensor is off.
        if t is not None and -40.0 < t < 150.0 and t != 0.0:
            temps.append(t)
    return round(max(temps), 1) if temps else None


def governor() -> str | None:
    return _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")


def environment(threads: int, runtime_info: dict, requested_device: str | None) -> dict:
    """The report's "environment" object (HARNESS_SPEC.md step 2)."""
    import numpy

    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    actual = runtime_info.get("actual_device") or "CPU"
    requested = requested_device or "CPU"
    env = {"hostname": socket.gethostname(), "machine": platform.machine(),
           "platform": platform.platform(), "kernel": platform.release()}
    env.update(cpu_info())
    env.update({
        "cpu_count": os.cpu_count(),
        "cpu_affinity_count": usable,
        "governor": governor(),
        "temperature_c": temperature_c(),
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "runtime": {k: v for k, v in runtime_info.items() if k not in ("actual_device",)},
        "threads": threads,
        "requested_device": requested,
        "actual_device": actual,
        "stand_in": actual.upper() != requested.upper(),
        # Set by the qemu transport: latency measured under emulation says nothing about the
        # real device and the gate never checks a latency budget with it.
        "emulated": os.environ.get("EDGEKIT_EMULATED") == "1",
    })
    return env
