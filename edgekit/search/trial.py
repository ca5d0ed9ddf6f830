"""One search trial: settings -> (recipe stages, cached) -> bundle -> measured -> judged.

`build(spec)` compresses and converts (the part a Ray worker runs: plain JSON in, a bundle out);
`measure(spec, bundle)` benchmarks the bundle on this host or on a device of its target (fleet code)
and judges every budget. Feasibility is the gate's own statistics: p95 by its 95% upper confidence
bound, memory as peak RSS, load time, file size; accuracy (and per-class accuracy, and the task's
own floors) on the *tuning* split the conversion recorded, never on the held-out split, which the
ledger reports for the chosen bundles only as the figure nobody tuned on.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path
from typing import Any

# Budgets judged from conversion figures on the tuning split, not from the device report.
ACCURACY_BUDGETS = ("max_accuracy_drop", "max_class_accuracy_drop", "min_cosine_similarity", "min_recall_at_10")


def target_for(spec: dict):
    """The profile with the trial's runtime, precision, threads and weight scales."""
    from ..targets import load_targets
    t = load_targets([spec["target"]], spec.get("targets_dir"))[0]
    p = spec["params"]
    q = dataclasses.replace(t.quantization, per_channel=p["per_channel"],
                            transformer=tuple((k, v) for k, v in t.quantization.transformer if k != "per_channel")
                            + (("per_channel", p["per_channel"]),))
    return dataclasses.replace(t, runtime=p["runtime"], precision=p["precision"], threads=p["threads"], quantization=q)


def recipe_for(spec: dict) -> dict | None:
    """The trial's stages as a recipe table (compress/recipe.py), or None when it compresses nothing."""
    p, fixed = spec["params"], spec.get("stages", {})
    stages: list[dict] = []
    if p["student"] != "none":
        stages.append({"kind": "distill", "student": p["student"], "epochs": 3, "hidden_loss_weight": 1.0,
                       **fixed.get("distill", {})})
    if p["prune_ratio"] > 0:
        stages.append({"kind": "prune", "method": "structured", "ratio": p["prune_ratio"], "finetune_epochs": 3,
                       **fixed.get("prune", {})})
    if p["vocab"]:
        stages.append({"kind": "vocab", **fixed.get("vocab", {})})
    return {"description": "edgekit search trial", "on_fail": "stop", "stage": stages} if stages else None


