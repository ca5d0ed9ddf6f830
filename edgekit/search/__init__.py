"""`edgekit search`: find the fastest bundle that meets every budget of a target, by measuring.

    validate everything (targets, source, data, space, storage) -> per target: an Optuna study
    (the profile's own recipe first) -> trials (stages cached, converted, benched, judged) ->
    ledger (DIR/search.json), Pareto front, best bundle per target (DIR/best/<target>/), HTML page;
    when nothing fits: the nearest miss per budget and exit code 1.

Modules: space.py (the TOML space), trial.py (one trial), engine.py (Optuna, workers, Ray),
ledger.py (results, Pareto front, nearest miss, HTML).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable

from ..errors import ConfigError

SAMPLERS = ("tpe", "nsga2", "random", "grid")
# Trial benchmarks: fewer samples than a release run, still enough (>= 59 timed runs) for the gate's
# 95% upper confidence bound of p95 to be attained (gate.py).
BENCH = {"runs": 200, "warmup": 10, "min_seconds": 2.0, "warmup_seconds": 0.5, "trials": 2}


@dataclasses.dataclass
class SearchResult:
    out: Path
    targets: dict[str, dict]           # per target: best, pareto, nearest_miss, counts
    ledger: Path

    @property
    def exit_code(self) -> int:
        return 0 if all(t["best"] is not None for t in self.targets.values()) else 1


def search(source: str, targets: list[str], calibration: str, validation: str, out: str | Path, *,
           train: str | None = None, test: str | None = None, trials: int = 30, time_budget: float | None = None,
           space: str | None = None, devices: str | None = None, storage: str | None = None, workers: int = 1,
           ray: str | None = None, sampler: str = "tpe", seed: int = 0, bench: dict | None = None,
           targets_dir: str | None = None, sequence_length: int | None = None, tokenizer: str | None = None,
           task: str | None = None, license: str = "unknown", provenance: str = "unknown",
           log: Callable[[str], None] = print) -> SearchResult:
    from ..convert import prepare
    from ..source import load
    from ..targets import load_targets
    from . import engine, ledger
    from .space import load_space
    if trials < 1:
        raise ConfigError(f"--trials {trials}: must be >= 1")
    if workers < 1:
        raise ConfigError(f"--workers {workers}: must be >= 1")
    if time_budget is not None and time_budget <= 0:
        raise ConfigError(f"--time-budget {time_budget:g}: must be > 0 seconds")
    if sampler not in SAMPLERS:
        raise ConfigError(f"--sampler {sampler!r}: expected one of {', '.join(SAMPLERS)}")
    if workers > 1 and ray:
        raise ConfigError("--workers and --ray both scale the search out; give one of them")
    profiles = load_targets(targets, targets_dir)
    if not profiles:
        raise ConfigError("edgekit search needs at least one --target")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: --out names a folder")
    handle = load(source, task=task)
    if handle.task == "text-generation":
        raise ConfigError(f"{source}: edgekit search takes classifiers and feature extractors; a causal LM's "
                          "recipe comes from the profile's [generation] table")
    seq = sequence_length or profiles[0].sequence_length
    prepare(handle, calibration, validation, sequence_length=seq, tokenizer=tokenizer, test=test)  # bad data: now
    spaces = {t.name: load_space(space, t, handle, has_train=train is not None) for t in profiles}
    out.mkdir(parents=True, exist_ok=True)
    storage = storage or f"sqlite:///{(out / 'search.db').resolve()}"
    if devices:
        from ..devices.inventory import load_devices
        load_devices(devices)  # a bad inventory is refused before any trial
    base = {"source": source, "task": task, "targets_dir": targets_dir, "tokenizer": tokenizer,
            "sequence_length": sequence_length, "cache": str(out / "cache"), "devices": devices,
            "bench": {**BENCH, **(bench or {})}, "license": license, "provenance": provenance,
            "data": {"calibration": calibration, "validation": validation, "test": test, "train": train}}
    results: dict[str, dict] = {}
    for t in profiles:
        sp = spaces[t.name]
        values = _with_profile_recipe(sp.values, t, handle)
        name = f"edgekit-search-{t.name}"
        study = engine.open_study(storage, name, sampler, seed, values)
        stale = engine.recover(study)
        if stale:
            log(f"{t.name}: resuming; {len(stale)} interrupted trial(s) asked again first")
        if not study.get_trials(deepcopy=False):
            study.enqueue_trial(profile_params(t, handle), user_attrs={"seeded": "the profile's own recipe"})
        done = engine.finished(study)
        log(f"{t.name}: {len(values)} settings, {_count(values)} combinations; {done} of {trials} trials done")
        engine.drive(study, {**base, "target": t.path or t.name, "stages": sp.stages}, values, out,
                     n_trials=trials, timeout=time_budget, workers=workers, ray_address=ray, storage=storage,
                     name=name, sampler=sampler, seed=seed, log=log)
        rows = engine.ledger_rows(study)
        results[t.name] = ledger.summarize(rows, t, out)
        results[t.name]["space"] = {**sp.to_dict(), "values": {k: list(v) for k, v in values.items()}}
    path = ledger.write(out, results, {"source": source, "sampler": sampler, "seed": seed, "trials": trials,
                                       "time_budget_s": time_budget, "workers": workers, "ray": ray,
                                       "storage": storage, "devices": devices, "data": base["data"]})
    return SearchResult(out, results, path)


def profile_params(t, handle) -> dict[str, Any]:
    """The profile's own recipe as search settings: its runtime, precision, weight scales, threads,
    no compression."""
    return {"runtime": t.runtime, "precision": t.precision, "per_channel": t.int8_for(handle.is_transformer).per_channel,
            "threads": t.threads, "student": "none", "prune_ratio": 0.0, "vocab": False}


def _with_profile_recipe(values: dict[str, tuple], t, handle) -> dict[str, tuple]:
    """Every space holds the profile's own recipe (the first trial), whatever the file lists."""
    own = profile_params(t, handle)
    return {k: v if own[k] in v else (own[k], *v) for k, v in values.items()}


def _count(values: dict[str, tuple]) -> int:
    n = 1
    for v in values.values():
        n *= len(v)
    return n
