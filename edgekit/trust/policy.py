"""Gate policy: a TOML file of licence and provenance requirements, judged per report.

    # policy.toml
    [license]
    allow = ["MIT", "Apache-2.0", "BSD-3-Clause"]   # SPDX ids; "unknown" never passes
    [provenance]
    require_known = true            # the provenance text must be given (not "unknown" or empty)
    require_data_hashes = true      # calibration and validation data sha256 recorded
    require_source_commit = false   # the source repository's commit recorded
    [signature]
    require = false                 # the harness checked manifest.sig against a public key (--pubkey)

    edgekit gate reports/*.json --policy policy.toml

Every key is optional; an unknown key or a wrong type is a ConfigError naming the file and key.
The figures come from the report's "provenance" and "bundle.signature" sections, which the harness
copies from the manifest it verified (so a policy judges the bundle that was measured). A report
without them (an older harness) is judged as "unknown": it fails whatever the policy requires.
SPDX expressions: "A OR B" passes when either is allowed, "A AND B" when both are.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..checks import Check
from ..errors import ConfigError

UNKNOWN = "unknown"
SCHEMA: dict[str, dict[str, type]] = {
    "license": {"allow": list},
    "provenance": {"require_known": bool, "require_data_hashes": bool, "require_source_commit": bool},
    "signature": {"require": bool},
}


@dataclass
class Policy:
    license_allow: list[str] | None = None
    require_known_provenance: bool = False
    require_data_hashes: bool = False
    require_source_commit: bool = False
    require_signature: bool = False
    source: str = "policy"
    raw: dict[str, Any] = field(default_factory=dict)

    def checks(self, report: dict[str, Any], name: str, index: int) -> list:
        target, bundle = report["target"].get("name") or "?", report["bundle"]["name"]
        prov = report.get("provenance") if isinstance(report.get("provenance"), dict) else None
        missing = "" if prov is not None else " (the report carries no provenance: an older harness; rerun it)"
        prov = prov or {}
        out: list[Check] = []

        def add(key: str, value: Any, statistic: str, ok: bool, detail: str) -> None:
            out.append(Check(target, bundle, key, None, value, statistic, "pass" if ok else "fail",
                             "" if ok else detail + missing, index))

        if self.license_allow is not None:
            lic = str(prov.get("license") or UNKNOWN)
            add("license", lic, f"SPDX id vs {self.source} allow-list", license_allowed(lic, self.license_allow),
                f"licence {lic!r} is not in the allow-list ({', '.join(self.license_allow) or 'empty'})")
        if self.require_known_provenance:
            text = str(prov.get("provenance") or UNKNOWN)
            add("provenance", text, "model provenance recorded", _known(text),
                "the model's provenance is unknown: convert with --provenance TEXT")
        if self.require_data_hashes:
            hashes = prov.get("data_sha256") or {}
            lacking = [k for k in ("calibration", "validation") if not _is_sha256(hashes.get(k))]
            add("data_provenance", "recorded" if not lacking else f"missing: {', '.join(lacking)}",
                "calibration/validation sha256", not lacking,
                f"no sha256 for the {' and '.join(lacking)} data")
        if self.require_source_commit:
            commit = prov.get("source_commit")
            add("source_commit", commit or UNKNOWN, "source repository commit",
                isinstance(commit, str) and bool(re.fullmatch(r"[0-9a-f]{7,64}", commit)),
                "the source repository's commit is not recorded")
        if self.require_signature:
            sig = (report.get("bundle") or {}).get("signature") or {}
            ok = bool(sig.get("checked") and sig.get("verified"))
            add("signature", sig.get("key_id") or "not checked", "manifest.sig checked by the harness", ok,
                "the harness did not verify a signature: sign the bundle (convert --sign) and run the harness "
                "with --pubkey KEY.pub")
        return out


def _known(text: str) -> bool:
    return bool(text.strip()) and text.strip().lower() != UNKNOWN


def _is_sha256(x: Any) -> bool:
    return isinstance(x, str) and bool(re.fullmatch(r"[0-9a-f]{64}", x))


def license_allowed(expr: str, allow: list[str]) -> bool:
    """SPDX: "A OR B" needs one allowed id, "A AND B" all; ids compare case-insensitively."""
    allowed = {a.lower() for a in allow}
    expr = expr.strip().strip("()")
    if not _known(expr):
        return False
    if re.search(r"\s+OR\s+", expr):
        return any(license_allowed(p, allow) for p in re.split(r"\s+OR\s+", expr))
    if re.search(r"\s+AND\s+", expr):
        return all(license_allowed(p, allow) for p in re.split(r"\s+AND\s+", expr))
    return expr.lower() in allowed


def parse_policy(data: dict[str, Any], source: str = "policy") -> Policy:
    for section, value in data.items():
        if section not in SCHEMA:
            raise ConfigError(f"{source}: unknown section [{section}]; valid: {', '.join('[' + s + ']' for s in SCHEMA)}")
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: '{section}' must be a table ([{section}])")
        for key, v in value.items():
            if key not in SCHEMA[section]:
                raise ConfigError(f"{source}: unknown key '{section}.{key}'; valid: "
                                  f"{', '.join(section + '.' + k for k in SCHEMA[section])}")
            want = SCHEMA[section][key]
            if not isinstance(v, want):
                raise ConfigError(f"{source}: '{section}.{key}' = {v!r}; expected {'true/false' if want is bool else 'a list'}")
    allow = data.get("license", {}).get("allow")
    if allow is not None and not all(isinstance(a, str) and a.strip() for a in allow):
        raise ConfigError(f"{source}: 'license.allow' must be a list of SPDX id strings")
    prov, sig = data.get("provenance", {}), data.get("signature", {})
    return Policy(license_allow=allow, require_known_provenance=prov.get("require_known", False),
                  require_data_hashes=prov.get("require_data_hashes", False),
                  require_source_commit=prov.get("require_source_commit", False),
                  require_signature=sig.get("require", False), source=source, raw=data)


def load_policy(policy: str | Path | Policy | dict[str, Any]) -> Policy:
    """A Policy from a TOML path, a parsed dict, or a Policy (returned as is)."""
    if isinstance(policy, Policy):
        return policy
    if isinstance(policy, dict):
        return parse_policy(policy)
    from ..tomlfile import read_toml
    return parse_policy(read_toml(policy, "policy"), str(policy))
