"""A gate result as JUnit XML: one <testsuite> per report, one <testcase> per check.

fail -> <failure>, inconclusive -> <failure type="Inconclusive"> (never a pass: rerun as the message
says), skip -> <skipped>, warn -> a passing test whose <system-out> says why.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from ..checks import Check, GateResult


def _message(check: "Check") -> str:
    from ..checks import format_value

    head = f"{check.budget}: {format_value(check)}"
    if check.limit is not None:
        head += f" (limit {format_value(check, 'limit')}, {check.statistic})"
    return f"{head}: {check.detail}" if check.detail else head


def to_junit(result: "GateResult") -> str:
    root = ET.Element("testsuites", name="edgekit gate")
    totals = {"tests": 0, "failures": 0, "skipped": 0}
    for i, report in enumerate(result.reports):
        checks = result.checks_for(i)
        target = report.get("target", {}).get("name", "unknown")
        env = report.get("environment", {})
        counts = {"tests": len(checks), "failures": sum(c.status in ("fail", "inconclusive") for c in checks),
                  "skipped": sum(c.status == "skip" for c in checks)}
        suite = ET.SubElement(root, "testsuite", name=report.get("bundle", {}).get("name", f"report[{i}]"),
                              errors="0", time="0", **{k: str(v) for k, v in counts.items()})
        props = ET.SubElement(suite, "properties")
        runtime = env.get("runtime") or {}
        for key, value in (("target", target), ("source", result.sources[i] if i < len(result.sources) else ""),
                           ("cpu_model", env.get("cpu_model")), ("runtime", runtime.get("name")),
                           ("runtime_version", runtime.get("version")), ("threads", env.get("threads")),
                           ("stand_in", env.get("stand_in")), ("emulated", env.get("emulated"))):
            if value is not None and value != "":
                ET.SubElement(props, "property", name=key,
                              value=str(value).lower() if isinstance(value, bool) else str(value))
        for c in checks:
            case = ET.SubElement(suite, "testcase", classname=f"edgekit.{c.target}", name=c.budget, time="0")
            if c.status == "fail":
                ET.SubElement(case, "failure", message=_message(c), type="BudgetExceeded").text = _message(c)
            elif c.status == "inconclusive":
                ET.SubElement(case, "failure", message=_message(c), type="Inconclusive").text = _message(c)
            elif c.status == "skip":
                ET.SubElement(case, "skipped", message=_message(c))
            elif c.status == "warn":
                ET.SubElement(case, "system-out").text = f"WARNING {_message(c)}"
        for k in totals:
            totals[k] += counts[k]
    root.set("errors", "0")
    for k, v in totals.items():
        root.set(k, str(v))
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
