"""Read a report.json written by the harness and check it against report.schema.json.

The schema uses a small subset of JSON Schema (type, required, properties, items, enum, minimum,
minItems), validated here by hand so edgekit needs no jsonschema. Every problem is a ReportError whose
one-line message names the file and the key, e.g.
``report.json: not an edgekit report (missing key 'latency')``.
"""

from __future__ import annotations

import functools
import json
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
    return isinstance(value, _TYPES[name])


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
        return f"{where} = {value!r}; expected >= {schema['minimum']}"
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
    problem = _check(data, report_schema(), "")
    if problem:
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
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        hint = "; truncated?" if exc.pos >= len(text.rstrip()) else ""
        raise ReportError(f"{p}: not JSON ({exc.msg} at line {exc.lineno} column {exc.colno}{hint})") from exc
    return validate_report(data, str(p))
