"""`edgekit search` on the command line (registered by cli.py like the other command groups)."""

from __future__ import annotations


def register(sub) -> None:
    s = sub.add_parser("search", help="find the fastest bundle that meets every budget of a target "
                                      "(Optuna; measured on this host or the devices); exit 0 found, 1 none fits")
    s.add_argument("source")
    s.add_argument("--target", action="append", required=True, help="profile name or .toml path (repeatable)")
    s.add_argument("--targets", metavar="DIR", help="where profiles named by --target live")
    s.add_argument("--calibration", required=True)
    s.add_argument("--validation", required=True, help="the data every choice is judged on (and the held-out "
                                                         "half, without --test)")
    s.add_argument("--test", help="held-out data: reported for the chosen bundles, never used to choose")
    s.add_argument("--train", help="training data for the compression stages the space holds")
    s.add_argument("--out", required=True, help="search folder: search.json, search.html, best/<target>/, trials/, "
                                                "cache/, search.db")
    s.add_argument("--trials", type=int, default=30, help="trials per target, counting those of a resumed search (30)")
    s.add_argument("--time-budget", type=float, metavar="S", help="stop asking for trials after S seconds per target")
    s.add_argument("--space", metavar="FILE", help="search space TOML (default: the task's and model's)")
    s.add_argument("--devices", metavar="FILE", help="bench each candidate on a device of its target (inventory)")
    s.add_argument("--storage", metavar="URL", help="Optuna storage (default sqlite:///OUT/search.db)")
    s.add_argument("--workers", type=int, default=1, help="trial processes on this machine, sharing the storage")
    s.add_argument("--ray", metavar="ADDRESS", help="build trials as Ray tasks on this cluster (host:port)")
    s.add_argument("--sampler", default="tpe", choices=["tpe", "nsga2", "random", "grid"])
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--runs", type=int, help="fewest timed runs per benchmark trial (200)")
    s.add_argument("--min-seconds", type=float, help="fewest timed seconds per benchmark trial (2)")
    s.add_argument("--bench-trials", type=int, help="benchmark trials (fresh processes) per candidate (2)")
    s.add_argument("--sequence-length", type=int)
    s.add_argument("--tokenizer", metavar="DIR")
    s.add_argument("--license", default="unknown")
    s.add_argument("--provenance", default="unknown")
    s.set_defaults(func=cmd_search)


def cmd_search(args) -> int:
    from rich.table import Table

    from ..progress import console
    from . import search
    bench = {k: v for k, v in (("runs", args.runs), ("min_seconds", args.min_seconds), ("trials", args.bench_trials))
             if v is not None}
    con = console()
    result = search(args.source, args.target, args.calibration, args.validation, args.out, train=args.train,
                    test=args.test, trials=args.trials, time_budget=args.time_budget, space=args.space,
                    devices=args.devices, storage=args.storage, workers=args.workers, ray=args.ray,
                    sampler=args.sampler, seed=args.seed, bench=bench, targets_dir=args.targets,
                    sequence_length=args.sequence_length, tokenizer=args.tokenizer, license=args.license,
                    provenance=args.provenance, log=lambda s: con.print(s, highlight=False))
    t = Table(title=f"edgekit search -> {result.out}")
    for c in ("target", "best trial", "settings", "p95 UCB ms", "size MB", "drop (tuning)", "held-out",
              "trials / feasible", "cache served"):
        t.add_column(c)
    for name, r in result.targets.items():
        b, n = r["best"], r["counts"]
        cache = f"{100 * r['stage_cache']['share_served']:.0f}%"
        if b is None:
            miss = r["nearest_miss"]["per_budget"]
            t.add_row(name, "[red]none fits[/]", "nearest miss: " + "; ".join(
                f"{k} over by {v['over_by']:.4g} (trial {v['trial']})" for k, v in miss.items()),
                "", "", "", "", f"{n['trials']} / 0", cache)
            continue
        p = b["params"]
        ho = b.get("held_out") or {}
        t.add_row(name, str(b["trial"]), f"{p['runtime']} {p['precision']} student {p['student']} prune "
                  f"{p['prune_ratio']:g} vocab {p['vocab']}", f"{b['objectives']['latency_p95_ucb_ms']:.2f}",
                  f"{b['objectives']['model_size_mb']:.2f}", f"{b['figures'].get('accuracy_drop_tuning', float('nan')):+.4f}",
                  f"{ho.get('value', float('nan')):.4f} (source {ho.get('source') or float('nan'):.4f})",
                  f"{n['trials']} / {n['feasible']}", cache)
    con.print(t)
    for name, r in result.targets.items():
        if r["best"] and r["best"].get("held_out_warning"):
            con.print(f"[yellow]warning[/]: {name}: {r['best']['held_out_warning']}", highlight=False)
    print(f"ledger: {result.ledger}; page: {result.out / 'search.html'}")
    return result.exit_code
