"""Reports tied to what they claim: the bundle they measured and the device that measured them.

`edgekit gate REPORT... --bundle DIR` (`bundle_checks`): the report's ``bundle.manifest_sha256`` must
be the sha256 of DIR/manifest.json as it is now, DIR's files must still match that manifest, and the
report's ``bundle.model_sha256`` must be the manifest's hash of the model file. The manifest lists the
sha256 of every file, so a matching manifest hash ties the report to the bundle's whole content. With
several reports, --bundle is repeated and matched on the bundle name; every report needs its bundle
and every --bundle its report (a bundle with no report was never measured).

`edgekit gate REPORT... --device-pubkey DEVICE.pub` (`signature_checks`): the report must carry a
``signature`` made on the device by `harness/run.py --sign-key DEVICE.key` over
`_ek_sign.canonical_report(report)` -- the harness's own function, imported from edgekit/harness so
both sides sign and check the same bytes -- with one of the given keys (repeatable: one per device).
An unsigned report, one signed by another key, and one edited after signing are refused.

Every refusal is a ReportError (exit 2, one line naming the report): a forged or edited report is
refused, never gated. Imports: errors, bundle, hashing, trust.sign, checks (never the gate).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..checks import Check
from ..errors import ConfigError, ReportError

DEVICE_KEY_HELP = "make one with `edgekit keygen PREFIX`, run the harness with --sign-key PREFIX.key"


def _short(sha: str | None) -> str:
    return f"{sha[:12]}..." if isinstance(sha, str) and len(sha) > 12 else str(sha)


# ---------------------------------------------------------------- --bundle DIR

def _bundle_identity(directory: str | Path) -> dict[str, Any]:
    """name, manifest sha256, model file and its sha256 of a bundle folder whose files match its
    manifest (BundleError, exit 2, when they do not: an altered bundle ties nothing)."""
    from ..bundle import MANIFEST, verify
    from ..hashing import sha256_file
    d = Path(directory)
    manifest = verify(d)
    model = manifest.get("model") if isinstance(manifest.get("model"), dict) else {}
    model_file = model.get("file")
    return {"dir": d, "name": (manifest.get("bundle") or {}).get("name") or d.name,
            "manifest_sha256": sha256_file(d / MANIFEST), "model_file": model_file,
            "model_sha256": (manifest.get("files") or {}).get(model_file)}


def _tie(report: dict[str, Any], name: str, ident: dict[str, Any]) -> None:
    rb = report["bundle"]
    d, sha = ident["dir"], ident["manifest_sha256"]
    got = rb.get("manifest_sha256")
    if not got:
        raise ReportError(f"{name}: records no bundle.manifest_sha256, so it cannot be tied to {d}; "
                          "measure the bundle again with its own harness")
    if got != sha:
        raise ReportError(f"{name} was measured on bundle sha256 {_short(got)} ({rb.get('name')!r}), "
                          f"not {d} ({_short(sha)}): a report of another build, or an edited one")
    if rb.get("model_sha256") != ident["model_sha256"]:
        raise ReportError(f"{name}: bundle.model_sha256 is {_short(rb.get('model_sha256'))}, but {d}'s "
                          f"{ident['model_file']} is {_short(ident['model_sha256'])}: the report was edited")


def bundle_checks(reports: list[dict[str, Any]], names: list[str], bundles: list[str | Path]) -> list[Check]:
    """Tie every report to one of `bundles` (ReportError otherwise); one passing Check per report."""
    if not bundles:
        raise ConfigError("--bundle: no bundle folders given")
    idents = [_bundle_identity(b) for b in bundles]
    by_name: dict[str, dict[str, Any]] = {}
    for ident in idents:
        other = by_name.get(ident["name"])
        if other is not None:
            raise ConfigError(f"--bundle {other['dir']} and --bundle {ident['dir']} are both bundle "
                              f"{ident['name']!r}; give each bundle once")
        by_name[ident["name"]] = ident
    pairs: list[dict[str, Any]] = []
    if len(idents) == 1 and len(reports) == 1:
        pairs = [idents[0]]      # one of each: compared directly, so a wrong bundle names its hash
    else:
        for report, name in zip(reports, names):
            ident = by_name.get(report["bundle"]["name"])
            if ident is None:
                raise ReportError(f"{name}: measured bundle {report['bundle']['name']!r}, which is none of the "
                                  f"--bundle folders given ({', '.join(sorted(by_name))})")
            pairs.append(ident)
        for ident in idents:
            if not any(p is ident for p in pairs):
                raise ReportError(f"--bundle {ident['dir']}: no report of bundle {ident['name']!r} among the "
                                  "reports gated (was it measured?)")
    checks = []
    for i, (report, name, ident) in enumerate(zip(reports, names, pairs)):
        _tie(report, name, ident)
        checks.append(Check(report["target"].get("name") or "?", report["bundle"]["name"], "bundle_match",
                            None, _short(ident["manifest_sha256"]), f"manifest sha256 = {ident['dir']}",
                            "pass", "", i))
    return checks


# ---------------------------------------------------------------- --device-pubkey KEY

def load_device_keys(paths: list[str | Path]) -> dict[str, tuple[str, Any]]:
    """key id -> (path, Ed25519 public key) for each --device-pubkey (BundleError for a bad key file)."""
    from .sign import key_id, load_public_key, public_raw
    if not paths:
        raise ConfigError("--device-pubkey: no public key files given")
    keys: dict[str, tuple[str, Any]] = {}
    for p in paths:
        public = load_public_key(p)
        keys[key_id(public_raw(public))] = (str(p), public)
    return keys


def _verify(report: dict[str, Any], name: str, keys: dict[str, tuple[str, Any]]) -> str:
    from cryptography.exceptions import InvalidSignature

    from ..harness import _ek_sign
    given = ", ".join(f"{p} (key id {k})" for k, (p, _) in keys.items())
    sig = report.get(_ek_sign.REPORT_SIGNATURE)
    if sig is None:
        raise ReportError(f"{name}: not signed (no 'signature'); --device-pubkey accepts only reports signed "
                          f"on the device: {DEVICE_KEY_HELP}")
    try:
        raw = _ek_sign.report_signature_bytes(sig)
    except ValueError as exc:
        raise ReportError(f"{name}: {exc}; expected the harness's --sign-key signature") from exc
    kid = sig.get("key_id")
    if kid not in keys:
        raise ReportError(f"{name}: signed by key id {kid}, not by --device-pubkey {given}: "
                          "a report from another device, or a forged one")
    path, public = keys[kid]
    try:
        message = _ek_sign.canonical_report(report)
    except (TypeError, ValueError) as exc:  # pragma: no cover - validate_report refuses NaN first
        raise ReportError(f"{name}: cannot be canonicalised for checking ({exc})") from exc
    try:
        public.verify(raw, message)
    except InvalidSignature as exc:
        raise ReportError(f"{name}: signature does not verify with {path} (key id {kid}): the report was "
                          "edited after signing, or signed with another key") from exc
    return kid


def signature_checks(reports: list[dict[str, Any]], names: list[str], keys: dict[str, tuple[str, Any]],
                     *, first_index: int = 0, rows: bool = True) -> list[Check]:
    """Verify every report's device signature (ReportError otherwise); one passing Check per report
    (none when `rows` is false, e.g. for baselines, which have no row of their own)."""
    checks = []
    for i, (report, name) in enumerate(zip(reports, names)):
        kid = _verify(report, name, keys)
        if rows:
            checks.append(Check(report["target"].get("name") or "?", report["bundle"]["name"], "report_signature",
                                None, kid, f"signed on the device ({keys[kid][0]})", "pass", "", first_index + i))
    return checks
