"""Decide a release from device reports: one Check per budget, a verdict, and an exit code CI trusts.

Rules (docs/HARNESS_SPEC.md, "Deciding (the gate)"; budgets in docs/FORMATS.md):

* A budget left out of the profile (absent or null in ``target.budget``) is not checked.
* ``latency_p95_ms`` is met when the 95% one-sided upper confidence bound of p95, taken over the
  pooled timed samples of all trials, is within it -- not when the point estimate is. The bound is a
  binomial order statistic (distribution-free): the smallest k with P(Binomial(n, 0.95) <= k-1) >= 0.95,
  value = sorted(samples)[k-1]. With fewer than 59 samples no order statistic reaches 95% confidence;
  k is then capped at n (the maximum) and the detail says the bound is not attained. A report without
  samples is judged on its p95 point estimate, and the detail says so.
* Latency measured under emulation never gates a budget: status "skip".
* ``peak_memory_mb`` is the absolute peak RSS, max over trials; ``load_time_ms`` the max load time
  over trials; ``model_size_mb`` the artifact on disk; ``max_accuracy_drop`` the absolute top-1 drop.
* ``max_class_accuracy_drop`` (in the profile schema, not yet in FORMATS.md) reads
  ``accuracy.max_class_drop``; a missing accuracy figure is "skip", with the reason in the detail.
* A set budget whose figure the report lacks (nothing was timed) fails: it cannot be shown to be met.
* Always: the on-device self-check must have passed and the bundle's files must match its manifest.
* Figures from a stand-in device (the requested device is absent): a latency, memory or load check
  that would pass becomes "warn" (profile ``stand_in = "warn"``, the default) or "fail" (``"fail"``).
* Any "fail" makes the verdict "fail" and the exit code 1; otherwise any "inconclusive" makes it
  "inconclusive" and the exit code 3 (CI must not read it as a pass: rerun as the detail says);
  otherwise "pass" and 0. Exit code 2 stays "bad input" (the CLI's EdgekitError).

Regressions against a baseline (``gate(reports, baseline=...)``, edgekit/regression.py; docs/TRUST.md), one report of the
same target and bundle name per report (else ReportError):
* ``latency_regression``: per-trial medians (iterations are autocorrelated), at least 6 trials per
  side, else "inconclusive" saying what to rerun. Threshold t = 1 + max(3%, 2 x CV), CV the larger
  coefficient of variation (sample std / mean) of the two sides' trial medians. Regression ("fail")
  when a one-sided Mann-Whitney U test (candidate slower) gives p < 0.01 AND the 95% bootstrap CI of
  median(candidate) / median(baseline) lies entirely above t; "pass" when the CI lies entirely at or
  below t; anything else (the CI straddles t, or the CI and the test disagree) is "inconclusive",
  never "pass". Both sides must come from the same machine and CPU model, else "inconclusive".
  Emulated figures: "skip". The bootstrap uses a fixed seed: the same reports give the same verdict.
* ``memory_regression``: peak RSS (max over trials) over the baseline's by more than
  max(5%, 4 MiB) fails.
* ``size_regression``: model size over the baseline's by more than max(5%, 64 KiB) fails.
scipy and numpy are imported only when a baseline is given.

A gate policy (``gate(reports, policy=...)``, edgekit/trust/policy.py) adds licence and provenance
checks per report.

Trusted reports (edgekit/trust/attest.py, docs/TRUST.md): ``bundles=`` ties each report to a bundle
folder by content hash; ``device_pubkeys=`` requires each report (and baseline) to carry a signature
made on the device. A report that fails either is refused with ReportError (exit 2), not judged;
passing adds a ``bundle_match`` / ``report_signature`` row.

Imports point down: gate -> regression, trust.policy, trust.attest, report.load -> checks (Check,
GateResult and the shared helpers), and nothing below imports this module.

Comparisons allow float noise: a value within 1e-9 (relative) of its limit meets it.
Stdlib only without a baseline; ``rich`` is imported inside `render_table`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

# Check, GateResult and the shared helpers live below this module (edgekit/checks.py) so that
# regression.py and trust/policy.py need not import the gate; re-exported here for callers.
from .checks import (ABS_TOL, REL_TOL, STATUSES, UNITS, VERDICTS, Check, GateResult,  # noqa: F401
                     fmt as _fmt, format_value, quantile_ucb, ucb_attained, ucb_rank, verdict_of,
                     within as _within)
from .errors import ConfigError
from .report.load import load_report, validate_report
from .tasks import get_task, task_budgets

EXIT_CODES = {"pass": 0, "fail": 1, "inconclusive": 3}   # 2: bad input (EdgekitError, in the CLI)
BUDGETS = ("latency_p95_ms", "peak_memory_mb", "model_size_mb", "max_accuracy_drop",
           "max_class_accuracy_drop", "load_time_ms")
# Judged where the artifact is made (edgekit package), not from a device's report.
PACKAGE_BUDGETS = ("max_image_mb",)
STAND_IN_MODES = ("warn", "fail")
# Budgets whose figures depend on the device that ran them (turned to warn/fail on a stand-in).
DEVICE_BUDGETS = ("latency_p95_ms", "peak_memory_mb", "load_time_ms")


# ---------------------------------------------------------------- budgets

def _budgets(report: dict[str, Any], name: str) -> tuple[dict[str, float], str]:
    """The budgets set in the report's target (None = not checked) and its stand_in mode."""
    target = report["target"]
    raw = target.get("budget") or {}
    out: dict[str, float] = {}
    for key, value in raw.items():
        if key not in BUDGETS + task_budgets() + PACKAGE_BUDGETS:
            raise ConfigError(f"{name}: unknown key 'target.budget.{key}'; valid keys: "
                              f"{', '.join(BUDGETS + task_budgets() + PACKAGE_BUDGETS)}")
        if key in PACKAGE_BUDGETS:
            continue
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ConfigError(f"{name}: target.budget.{key} = {value!r}; expected a finite number >= 0")
        out[key] = float(value)
    mode = target.get("stand_in") or "warn"
    if mode not in STAND_IN_MODES:
        raise ConfigError(f"{name}: target.stand_in = {mode!r}; expected one of {', '.join(STAND_IN_MODES)}")
    return out, mode


