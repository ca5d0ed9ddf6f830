"""CLI commands of this stage: register(subparsers) adds them to `edgekit`.

    edgekit devices [--devices FILE] [--only NAME_OR_LABEL] [--check] [--json]
    edgekit bench BUNDLE_OR_DIR --devices FILE [--only NAME_OR_LABEL] --out DIR [--retries N]
                  [--parallel N] [--timeout S] [...the usual bench settings]

`bench` itself is defined in edgekit/cli.py; register() adds the fleet options to that subparser and
wraps its function: with --devices it runs the fleet, without it the original local bench.
"""

from __future__ import annotations

import json


def cmd_devices(args) -> int:
    from concurrent.futures import ThreadPoolExecutor

    from .inventory import load_devices, select
    from .transports import transport_for
    devices = select(load_devices(args.devices), args.only, args.devices)
    checks = {}

    def check(d):
        try:
            return transport_for(d).check()
        except Exception as exc:  # one device's trouble is its own row, never the whole listing
            return {"device": d.name, "transport": d.transport, "target": d.profile.name,
                    "address": d.address, "reachable": False, "python": None, "machine": None,
                    "numpy": None, "runtime": None, "ok": False, "install": None,
                    "problems": [f"{type(exc).__name__}: {exc}"]}

    if args.check:
        with ThreadPoolExecutor(max_workers=max(1, min(8, len(devices)))) as pool:
            for d, res in zip(devices, pool.map(check, devices)):
                checks[d.name] = res
    if args.json:
        print(json.dumps([{**d.to_dict(), **({"check": checks[d.name]} if d.name in checks else {})}
                          for d in devices], indent=2))
    else:
        from rich.table import Table

        from ..progress import console
        t = Table(title=f"edgekit devices ({devices[0].source})")
        cols = ["name", "transport", "target", "address", "labels"]
        cols += ["status", "python", "numpy", "runtime", "problem"] if args.check else ["python"]
        for c in cols:
            t.add_column(c, overflow="fold")
        for d in devices:
            row = [d.name, d.transport, d.profile.name, d.address, " ".join(d.labels)]
            if args.check:
                c = checks[d.name]
                status = "[green]ok[/]" if c["ok"] else ("[red]unreachable[/]" if not c["reachable"]
                                                        else "[red]not ready[/]")
                row += [status, f"{c['python'] or '-'} {c['machine'] or ''}".strip(), c["numpy"] or "-",
                        c["runtime"] or "-", "; ".join(c["problems"])]
            else:
                row.append(d.python or "(default)")
            t.add_row(*row)
        console().print(t)
    return 0 if all(c["ok"] for c in checks.values()) else 1


def register(sub) -> None:
    s = sub.add_parser("devices", help="list the devices in devices.toml; --check: reachability and runtime")
    s.add_argument("--devices", metavar="FILE", help="devices file (default ./devices.toml; format: docs/DEVICES.md)")
    s.add_argument("--only", metavar="NAME_OR_LABEL", help="only the device of this name, or with this label")
    s.add_argument("--check", action="store_true",
                   help="connect to each device: python, numpy and the profile's runtime present (exit 1 if not)")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(func=cmd_devices)

    bench = sub.choices.get("bench")
    if bench is None:  # cli.py defines bench; nothing to extend without it
        return
    bench.add_argument("--devices", metavar="FILE",
                       help="run on the devices in FILE whose target matches each bundle (BUNDLE may then be "
                            "a folder of bundles; --out names a folder: OUT/<device>/<bundle>.json + fleet.json)")
    bench.add_argument("--only", metavar="NAME_OR_LABEL", help="with --devices: only this device name or label")
    bench.add_argument("--retries", type=int, default=1,
                       help="with --devices: retries after a transient failure (unreachable, dropped "
                            "connection, timeout, crash); default 1")
    bench.add_argument("--parallel", type=int, default=2, help="with --devices: devices at once (default 2)")
    bench.add_argument("--timeout", type=float,
                       help="with --devices: seconds one harness run may take (default: the device's, else 1800)")
    original = bench.get_default("func")

    def cmd_bench(args) -> int:
        if not args.devices:
            from ..errors import ConfigError
            for flag in ("only", "timeout"):
                if getattr(args, flag) is not None:
                    raise ConfigError(f"--{flag} needs --devices FILE")
            return original(args)
        from .fleet import fleet_bench
        res = fleet_bench(args.bundle, args.devices, args.only, out=args.out or "reports",
                          retries=args.retries, parallel=args.parallel, runs=args.runs, warmup=args.warmup,
                          min_seconds=args.min_seconds, warmup_seconds=args.warmup_seconds,
                          trials=args.trials, threads=args.threads, timeout=args.timeout,
                          pubkey=getattr(args, "pubkey", None))
        n_ok = sum(r.status == "ok" for r in res.results)
        print(f"fleet: {n_ok}/{len(res.results)} device x bundle runs ok -> {res.summary_path}")
        for name in res.unmatched_bundles:
            print(f"fleet: bundle {name} matches no selected device (not run)")
        return res.exit_code

    bench.set_defaults(func=cmd_bench)
