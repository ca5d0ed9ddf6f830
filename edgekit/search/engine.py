"""The search loop on Optuna: one study per target, two objectives (p95 upper bound, file size),
every budget a constraint, the profile's own recipe enqueued first, SQLite storage so a search resumes.

Sampler: Optuna's TPESampler (multi-objective, constraints_func) by default, or NSGA-II, random or
grid (`sampler=`). Each trial gets a fresh sampler seeded from (seed, number of finished trials),
so a search killed and resumed asks for the same settings as one that was never stopped, as long as
the history it samples from is the same: exactly so for the random and grid samplers; TPE and
NSGA-II read measured latencies, which differ from run to run on a shared machine.

Scale-out: `workers=N` runs N processes on this machine, each an Optuna worker on the shared
storage; `ray_address` runs each trial's build (compression + conversion) as a Ray task on the
cluster, and measures the bundle it sends back here (or on the devices).
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import time
from pathlib import Path
from typing import Any, Callable

from ..errors import ConfigError
from . import trial as T

LEDGER_KEY = "edgekit"  # trial.user_attrs[LEDGER_KEY]: the ledger row


def _optuna():
    try:
        import optuna
    except ImportError as exc:
        from ..errors import MissingExtraError
        raise MissingExtraError("optuna", "search", "edgekit search") from exc
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


class Reseeded:
    """An Optuna sampler whose randomness depends only on (seed, finished trials so far): a fresh
    inner sampler per trial (module docstring). Public sampler API only."""

    def __init__(self, kind: str, seed: int, space: dict[str, tuple]):
        self.kind, self.seed, self.space = kind, seed, space
        self.inner = self._make(0)

    def _make(self, n: int):
        optuna = _optuna()
        s = int.from_bytes(hashlib.sha256(f"{self.seed}:{n}".encode()).digest()[:4], "little")
        if self.kind == "tpe":
            # constraints: trial.set_constraint (Optuna 5), read by TPE and NSGA-II alike
            return optuna.samplers.TPESampler(seed=s, n_startup_trials=5)
        if self.kind == "nsga2":
            return optuna.samplers.NSGAIISampler(seed=s, population_size=8)
        if self.kind == "grid":
            return optuna.samplers.GridSampler({k: list(v) for k, v in self.space.items()}, seed=s)
        return optuna.samplers.RandomSampler(seed=s)


def _sampler_class():
    optuna = _optuna()

    class _Sampler(optuna.samplers.BaseSampler):
        def __init__(self, r: Reseeded):
            self.r = r

        def before_trial(self, study, trial):
            self.r.inner = self.r._make(ledger_index(study, trial.number))
            self.r.inner.before_trial(study, trial)

        def infer_relative_search_space(self, study, trial):
            return self.r.inner.infer_relative_search_space(study, trial)

        def sample_relative(self, study, trial, search_space):
            return self.r.inner.sample_relative(study, trial, search_space)

        def sample_independent(self, study, trial, name, dist):
            return self.r.inner.sample_independent(study, trial, name, dist)

        def after_trial(self, study, trial, state, values):
            self.r.inner.after_trial(study, trial, state, values)

    return _Sampler


def open_study(storage: str, name: str, sampler: str, seed: int, space: dict[str, tuple]):
    optuna = _optuna()
    try:
        return optuna.create_study(storage=storage, study_name=name, directions=["minimize", "minimize"],
                                   sampler=_sampler_class()(Reseeded(sampler, seed, space)), load_if_exists=True)
    except Exception as exc:  # sqlalchemy / optuna errors: the URL is the user's input
        raise ConfigError(f"--storage {storage}: cannot open it as an Optuna storage "
                          f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from exc


def recover(study) -> list[dict]:
    """Trials left RUNNING by a crash or Ctrl-C: marked failed, their settings asked again first."""
    optuna = _optuna()
    stale = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.RUNNING]
    for t in stale:
        study.tell(t.number, state=optuna.trial.TrialState.FAIL)
        if t.params:
            study.enqueue_trial(t.params, user_attrs={"requeued_from": t.number})
    return [{"number": t.number, "params": t.params} for t in stale]


def ledger_index(study, number: int) -> int:
    """A trial's place in the ledger: its number, less the interrupted (failed) trials before it. So a
    resumed search numbers its trials as an uninterrupted one does, and parallel workers never share one."""
    optuna = _optuna()
    return number - sum(1 for t in study.get_trials(deepcopy=False)
                        if t.number < number and t.state == optuna.trial.TrialState.FAIL)


def finished(study) -> int:
    optuna = _optuna()
    return sum(1 for t in study.get_trials(deepcopy=False)
               if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED))


def objective_factory(base_spec: dict, space: dict[str, tuple], out: Path, runner: Callable[[dict], dict],
                      log: Callable[[str], None]):
    from .space import valid
    optuna = _optuna()

    def objective(trial):
        params = {k: trial.suggest_categorical(k, list(v)) for k, v in space.items()}
        index = ledger_index(trial.study, trial.number)
        why = valid(params)
        if why:
            _constrain(trial, None)
            trial.set_user_attr(LEDGER_KEY, {"index": index, "params": params, "status": "invalid", "error": why,
                                             "constraints": {"invalid": 1.0}})
            raise optuna.TrialPruned(why)
        earlier = _same_settings(trial.study, params)
        if earlier is not None:  # a sampler may ask twice in a small space: the measured answer is reused
            result = {k: v for k, v in earlier.items() if k not in ("index", "params")}
            result["repeat_of"] = earlier["index"]
        else:
            spec = {**base_spec, "params": params, "out": str(out / "trials" / f"{index:04d}")}
            result = runner(spec)
        row = {"index": index, "params": params, **result}
        if result["status"] != "ok":
            row["constraints"] = {"failed": 1.0}
        _constrain(trial, row["constraints"] if result["status"] == "ok" else None)
        trial.set_user_attr(LEDGER_KEY, json.loads(json.dumps(row, default=str)))
        log(_line(row))
        if result["status"] != "ok":
            raise optuna.TrialPruned(result.get("error", "failed"))
        o = result["objectives"]
        return o["latency_p95_ucb_ms"], o["model_size_mb"]

    return objective


# Every trial sets the same constraint keys (a budget a profile leaves out is 0: met).
CONSTRAINT_KEYS = ("latency_p95_ms", "peak_memory_mb", "model_size_mb", "load_time_ms", "max_accuracy_drop",
                   "max_class_accuracy_drop", "embedding_floors", "status", "self_check", "integrity")


def _constrain(trial, constraints: dict | None) -> None:
    """Optuna's constraint values (<= 0 feasible); None: the trial failed, infeasible on every key."""
    for k in CONSTRAINT_KEYS:
        trial.set_constraint(k, 1.0 if constraints is None else float(constraints.get(k, 0.0)))


