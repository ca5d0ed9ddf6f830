"""Fleet runs: every bundle on every device whose profile matches, a bounded number of devices at once.

    result = fleet_bench("bundles/", "devices.toml", only="lab", out="reports/")

Writes OUT/<device>/<bundle>.json (the harness's own report, fetched from the device and checked
against the report schema and the bundle's manifest hash before it is moved into place) and
OUT/fleet.json (schema "edgekit.fleet/1": one row per device x bundle, failed ones with their
error), and prints a table. A device that fails - unreachable, wrong key, host key mismatch, runtime
missing, no space, timeout, crash, dropped connection - is a failed row with a one-line error; it
is retried when the failure may pass (base.TRANSIENT) and never stops or delays the other devices
beyond its own slot. A failed run leaves no report under OUT (a stale one from an earlier run of the
same pair is removed first), so the gate can never read a partial or old report as this run's.

Bundles on one device run one after another (two at once would measure each other); devices run in
parallel, at most `parallel` at a time.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import posixpath
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath

from ..errors import BundleError, ConfigError, ReportError
from .base import TRANSIENT, DeviceError, classify_harness
from .inventory import Device, load_devices, select
from .transports import transport_for

FLEET_SCHEMA = "edgekit.fleet/1"
DEFAULT_TIMEOUT_S = 1800.0           # one harness run on a real device
EMULATED_TIMEOUT_FACTOR = 4.0        # qemu-user runs the same work 50-200x slower (latency only)


@dataclasses.dataclass
class RunResult:
    device: str
    transport: str
    target: str
    bundle: str
    status: str = "pending"            # ok | failed
    report: str | None = None
    error: str | None = None
    kind: str | None = None
    attempts: int = 0
    errors: list[str] = dataclasses.field(default_factory=list)   # one per failed attempt
    duration_s: float | None = None
    summary: dict = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class FleetResult:
    out: Path
    summary_path: Path
    results: list[RunResult]
    unmatched_bundles: list[str]
    devices_without_bundle: list[str]
    duration_s: float

    @property
    def ok(self) -> bool:
        return all(r.status == "ok" for r in self.results)

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1

    def failed(self) -> list[RunResult]:
        return [r for r in self.results if r.status != "ok"]

    def to_dict(self) -> dict:
        return {"schema": FLEET_SCHEMA, "out": str(self.out), "ok": self.ok,
                "duration_s": self.duration_s, "results": [r.to_dict() for r in self.results],
                "unmatched_bundles": self.unmatched_bundles,
                "devices_without_bundle": self.devices_without_bundle}


# ---------------------------------------------------------------- bundles

def find_bundles(paths) -> list[Path]:
    """A bundle folder (holds manifest.json) or a folder of bundle folders; several allowed."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    found: list[Path] = []
    for p in map(Path, paths):
        if (p / "manifest.json").is_file():
            found.append(p)
        elif p.is_dir():
            subs = sorted(d for d in p.iterdir() if (d / "manifest.json").is_file())
            if not subs:
                raise BundleError(f"{p}: neither a bundle (no manifest.json) nor a folder of bundles")
            found += subs
        else:
            raise BundleError(f"{p}: bundle folder not found")
    names = [b.name for b in found]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise BundleError(f"two bundles are named {dup[0]!r}: reports are OUT/<device>/<bundle>.json, "
                          "names must be unique")
    return found


def _bundle_target(bundle: Path) -> tuple[str, str]:
    """(target profile name, sha256 of manifest.json)."""
    raw = (bundle / "manifest.json").read_bytes()
    try:
        manifest = json.loads(raw)
        return manifest["target"]["name"], hashlib.sha256(raw).hexdigest()
    except (ValueError, KeyError, TypeError) as exc:
        raise BundleError(f"{bundle / 'manifest.json'}: no target name (not an edgekit bundle?)") from exc


# ---------------------------------------------------------------- one device x bundle

def _summary(report: dict) -> dict:
    lat, acc, env = report.get("latency") or {}, report.get("accuracy") or {}, report.get("environment") or {}
    rob = report.get("robustness") or {}
    return {"p50_ms": lat.get("p50"), "p95_ms": lat.get("p95"),
            "peak_mb": (report.get("memory") or {}).get("peak_rss_mb"),
            "accuracy": acc.get("value"), "accuracy_drop": acc.get("drop"),
            "self_check": (report.get("self_check") or {}).get("passed"),
            "robustness": rob.get("passed") if rob else None,
            "emulated": env.get("emulated"), "machine": env.get("machine"),
            "cpu_model": env.get("cpu_model"), "runtime": (env.get("runtime") or {}).get("version")}