NOT_MEASURED = "{} was not measured (nothing timed: see self_check and status); a set budget needs a figure"


def _judge(value: float | None, limit: float) -> str:
    return "pass" if value is not None and _within(value, limit) else "fail"


def _measured(value: float | None, limit: float, statistic: str, what: str) -> tuple[Any, str, str, str]:
    if value is None:
        return None, statistic, "fail", NOT_MEASURED.format(what)
    return float(value), statistic, _judge(float(value), limit), ""


def _latency(report: dict[str, Any], limit: float) -> tuple[float | None, str, str, str]:
    lat = report["latency"]
    samples = [s for trial in lat.get("samples_ms") or [] for s in trial]
    if samples:
        value, k, n = quantile_ucb(samples)
        p95 = f"; p95 = {_fmt(lat['p95'])} ms" if lat.get("p95") is not None else ""
        statistic = f"p95 95% UCB (sorted[{k}-1] of n={n}{p95})"
        detail = ""
        if not ucb_attained(n):
            detail = f"only {n} samples: the max is used and is not a 95% bound (need >= 59)"
    elif lat.get("p95") is not None:
        value, statistic = float(lat["p95"]), "p95 (point estimate)"
        detail = "no latency.samples_ms in the report: judged on the p95 point estimate, not its 95% bound"
    else:
        value, statistic, detail = None, "p95 95% UCB", NOT_MEASURED.format("latency")
    status = _judge(value, limit)
    if status == "fail" and samples and lat.get("p95") is not None and _within(float(lat["p95"]), limit):
        detail = (f"p95 = {_fmt(lat['p95'])} ms is within {_fmt(limit)} ms, but its 95% upper bound "
                  f"{_fmt(value)} ms is not: too few runs or a slow tail" + (f"; {detail}" if detail else ""))
    if report["environment"]["emulated"]:
        status, detail = "skip", "emulated: latency never gates a budget"
    return value, statistic, status, detail


def _accuracy(report: dict[str, Any], limit: float, key: str = "drop") -> tuple[Any, str, str, str]:
    acc = report.get("accuracy")
    if not acc:
        return None, "top-1 drop", "skip", "no accuracy in the report (the bundle has no validation set)"
    if acc.get("value") is None:  # the harness ran with --skip-accuracy, or the bundle has no validation set
        return None, "top-1 drop", "skip", f"accuracy not measured ({acc.get('reason') or 'accuracy.value is null'})"
    if key == "max_class_drop":
        drop, statistic = acc.get("max_class_drop"), "largest per-class top-1 drop"
    else:
        drop, statistic = acc.get("drop"), f"{acc.get('metric', 'top1')} drop vs source"
        if drop is None and acc.get("source_value") is not None:
            drop = acc["source_value"] - acc["value"]
    if drop is None:
        return None, statistic, "skip", f"accuracy.{key} not in the report (source accuracy unknown)"
    if acc.get("source_value") is not None:
        statistic += f" ({_fmt(acc['source_value'])} -> {_fmt(acc['value'])})"
    return float(drop), statistic, _judge(float(drop), limit), ""