def _same_settings(study, params: dict) -> dict | None:
    for t in study.get_trials(deepcopy=False):
        row = t.user_attrs.get(LEDGER_KEY)
        if row and row.get("params") == params and row.get("status") == "ok" and "repeat_of" not in row:
            return row
    return None


def _line(row: dict) -> str:
    p = row["params"]
    prune = f" prune {p['prune_ratio']:g}" if p["prune_ratio"] else ""
    what = (f"{p['runtime']} {p['precision']}{' per-channel' if p['per_channel'] else ''} {p['threads']} threads "
            f"student {p['student']}{prune}{' vocab' if p['vocab'] else ''}")
    if row["status"] != "ok":
        return f"trial {row['index']}: {what}: {row['status']}: {row.get('error', '')}"
    if "repeat_of" in row:
        return f"trial {row['index']}: {what}: the settings of trial {row['repeat_of']}, its figures reused"
    o = row["objectives"]
    return (f"trial {row['index']}: {what}: p95 ucb {o['latency_p95_ucb_ms']:.2f} ms, {o['model_size_mb']:.1f} MB, "
            f"{'feasible' if row['feasible'] else 'infeasible: ' + ', '.join(k for k, v in row['constraints'].items() if v > 0)}")


def run_local(spec: dict) -> dict:
    return T.run(spec)


def _reachable(address: str, timeout: float = 3.0) -> None:
    """A TCP connect to the head's GCS port first: ray.init on an address nobody listens at waits
    for minutes before it fails."""
    import socket
    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--ray {address}: expected HOST:PORT of a Ray head (e.g. 127.0.0.1:6379)")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise ConfigError(f"--ray {address}: no Ray head answers there ({exc.strerror or type(exc).__name__}); "
                          "start one with `ray start --head --port PORT`") from exc


