"""CLI commands of this stage: register(subparsers) adds them to `edgekit`.

New commands: keygen, sign, verify, inspect, drift. Extra options on existing commands, added by
wrapping their parsers' func (cli.py and convert.py stay as they are):
  convert --sign KEY                    sign every bundle produced (OUT/<bundle name>/manifest.sig)
  gate --baseline REPORT --html FILE --policy FILE
  gate --bundle DIR --device-pubkey KEY  refuse (exit 2) a report of another bundle, or one not signed on
                                        the device (harness --sign-key), or edited after signing
  bench --sign-key KEY                  (cli.py) refused here with --devices: the key must be on the device
Exit codes: 0 ok; 1 drift detected / gate fail; 2 bad input (EdgekitError); 3 gate inconclusive.
"""

from __future__ import annotations

import json
from pathlib import Path


def _console():
    from ..progress import console
    return console()


# ---------------------------------------------------------------- new commands

def cmd_keygen(args) -> int:
    from .sign import key_id, load_public_key, public_raw
    from .sign import keygen
    priv, pub = keygen(args.prefix, overwrite=args.force)
    kid = key_id(public_raw(load_public_key(pub)))
    print(f"private key {priv} (keep it secret; mode 0600)\npublic key  {pub} (key id {kid}; ship it to devices and CI)")
    return 0


def cmd_sign(args) -> int:
    from .sign import sign_bundle
    path = sign_bundle(args.bundle, args.key)
    print(f"signed {args.bundle} -> {path}")
    return 0


def cmd_verify(args) -> int:
    from .sign import verify_bundle
    v = verify_bundle(args.bundle, args.pubkey)
    if args.json:
        print(json.dumps(v.to_dict(), indent=2))
        return 0
    sig = (f"signature verified with {args.pubkey} (key id {v.key_id})" if v.signature_checked
           else "signature present, not checked (no --pubkey)" if v.signed else "not signed")
    print(f"{args.bundle}: {v.n_files} files match the manifest; {sig}")
    for w in v.warnings:
        print(f"warning: {w}")
    return 0


def cmd_inspect(args) -> int:
    from .inspect import inspect, render
    info = inspect(args.bundle)
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        _console().print(render(info))
    return 0


def cmd_drift(args) -> int:
    from .drift import drift, render
    result = drift(args.bundle, args.field_log, psi_threshold=args.psi, ks_p_threshold=args.ks_p)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        _console().print(render(result))
    return result.exit_code


# ---------------------------------------------------------------- wrapped commands

def _bundle_names(args) -> list[str]:
    """The bundles `edgekit convert` writes for these arguments (the same rule convert.py uses)."""
    from ..convert import bundle_name
    from ..targets import load_targets
    profiles = load_targets(list(args.target or []), args.targets)
    return [bundle_name(t, p, t.precision) for t in profiles for p in (args.precision or [t.precision])]


def wrap_convert(original):
    def cmd_convert(args) -> int:
        if not getattr(args, "sign", None):
            return original(args)
        from .sign import load_private_key, sign_bundle
        key = load_private_key(args.sign)      # a bad key fails before minutes of conversion
        rc = original(args)
        if rc:
            return rc
        for name in _bundle_names(args):
            path = Path(args.out) / name
            sign_bundle(path, key)
            print(f"signed {path} -> {path / 'manifest.sig'}")
        return rc
    return cmd_convert


def wrap_gate(original):
    def cmd_gate(args) -> int:
        baseline, html, policy = getattr(args, "baseline", None), getattr(args, "html", None), getattr(args, "policy", None)
        bundles, device_pubkeys = getattr(args, "bundle", None), getattr(args, "device_pubkey", None)
        if not (baseline or html or policy or bundles or device_pubkeys):
            return original(args)
        from ..gate import gate, render_table
        result = gate(args.reports, baseline=baseline, policy=policy, bundles=bundles, device_pubkeys=device_pubkeys)
        _console().print(render_table(result))
        if args.markdown:
            from ..report.markdown import to_markdown
            Path(args.markdown).write_text(to_markdown(result), encoding="utf-8")
        if args.junit:
            from ..report.junit import to_junit
            Path(args.junit).write_text(to_junit(result), encoding="utf-8")
        if html:
            from ..report.html import to_html
            Path(html).write_text(to_html(result), encoding="utf-8")
        if result.verdict == "inconclusive":
            print("verdict: inconclusive (exit 3: rerun as the details say; not a pass)")
        else:
            print(f"verdict: {result.verdict}")
        return result.exit_code
    return cmd_gate


