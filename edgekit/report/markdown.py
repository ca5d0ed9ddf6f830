"""A gate result as GitHub-flavoured Markdown (a PR comment or $GITHUB_STEP_SUMMARY)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from ..checks import GateResult

VERDICT = {"pass": "✅ PASS", "fail": "❌ FAIL", "inconclusive": "❔ INCONCLUSIVE"}
STATUS = {"pass": "✅ pass", "fail": "❌ fail", "warn": "⚠️ warn", "skip": "⏭️ skip", "inconclusive": "❔ inconclusive"}


def _cell(text: Any) -> str:
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def environment_line(report: dict[str, Any]) -> str:
    """One line: CPU model, runtime and version, threads, and whether figures are stand-in/emulated."""
    env = report.get("environment", {})
    rt = env.get("runtime") or {}
    parts = [f"`{_cell(env.get('cpu_model') or 'unknown CPU')}`",
             " ".join(str(x) for x in (rt.get("name"), rt.get("version")) if x) or "unknown runtime",
             f"{env.get('threads') if env.get('threads') is not None else '?'} threads"]
    device = env.get("actual_device")
    if device:
        parts.append(f"device {device}")
    if env.get("stand_in"):
        parts.append(f"**stand-in** for {env.get('requested_device') or '?'}")
    if env.get("emulated"):
        parts.append("**emulated**")
    return "Environment: " + " · ".join(parts)


def to_markdown(result: "GateResult") -> str:
    from ..checks import format_value, verdict_of

    counts = result.counts()
    summary = ", ".join(f"{n} {s}" for s, n in (("passed", counts["pass"]), ("failed", counts["fail"]),
                                                ("warnings", counts["warn"]), ("skipped", counts["skip"]),
                                                ("inconclusive", counts.get("inconclusive", 0))) if n)
    lines = [f"## {VERDICT[result.verdict]} edgekit gate", "",
             f"{len(result.reports)} report(s): {summary or 'no checks'}.", ""]
    for i, report in enumerate(result.reports):
        checks = result.checks_for(i)
        target = report.get("target", {}).get("name", "?")
        bundle = report.get("bundle", {}).get("name", "?")
        verdict = verdict_of(checks)
        lines += [f"### {VERDICT[verdict]} `{_cell(bundle)}` on target `{_cell(target)}`", "",
                  environment_line(report), "",
                  "| budget | limit | measured | statistic | status |",
                  "|---|---:|---:|---|---|"]
        for c in checks:
            lines.append(f"| {_cell(c.budget)} | {_cell(format_value(c, 'limit'))} | "
                         f"{_cell(format_value(c))} | {_cell(c.statistic)} | {STATUS[c.status]} |")
        notes = [c for c in checks if c.detail]
        if notes:
            lines.append("")
            lines += [f"- **{_cell(c.budget)}** ({c.status}): {_cell(c.detail)}" for c in notes]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
