"""Read a report.json written by the harness and check it against report.schema.json.

The schema uses a small subset of JSON Schema (type, required, properties, items, enum, minimum,
maximum, minItems), validated here by hand so edgekit needs no jsonschema. Every problem is a
ReportError whose one-line message names the file and the key, e.g.
``report.json: not an edgekit report (missing key 'latency')``.

Figures must be numbers one can trust: NaN and +/-Infinity are refused anywhere in a report (they are
not JSON, RFC 8259, though Python's json module reads them; the harness writes null instead), and
every measured figure -- latencies, memory, sizes, load times, counts -- must be >= 0 (accuracies and
agreements lie in [0, 1]), as report.schema.json declares with minimum / maximum:
``r.json: latency.p95 is -3.0; must be >= 0``. tests/test_report.py checks that the schema and this
loader refuse the same reports.
"""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path
from typing import Any

from ..errors import ReportError

SCHEMA = "edgekit.report/1"
SCHEMA_FILE = Path(__file__).with_name("report.schema.json")

_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,), "array": (list,), "string": (str,), "boolean": (bool,),
    "integer": (int,), "number": (int, float), "null": (type(None),),
}


@functools.lru_cache(maxsize=1)
def report_schema() -> dict[str, Any]:
    """The JSON Schema of report.json (a copy is not needed: callers must not mutate it)."""
    return json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))


def _is(value: Any, name: str) -> bool:
    # JSON true/false are not numbers, even though bool is an int to Python.
    if isinstance(value, bool) and name not in ("boolean",):
        return False
    # A JSON number is finite (RFC 8259); NaN would also slip through every minimum (NaN < 0 is False).
    if isinstance(value, float) and not math.isfinite(value):
        return False
    return isinstance(value, _TYPES[name])


class _Constant:
    """What json.loads's parse_constant makes of a NaN / Infinity / -Infinity literal: kept as a
    marker so that `_nonfinite` can name the key it sits at (parse_constant itself is not told)."""

    def __init__(self, literal: str) -> None:
        self.literal = literal


def _path(where: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{where}[{key}]"
    return f"{where}.{key}" if where else key


def _nonfinite(value: Any, where: str = "") -> tuple[str, str] | None:
    """(key path, literal) of the first NaN / Infinity in `value`, depth first, or None."""
    if isinstance(value, _Constant):
        return where, value.literal
    if isinstance(value, float) and not math.isfinite(value):
        return where, "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return None
    for key, sub in items:
        found = _nonfinite(sub, _path(where, key))
        if found:
            return found
    return None


def _short(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, (dict, list)) else type(value).__name__
    return text if len(text) <= 40 else text[:37] + "..."


def _check(value: Any, schema: dict[str, Any], where: str) -> str | None:
    """The first schema violation in `value` as a phrase, or None."""
    types = schema.get("type")
    if types is not None:
        types = [types] if isinstance(types, str) else types
        if not any(_is(value, t) for t in types):
            return f"{where or 'the file'} is {_short(value)}; expected {' or '.join(types)}"
    if "enum" in schema and value not in schema["enum"]:
        return f"{where} is {_short(value)}; expected one of {', '.join(map(json.dumps, schema['enum']))}"
    if "minimum" in schema and _is(value, "number") and value < schema["minimum"]:
        return f"{where} is {value!r}; must be >= {schema['minimum']}"
    if "maximum" in schema and _is(value, "number") and value > schema["maximum"]:
        return f"{where} is {value!r}; must be <= {schema['maximum']}"
    if isinstance(value, dict):
        for key in schema.get("required", ()):
            if key not in value:
                return f"missing key '{where + '.' if where else ''}{key}'"
        for key, sub in schema.get("properties", {}).items():
            if key in value:
                problem = _check(value[key], sub, f"{where}.{key}" if where else key)
                if problem:
                    return problem
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            return f"{where} has {len(value)} items; expected at least {schema['minItems']}"
        if "items" in schema:
            for i, item in enumerate(value):
                problem = _check(item, schema["items"], f"{where}[{i}]")
                if problem:
                    return problem
    return None


def validate_report(data: Any, name: str = "report.json") -> dict[str, Any]:
    """Check a parsed report; return it unchanged, or raise ReportError naming `name`."""
    if not isinstance(data, dict):
        raise ReportError(f"{name}: not an edgekit report (a JSON {type(data).__name__}, expected an object)")
    if data.get("schema") != SCHEMA:
        found = f"schema is {_short(data['schema'])}" if "schema" in data else "missing key 'schema'"
        raise ReportError(f"{name}: not an edgekit report ({found}; expected {SCHEMA!r})")
    found = _nonfinite(data)
    if found:
        where, literal = found
        raise ReportError(f"{name}: {where} is {literal}; must be a finite number (NaN and Infinity are not "
                          "JSON: the harness writes null for a figure it could not measure)")
    problem = _check(data, report_schema(), "")
    if problem:
        if "; must be " in problem:  # a number out of range: the report is well formed, the figure is not
            raise ReportError(f"{name}: {problem}")
        raise ReportError(f"{name}: not an edgekit report ({problem})")
    return data


def load_report(path: str | Path) -> dict[str, Any]:
    """Read and validate one report.json; ReportError if it is not an edgekit report."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ReportError(f"{p}: no such report file (expected a report.json written by the harness)") from exc
    except IsADirectoryError as exc:
        raise ReportError(f"{p}: is a folder; expected a report.json file") from exc
    except UnicodeDecodeError as exc:
        raise ReportError(f"{p}: not JSON (not UTF-8 text at byte {exc.start})") from exc
    except OSError as exc:
        raise ReportError(f"{p}: cannot read ({exc.strerror})") from exc
    if not text.strip():
        raise ReportError(f"{p}: not JSON (the file is empty)")
    try:
        # parse_constant: json.loads would otherwise turn NaN / Infinity literals into floats silently;
        # the marker lets validate_report name the key. (1e999 overflows to inf: caught there too.)
        data = json.loads(text, parse_constant=_Constant)
    except json.JSONDecodeError as exc:
        hint = "; truncated?" if exc.pos >= len(text.rstrip()) else ""
        raise ReportError(f"{p}: not JSON ({exc.msg} at line {exc.lineno} column {exc.colno}{hint})") from exc
    return validate_report(data, str(p))