def wrap_bench(original):
    def cmd_bench(args) -> int:
        if getattr(args, "sign_key", None) and getattr(args, "devices", None):
            from ..errors import ConfigError
            # A report is worth signing only with a key that never leaves the device; shipping this
            # machine's key to every board would let any of them (or this machine) sign for all.
            raise ConfigError(f"--sign-key {args.sign_key}: signs reports measured on this machine only; with "
                              "--devices, keep a key on each device and run harness/run.py --sign-key there")
        return original(args)
    return cmd_bench


def register(sub) -> None:
    s = sub.add_parser("keygen", help="make an Ed25519 key pair: PREFIX.key (private, 0600) and PREFIX.pub")
    s.add_argument("prefix")
    s.add_argument("--force", action="store_true", help="overwrite existing PREFIX.key / PREFIX.pub")
    s.set_defaults(func=cmd_keygen)

    s = sub.add_parser("sign", help="sign an existing bundle's manifest (writes BUNDLE/manifest.sig)")
    s.add_argument("bundle")
    s.add_argument("--key", required=True, help="PREFIX.key from edgekit keygen")
    s.set_defaults(func=cmd_sign)

    s = sub.add_parser("verify", help="check a bundle's file hashes and, with --pubkey, its signature; exit 0 ok, 2 refused")
    s.add_argument("bundle")
    s.add_argument("--pubkey", help="PREFIX.pub: require a valid manifest.sig made with its private key")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(func=cmd_verify)

    s = sub.add_parser("inspect", help="what a bundle's manifest knows: version, origin, licence, stages, budgets, reports")
    s.add_argument("bundle")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(func=cmd_inspect)

    s = sub.add_parser("drift", help="compare field inputs/outputs with the bundle's reference statistics; "
                                     "exit 0 no drift, 1 drift, 2 bad input")
    s.add_argument("bundle")
    s.add_argument("field_log", help="the harness's --log-field folder or a .jsonl segment, or data in a "
                                     "calibration format (.npz, image folder, JSONL)")
    s.add_argument("--psi", type=float, help="PSI threshold (default: the profile's drift.psi, else 0.2)")
    s.add_argument("--ks-p", type=float, help="KS p-value threshold (default: the profile's drift.ks_p, else 0.01)")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(func=cmd_drift)

    convert = sub.choices.get("convert")
    if convert is not None:
        convert.add_argument("--sign", metavar="KEY", help="sign each bundle with this private key (PREFIX.key)")
        convert.set_defaults(func=wrap_convert(convert.get_default("func")))
    gate = sub.choices.get("gate")
    if gate is not None:
        gate.add_argument("--baseline", metavar="REPORT", action="append",
                          help="check latency/memory/size regressions against this report of the same target and "
                               "bundle (repeatable: one per report); exit 3 when inconclusive")
        gate.add_argument("--html", metavar="FILE", help="write a self-contained HTML report with plots")
        gate.add_argument("--policy", metavar="FILE", help="policy TOML: licence allow-list, required provenance")
        gate.add_argument("--bundle", metavar="DIR", action="append",
                          help="refuse (exit 2) a report not measured on this bundle: its manifest sha256 must "
                               "match DIR's current content (repeatable: one per bundle, matched by bundle name)")
        gate.add_argument("--device-pubkey", metavar="KEY", action="append",
                          help="refuse (exit 2) a report (or baseline) not signed on the device with this key's "
                               "private half (harness --sign-key), or edited after signing (repeatable: one per device)")
        gate.set_defaults(func=wrap_gate(gate.get_default("func")))
    bench = sub.choices.get("bench")
    if bench is not None:  # after edgekit.devices.commands (cli.py's order), so its --devices is seen
        bench.set_defaults(func=wrap_bench(bench.get_default("func")))