def _write_recipe(recipe: dict, path: Path) -> Path:
    lines = [f'description = "{recipe["description"]}"', f'on_fail = "{recipe["on_fail"]}"']
    for st in recipe["stage"]:
        lines.append("\n[[stage]]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in st.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def build(spec: dict) -> dict:
    """Compress (stage cache) and convert; returns the bundle folder and what it took."""
    from ..compress.cache import StageCache
    from ..convert import compress, convert
    from ..source import load
    d = spec["data"]
    out = Path(spec["out"])
    out.mkdir(parents=True, exist_ok=True)
    target = target_for(spec)
    t0 = time.perf_counter()
    recipe = recipe_for(spec)
    compressed, stages, cache_stats = None, [], None
    source = load(spec["source"], task=spec.get("task"))
    if recipe is not None:
        cache = StageCache(spec["cache"])
        path = _write_recipe(recipe, out / "recipe.toml")
        seq = spec.get("sequence_length") or target.sequence_length
        compressed = compress(source, str(path), d["train"], d["validation"], seq, spec.get("tokenizer"), False,
                              d.get("test"), cache=cache)
        stages = compressed[1]["stages"]
        cache_stats = cache.stats()
    t1 = time.perf_counter()
    res = convert(source, [target], d["calibration"], d["validation"], out / "bundles", test=d.get("test"),
                  sequence_length=spec.get("sequence_length"), tokenizer=spec.get("tokenizer"), progress=False,
                  ignore_budgets=True, compressed=compressed, license=spec.get("license", "unknown"),
                  provenance=spec.get("provenance", "unknown"))[0]
    return {"bundle": str(res.path), "stages": [_stage_summary(r) for r in stages], "cache": cache_stats,
            "seconds": {"compress": round(t1 - t0, 2), "convert": round(time.perf_counter() - t1, 2)}}


def _stage_summary(row: dict) -> dict:
    keep = ("stage", "name", "kind", "status", "params", "size_mb", "accuracy", "accuracy_drop", "seconds", "cache",
            "tokens_kept")
    return {k: row[k] for k in keep if k in row}


def measure(spec: dict, built: dict) -> dict:
    """Bench the bundle (this host, or a device of its target with spec['devices']) and judge it."""
    from ..bundle import read_manifest
    from ..gate import gate
    bundle = Path(built["bundle"])
    b = spec.get("bench", {})
    t0 = time.perf_counter()
    if spec.get("devices"):
        from ..devices.fleet import fleet_bench
        fr = fleet_bench([bundle], spec["devices"], spec.get("only"), out=bundle.parent / "reports", progress=False,
                         table=False, **b)
        ok = [r for r in fr.results if r.status == "ok"]
        if not ok:
            raise RuntimeError(f"no device of target {spec['target']} ran {bundle.name}")
        report_path, measured_on = Path(ok[0].report), f"device {ok[0].device}"
    else:
        from ..bench import bench
        report_path = bundle.parent / "report.json"
        bench(bundle, report_path, **b)
        measured_on = "this host (no --devices)"
    report = json.loads(report_path.read_text())
    seconds = time.perf_counter() - t0
    manifest = read_manifest(bundle)
    checks = [c for c in gate([report]).checks if c.budget not in ACCURACY_BUDGETS]
    figures: dict[str, Any] = {}
    constraints: dict[str, float] = {}
    for c in checks:
        if c.limit is None:
            if c.status == "fail":  # self-check, integrity, harness status: nothing can make this trial fit
                constraints[c.budget] = 1.0
            continue
        if isinstance(c.value, (int, float)) and not isinstance(c.value, bool):
            figures[c.budget] = float(c.value)
            constraints[c.budget] = float(c.value) - float(c.limit)
    acc = accuracy_constraints(manifest, report["target"].get("budget") or {})
    figures.update(acc["figures"])
    constraints.update(acc["constraints"])
    lat = report.get("latency") or {}
    conv = manifest["conversion"]
    return {"figures": figures, "constraints": constraints, "feasible": all(v <= 0 for v in constraints.values()),
            "objectives": {"latency_p95_ucb_ms": figures.get("latency_p95_ms", lat.get("p95")),
                           "model_size_mb": manifest["model"]["size_bytes"] / 2**20},
            "p50_ms": lat.get("p50"), "measured_on": measured_on, "report": str(report_path),
            "held_out": {"metric": conv["accuracy"]["metric"], "value": conv["accuracy"]["value"],
                         "n": conv["accuracy"]["n"], "source": manifest["source"].get("accuracy")},
            "host": report.get("environment", {}).get("cpu_model"), "bench_seconds": round(seconds, 2)}


def accuracy_constraints(manifest: dict, budget: dict) -> dict:
    """Accuracy budgets on the tuning split (conversion.tuning_accuracy): drop = the source's figure
    minus the bundle's there; per-class, the largest class drop; feature extraction: the margin
    inside the embedding floors (the task's own measure, what accuracy control uses)."""
    t = manifest["conversion"]["tuning_accuracy"]
    figures, constraints = {}, {}
    task = manifest["model"]["task"]
    if task == "classification":
        drop = t["source_margin"] - t["margin"]
        figures["accuracy_drop_tuning"] = drop
        if budget.get("max_accuracy_drop") is not None:
            constraints["max_accuracy_drop"] = drop - budget["max_accuracy_drop"]
        if "per_class" in t:
            worst = max((t["source_per_class"].get(c, 0.0) - a for c, a in t["per_class"].items()), default=0.0)
            figures["max_class_drop_tuning"] = worst
            if budget.get("max_class_accuracy_drop") is not None:
                constraints["max_class_accuracy_drop"] = worst - budget["max_class_accuracy_drop"]
    else:  # margin >= 0: inside every floor the profile sets (tasks/feature_extraction.py)
        figures["quality_margin_tuning"] = t["margin"]
        constraints["embedding_floors"] = -t["margin"]
    return {"figures": figures, "constraints": constraints}


def run(spec: dict) -> dict:
    """build + measure; a trial that cannot be built or measured is 'failed' with the reason."""
    from ..errors import EdgekitError
    t0 = time.perf_counter()
    try:
        built = build(spec)
        result = {"status": "ok", **built, **measure(spec, built)}
    except (EdgekitError, RuntimeError, OSError) as exc:
        shutil.rmtree(Path(spec["out"]) / "bundles", ignore_errors=True)
        result = {"status": "failed", "error": str(exc).splitlines()[0][:400] if str(exc) else type(exc).__name__}
    result["seconds_total"] = round(time.perf_counter() - t0, 2)
    return result