def ray_runner(address: str) -> Callable[[dict], dict]:
    """Build on the Ray cluster (the bundle comes back as a tar archive), measure here."""
    try:
        import ray
    except ImportError as exc:
        from ..errors import MissingExtraError
        raise MissingExtraError("ray", "search", "edgekit search --ray") from exc
    _reachable(address)
    try:
        ray.init(address=address, ignore_reinit_error=True, log_to_driver=False, logging_level="ERROR")
    except Exception as exc:
        raise ConfigError(f"--ray {address}: cannot connect to a Ray cluster there "
                          f"({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''})") from exc

    @ray.remote(num_cpus=1)
    def build_remote(spec: dict) -> tuple[dict, bytes]:
        import io
        import tarfile
        from edgekit.search import trial as TT
        built = TT.build(spec)
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            tar.add(built["bundle"], arcname=Path(built["bundle"]).name)
        return built, buf.getvalue()

    def run(spec: dict) -> dict:
        import io
        import shutil
        import tarfile
        from ..errors import EdgekitError
        t0 = time.perf_counter()
        try:
            built, blob = ray.get(build_remote.remote(spec))
            dest = Path(spec["out"]) / "bundles"
            shutil.rmtree(dest, ignore_errors=True)
            dest.mkdir(parents=True)
            with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
                tar.extractall(dest, filter="data")
            built = {**built, "bundle": str(dest / Path(built["bundle"]).name), "built_on": "ray"}
            result = {"status": "ok", **built, **T.measure(spec, built)}
        except (EdgekitError, RuntimeError, OSError) as exc:
            result = {"status": "failed", "error": str(exc).splitlines()[0][:400]}
        except Exception as exc:  # a task error from the cluster: its first line
            result = {"status": "failed", "error": f"ray: {type(exc).__name__}: {str(exc).strip().splitlines()[-1][:300]}"}
        result["seconds_total"] = round(time.perf_counter() - t0, 2)
        return result

    return run


def _worker(storage: str, name: str, sampler: str, seed: int, space: dict, base_spec: dict, out: str,
            n_trials: int, timeout: float | None) -> None:
    """A --workers process: its own study handle on the shared storage."""
    study = open_study(storage, name, sampler, seed, space)
    objective = objective_factory(base_spec, space, Path(out), run_local, lambda s: print(s, flush=True))
    _optimize(study, objective, n_trials, timeout)


def _optimize(study, objective, n_trials: int, timeout: float | None) -> None:
    optuna = _optuna()
    t_end = None if timeout is None else time.monotonic() + timeout

    # MaxTrialsCallback counts every worker's finished trials on the shared storage
    cb = optuna.study.MaxTrialsCallback(n_trials, states=(optuna.trial.TrialState.COMPLETE,
                                                         optuna.trial.TrialState.PRUNED))
    while finished(study) < n_trials and (t_end is None or time.monotonic() < t_end):
        study.optimize(objective, n_trials=1, callbacks=[cb], catch=())


def drive(study, base_spec: dict, space: dict, out: Path, *, n_trials: int, timeout: float | None, workers: int,
          ray_address: str | None, storage: str, name: str, sampler: str, seed: int, log) -> None:
    if ray_address:
        runner = ray_runner(ray_address)
        _optimize(study, objective_factory(base_spec, space, out, runner, log), n_trials, timeout)
        return
    if workers <= 1:
        _optimize(study, objective_factory(base_spec, space, out, run_local, log), n_trials, timeout)
        return
    ctx = multiprocessing.get_context("spawn")  # fresh interpreters: torch and runtimes do not fork well
    procs = [ctx.Process(target=_worker, args=(storage, name, sampler, seed, space, base_spec, str(out),
                                               n_trials, timeout)) for _ in range(workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()


def ledger_rows(study) -> list[dict[str, Any]]:
    """Finished trials in the order they finished (their ledger index); interrupted ones left out."""
    optuna = _optuna()
    rows = [t.user_attrs[LEDGER_KEY] for t in study.get_trials(deepcopy=False)
            if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
            and LEDGER_KEY in t.user_attrs]
    return sorted(rows, key=lambda r: r["index"])