# budget -> (report) -> (value, statistic, status, detail)
_RULES: dict[str, Callable[[dict[str, Any], float], tuple[Any, str, str, str]]] = {
    "latency_p95_ms": _latency,
    "peak_memory_mb": lambda r, lim: _measured(r["memory"]["peak_rss_mb"], lim, "peak RSS, max over trials",
                                               "peak memory"),
    "model_size_mb": lambda r, lim: _measured(r["model_size_mb"], lim, "model file(s) on disk", "model size"),
    "max_accuracy_drop": _accuracy,
    "max_class_accuracy_drop": lambda r, lim: _accuracy(r, lim, "max_class_drop"),
    "load_time_ms": lambda r, lim: _measured(max(r["cold_start"]["load_ms"], default=None), lim,
                                             "load, max over trials", "load time"),
}


def _off_target(report: dict[str, Any]) -> str:
    """Why the measuring machine is not the target's hardware ("" when it is): the requested device
    was absent, the architecture differs, or the CPU lacks an instruction-set feature the profile
    names (e.g. an x86-vnni bundle measured on a CPU without VNNI: its int8 kernels differ)."""
    env, target = report["environment"], report["target"]
    if env["stand_in"]:
        return (f"measured on stand-in device {env.get('actual_device') or '?'}, not "
                f"{env.get('requested_device') or target.get('device') or '?'} (requested device absent)")
    arch, machine = target.get("arch"), env.get("machine")
    aliases = {"arm64": "aarch64", "amd64": "x86_64"}
    if arch and machine and aliases.get(machine.lower(), machine.lower()) != arch:
        return f"measured on {machine}, not the target's {arch}"
    flags = env.get("cpu_flags")
    if flags is not None:
        missing = [i for i in target.get("isa") or [] if i not in flags]
        if missing:
            return f"measured on a CPU without the target's {', '.join(missing)}"
    return ""


def _report_checks(report: dict[str, Any], name: str, index: int) -> list[Check]:
    budgets, stand_in_mode = _budgets(report, name)
    target, bundle = report["target"]["name"], report["bundle"]["name"]
    env = report["environment"]

    def check(budget: str, limit: float | None, value: Any, statistic: str, status: str, detail: str = "") -> Check:
        return Check(target, bundle, budget, limit, value, statistic, status, detail, index)

    checks: list[Check] = []
    if report["status"] != "ok":
        checks.append(check("status", None, report["status"], "harness status", "fail",
                            f"the harness reported status {report['status']!r}, not 'ok'"))
    sc = report["self_check"]
    checks.append(check("self_check", None, sc["passed"], "outputs vs dev machine",
                        "pass" if sc["passed"] else "fail",
                        "" if sc["passed"] else "on-device outputs differ from the dev machine's"
                        + (f" (max_abs_diff = {_fmt(sc['max_abs_diff'])})" if sc.get("max_abs_diff") is not None else "")))
    ok = report["bundle"]["integrity"]["verified"]
    checks.append(check("integrity", None, ok, "sha256 vs manifest", "pass" if ok else "fail",
                        "" if ok else "bundle files do not match manifest.json"))
    if report["target"].get("require_robustness"):
        rob = report.get("robustness") or {}
        ok = rob.get("passed") is True
        bad = [c.get("case") or c.get("name") for c in rob.get("cases", []) if isinstance(c, dict)
               and c.get("status") not in (None, "ok")]
        checks.append(check("robustness", None, ok, "edge-case inputs, noise", "pass" if ok else "fail",
                            "" if ok else ("no robustness section in the report (harness run with --skip-robustness?)"
                                           if not rob else f"failing cases: {', '.join(map(str, bad)) or 'see report'}")))
    off_target = _off_target(report)
    if off_target:
        checks.append(check("hardware", None, env.get("cpu_model") or env.get("machine"), "measured on",
                            stand_in_mode, off_target + ": device figures are not the target's"))
    # The report's task adds its own budgets (feature extraction: cosine, recall@10); a profile shared
    # by tasks may set them all, and each report is judged on the ones its task has.
    task = get_task(report["bundle"].get("task"))
    rules = {**_RULES, **task.rules()}
    for budget in BUDGETS + task.budgets:
        if budget not in budgets or budget in task.not_judged:
            continue
        limit = budgets[budget]
        value, statistic, status, detail = rules[budget](report, limit)
        if budget == "load_time_ms" and env["emulated"]:
            # a timing like latency: under emulation it is the emulator's, not the device's
            status, detail = "skip", "emulated: load time never gates a budget"
        if off_target and budget in DEVICE_BUDGETS and status == "pass":
            status = stand_in_mode
            detail = off_target + (f"; {detail}" if detail else "")
        checks.append(check(budget, limit, value, statistic, status, detail))
    return checks