def run_one(device: Device, bundle: Path, dest: Path, *, manifest_sha: str, settings: dict,
            timeout: float, pubkey: Path | None = None, stage=lambda s: None) -> dict:
    """One attempt: copy, run the harness, fetch and check the report, clean up. Returns the report;
    raises DeviceError. `dest` is written only when everything checked out."""
    from ..bench import harness_command
    from ..report.load import load_report
    t = transport_for(device)
    part = dest.with_name(f".{dest.name}.part")
    try:
        stage("copying")
        remote = t.put(bundle, (pubkey,) if pubkey else ())
        remote_report = posixpath.join(posixpath.dirname(remote), "report.json")
        cmd = harness_command(PurePosixPath(remote), PurePosixPath(remote_report), python=t.python,
                              **settings)
        if pubkey:  # the device's copy, beside the bundle: the harness refuses an unsigned/altered bundle
            cmd += ["--pubkey", posixpath.join(posixpath.dirname(remote), pubkey.name)]
        stage("running")
        rc, out, err = t.run(cmd, timeout)
        if rc != 0:
            raise classify_harness(rc, err, python=t.python, timeout=timeout)
        stage("fetching")
        dest.parent.mkdir(parents=True, exist_ok=True)
        t.get(remote_report, part)
        try:
            report = load_report(part)
        except ReportError as exc:
            raise DeviceError(f"the device's report is not valid: {exc}", "report") from exc
        if report.get("status") != "ok":
            raise DeviceError(f"the harness reported status {report.get('status')!r}: "
                              f"{report.get('error', '')}", "crash")
        got = (report.get("bundle") or {}).get("manifest_sha256")
        if got != manifest_sha:
            raise DeviceError(f"the report is for another bundle (manifest sha256 {str(got)[:12]}..., "
                              f"expected {manifest_sha[:12]}...)", "report")
        if device.transport == "qemu" and not (report.get("environment") or {}).get("emulated"):
            raise DeviceError("the report from an emulated device is not marked emulated", "report")
        os.replace(part, dest)
        return report
    finally:
        stage("cleaning up")
        try:
            t.cleanup()
        finally:
            try:
                part.unlink()
            except FileNotFoundError:
                pass


# ---------------------------------------------------------------- the fleet

class _Display:
    """A live rich progress display (one line per device) on a terminal; plain lines otherwise."""

    def __init__(self, devices: dict[str, int], enabled: bool):
        self.enabled = enabled
        self.lock = threading.Lock()
        self.progress = None
        self.tasks: dict[str, int] = {}
        if not enabled:
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
        self.console = Console(stderr=True)
        self.live = self.console.is_terminal
        if self.live:
            self.progress = Progress(TextColumn("{task.fields[device]:<16}"), BarColumn(bar_width=20),
                                     MofNCompleteColumn(), TimeElapsedColumn(),
                                     TextColumn("{task.description}"), console=self.console)
            for name, n in devices.items():
                self.tasks[name] = self.progress.add_task("waiting", total=n, device=name)

    def __enter__(self):
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(self, *exc):
        if self.progress is not None:
            self.progress.stop()

    def stage(self, device: str, text: str) -> None:
        if self.progress is not None:
            self.progress.update(self.tasks[device], description=text)

    def done(self, r: RunResult) -> None:
        if not self.enabled:
            return
        what = "ok" if r.status == "ok" else f"FAILED ({r.kind}): {r.error}"
        line = f"{r.device} / {r.bundle}: {what} [{r.attempts} attempt(s), {r.duration_s:.1f} s]"
        if self.progress is not None:
            self.progress.update(self.tasks[r.device], advance=1)
            self.progress.console.print(line, markup=False, highlight=False)
        else:
            with self.lock:
                print(f"fleet: {line}", file=sys.stderr, flush=True)


