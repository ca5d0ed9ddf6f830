"""The dev machine as a measuring instrument: its CPU, and whether its arithmetic is the target's.

A host is not the target (FIELD_NOTES): the same int8 model runs saturating u8*s8 kernels on AVX2
without VNNI and exact int32 accumulation with VNNI or on ARM, and OpenVINO computes float work in
bf16 on AVX512_BF16/AMX hosts unless told otherwise. Conversion therefore pins what it can (the
compute precision), and records in the manifest what it could not reproduce, rather than
tightening or loosening tolerances by host.

The CPU probe is the device harness's own (harness/_ek_probe.py: stdlib only), so the manifest and
the device's report describe CPUs in the same vocabulary (the profile's `isa` names).
"""

from __future__ import annotations

import functools
import platform
from typing import Any

from .harness import _ek_probe

# /proc/cpuinfo does not change while a conversion runs: read it once per process, not per bundle.
cpu_info = functools.lru_cache(maxsize=1)(_ek_probe.cpu_info)

# platform.machine() spellings of each profile arch.
_MACHINES = {"x86_64": ("x86_64", "amd64"), "aarch64": ("aarch64", "arm64")}


def host_isa() -> set[str]:
    """This machine's CPU features in the profile vocabulary (avx2, avx512_vnni, amx, neon, ...)."""
    return set(cpu_info()["cpu_flags"])


def host_matches(target) -> bool:
    """Whether this machine is of the target's CPU class: same architecture, every ISA feature the
    profile lists (so the runtime picks the target's kernels here too)."""
    if platform.machine().lower() not in _MACHINES[target.arch]:
        return False
    return set(target.isa) <= host_isa()


def describe(target, computed_in: str) -> dict[str, Any]:
    """The manifest's "host" section: what this machine is, what it computed the parity and accuracy
    figures in, and whether that reproduces the target's arithmetic (and if not, why)."""
    info = cpu_info()
    matches = host_matches(target)
    wanted = target.compute_precision
    reasons = []
    # Float kernels differ across CPUs by summation order only (within the fp32 tolerance); int8
    # kernels differ in what they compute (saturating int16 pairs without VNNI), so only int8
    # needs the target's CPU features.
    if not matches and target.precision.startswith("int8"):
        missing = sorted(set(target.isa) - set(info["cpu_flags"]))
        arch = platform.machine()
        reasons.append(f"host is {arch}, target {target.arch}" if arch.lower() not in _MACHINES[target.arch]
                       else f"host lacks the target's {', '.join(missing)}: its int8 kernels differ")
    if computed_in != wanted:
        reasons.append(f"target computes float work in {wanted}, this host in {computed_in} "
                       f"({target.runtime} cannot compute {wanted} on this CPU)")
    return {"machine": platform.machine(), "cpu_model": info["cpu_model"], "cpu_flags": info["cpu_flags"],
            "matches_target_isa": matches, "computed_in": computed_in, "target_computes_in": wanted,
            "reproduces_target_arithmetic": not reasons,
            "note": "; ".join(reasons) if reasons else "this host runs the target's kernels and precision"}