def _load(item: str | Path | dict[str, Any], name: str) -> dict[str, Any]:
    return validate_report(item, name) if isinstance(item, dict) else load_report(item)


def _as_list(x: Any) -> list[Any]:
    return list(x) if isinstance(x, (list, tuple)) else [x]


def gate(reports: list[str | Path | dict[str, Any]],
         baseline: str | Path | dict[str, Any] | list[str | Path | dict[str, Any]] | None = None,
         policy: Any = None, bundles: str | Path | list[str | Path] | None = None,
         device_pubkeys: str | Path | list[str | Path] | None = None) -> GateResult:
    """Judge every report against its own target's budgets. Paths are loaded with `load_report`
    (ReportError if not a report); dicts are validated the same way. ConfigError for a bad budget.

    baseline: one report or a list (one per report gated, matched on target and bundle name) to
    check for latency, memory and size regressions. policy: a path to a policy TOML or a loaded
    `edgekit.trust.policy.Policy` (licence allow-list, known provenance).
    bundles: bundle folder(s) the reports must have measured (content hash; matched on bundle name).
    device_pubkeys: device public key(s); every report, and every baseline, must be signed on the
    device with one of them (harness --sign-key). Both refuse with ReportError, before any budget
    is judged (edgekit/trust/attest.py)."""
    if not reports:
        raise ConfigError("no reports to gate: pass one or more report.json files")
    loaded: list[dict[str, Any]] = []
    sources: list[str] = []
    checks: list[Check] = []
    for i, item in enumerate(reports):
        name = f"report[{i}]" if isinstance(item, dict) else str(item)
        loaded.append(_load(item, name))
        sources.append(name)
    b_loaded: list[dict[str, Any]] = []
    b_names: list[str] = []
    if baseline is not None:
        items = _as_list(baseline)
        if not items:
            raise ConfigError("baseline is an empty list: pass one baseline report per report gated")
        b_names = [f"baseline[{j}]" if isinstance(b, dict) else str(b) for j, b in enumerate(items)]
        b_loaded = [_load(b, n) for b, n in zip(items, b_names)]
    # Trust before figures: a report that is not what it claims (another bundle, not signed by the
    # device, edited) is refused (exit 2), never judged.
    if device_pubkeys is not None:
        from .trust.attest import load_device_keys, signature_checks
        keys = load_device_keys(_as_list(device_pubkeys))
        checks += signature_checks(loaded, sources, keys)
        # a forged baseline could hide a regression as surely as a forged report could hide a slow build
        signature_checks(b_loaded, b_names, keys, rows=False)
    if bundles is not None:
        from .trust.attest import bundle_checks
        checks += bundle_checks(loaded, sources, _as_list(bundles))
    for i, (report, name) in enumerate(zip(loaded, sources)):
        checks += _report_checks(report, name, i)
    base_reports: list[dict[str, Any] | None] = [None] * len(loaded)
    base_sources: list[str | None] = [None] * len(loaded)
    if baseline is not None:
        from .regression import match_baselines, regression_checks
        for i, j in enumerate(match_baselines(loaded, sources, b_loaded, b_names)):
            base_reports[i], base_sources[i] = b_loaded[j], b_names[j]
            checks += regression_checks(loaded[i], b_loaded[j], i)
    if policy is not None:
        from .trust.policy import load_policy
        pol = load_policy(policy)
        for i, report in enumerate(loaded):
            checks += pol.checks(report, sources[i], i)
    verdict = verdict_of(checks)
    return GateResult(loaded, checks, verdict, EXIT_CODES[verdict], sources, base_reports, base_sources)


# ---------------------------------------------------------------- rendering

STATUS_STYLE = {"pass": "green", "fail": "bold red", "warn": "yellow", "skip": "dim",
                "inconclusive": "bold magenta"}


def render_table(result: GateResult):
    """A rich Table, one row per check (import rich only here: the gate itself is stdlib)."""
    from rich.table import Table

    table = Table(title=f"edgekit gate: {result.verdict.upper()}", title_style=STATUS_STYLE[result.verdict])
    for col in ("target / bundle", "budget", "limit", "value", "status", "detail"):
        table.add_column(col, justify="right" if col in ("limit", "value") else "left",
                         overflow="fold" if col == "detail" else "ellipsis")
    for c in result.checks:
        style = STATUS_STYLE[c.status]
        table.add_row(f"{c.target} / {c.bundle}", c.budget, format_value(c, "limit"), format_value(c),
                      f"[{style}]{c.status.upper()}[/{style}]", c.detail)
    return table