def fleet_bench(bundles, devices_file: str | Path | None = None, only: str | None = None, *,
                out: str | Path = "reports", retries: int = 1, parallel: int = 2,
                runs: int | None = None, warmup: int | None = None, min_seconds: float | None = None,
                warmup_seconds: float | None = None, trials: int | None = None,
                threads: int | None = None, timeout: float | None = None, pubkey: str | Path | None = None,
                retry_delay: float = 2.0,
                devices: list[Device] | None = None, progress: bool = True,
                table: bool = True) -> FleetResult:
    """Run each bundle on every selected device whose target matches; see the module docstring."""
    if retries < 0:
        raise ConfigError(f"--retries must be >= 0, got {retries}")
    if parallel < 1:
        raise ConfigError(f"--parallel must be >= 1, got {parallel}")
    if timeout is not None and not timeout > 0:
        raise ConfigError(f"--timeout must be > 0 seconds, got {timeout}")
    if pubkey is not None:
        pubkey = Path(pubkey).resolve()
        if not pubkey.is_file():
            raise ConfigError(f"{pubkey}: --pubkey file not found")
    from ..bundle import verify
    all_devices = devices if devices is not None else load_devices(devices_file)
    chosen = select(all_devices, only, devices_file)
    found = find_bundles(bundles)
    info = {}
    for b in found:
        verify(b)  # an altered bundle is the dev side's error: refused before any device is used
        info[b.name] = _bundle_target(b)
    plan: dict[str, list[Path]] = {d.name: [b for b in found if info[b.name][0] == d.profile.name]
                                   for d in chosen}
    unmatched = [b.name for b in found if not any(b in bs for bs in plan.values())]
    idle = [name for name, bs in plan.items() if not bs]
    if not any(plan.values()):
        targets = sorted({info[b.name][0] for b in found})
        raise ConfigError(f"no device matches the bundles' targets ({', '.join(targets)}); devices: "
                          + ", ".join(f"{d.name} ({d.profile.name})" for d in chosen))
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: with --devices, --out names a folder (reports go to OUT/<device>/<bundle>.json)")
    out.mkdir(parents=True, exist_ok=True)
    settings = {"runs": runs, "warmup": warmup, "min_seconds": min_seconds,
                "warmup_seconds": warmup_seconds, "trials": trials, "threads": threads}
    by_name = {d.name: d for d in chosen}
    results = {(d, b.name): RunResult(d, by_name[d].transport, by_name[d].profile.name, b.name)
               for d, bs in plan.items() for b in bs}
    t_start = time.time()

    def device_timeout(d: Device) -> float:
        t = timeout or d.timeout or DEFAULT_TIMEOUT_S
        if timeout is None and d.timeout is None and d.transport == "qemu":
            t *= EMULATED_TIMEOUT_FACTOR
        return t

    def work(name: str, display: _Display) -> None:
        d = by_name[name]
        for b in plan[name]:
            r = results[(name, b.name)]
            dest = out / name / f"{b.name}.json"
            dest.unlink(missing_ok=True)  # a stale report must not pass for this run's
            t0 = time.time()
            while True:
                r.attempts += 1
                label = f"{b.name}" + (f" (attempt {r.attempts})" if r.attempts > 1 else "")
                try:
                    report = run_one(d, b, dest, manifest_sha=info[b.name][1], settings=settings,
                                     timeout=device_timeout(d), pubkey=pubkey,
                                     stage=lambda s, label=label: display.stage(name, f"{label}: {s}"))
                    r.status, r.report, r.error, r.kind = "ok", str(dest), None, None
                    r.summary = _summary(report)
                    break
                except DeviceError as exc:
                    r.status, r.error, r.kind = "failed", str(exc), exc.kind
                    r.errors.append(f"{exc.kind}: {exc}")
                except Exception as exc:  # a bug must cost this device only, never the fleet
                    r.status, r.error, r.kind = "failed", f"{type(exc).__name__}: {exc}", "error"
                    r.errors.append(f"error: {r.error}")
                if r.kind not in TRANSIENT or r.attempts > retries:
                    break
                display.stage(name, f"{label}: {r.kind}, retrying")
                time.sleep(retry_delay * r.attempts)
            r.duration_s = round(time.time() - t0, 3)
            display.done(r)
        display.stage(name, "done")

    with _Display({n: len(bs) for n, bs in plan.items() if bs}, progress) as display:
        with ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="edgekit-device") as pool:
            for f in [pool.submit(work, n, display) for n, bs in plan.items() if bs]:
                f.result()

    ordered = [results[(d, b.name)] for d, bs in plan.items() for b in bs]
    res = FleetResult(out, out / "fleet.json", ordered, unmatched, idle, round(time.time() - t_start, 3))
    doc = res.to_dict()
    doc["devices"] = [by_name[n].to_dict() for n in plan]
    doc["settings"] = {k: v for k, v in settings.items() if v is not None}
    tmp = res.summary_path.with_name(".fleet.json.part")
    tmp.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, res.summary_path)
    if table:
        from ..progress import console
        console().print(render_table(res))
    return res


def render_table(res: FleetResult):
    from rich.table import Table

    def fmt(v, spec):
        return "-" if v is None else format(v, spec)

    t = Table(title=f"edgekit fleet -> {res.out}")
    for col in ("device", "transport", "bundle", "status", "p50 ms", "p95 ms", "accuracy",
                "self-check", "robust", "note"):
        t.add_column(col)
    for r in res.results:
        s = r.summary
        yes_no = {True: "pass", False: "FAIL", None: "-"}
        note = r.error if r.status != "ok" else ("latency emulated" if s.get("emulated") else "")
        if r.status == "ok" and r.attempts > 1:
            note = (note + "; " if note else "") + f"ok on attempt {r.attempts}"
        t.add_row(r.device, r.transport, r.bundle,
                  "[green]ok[/]" if r.status == "ok" else f"[red]failed[/] ({r.kind})",
                  fmt(s.get("p50_ms"), ".3f"), fmt(s.get("p95_ms"), ".3f"), fmt(s.get("accuracy"), ".4f"),
                  yes_no[s.get("self_check")], yes_no[s.get("robustness")], note or "")
    return t
