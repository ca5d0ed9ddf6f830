"""report.json: loading and validation (load), and renderings of a gate result (markdown, junit)."""

from __future__ import annotations

from .junit import to_junit
from .load import SCHEMA, load_report, report_schema, validate_report
from .markdown import to_markdown

__all__ = ["SCHEMA", "load_report", "report_schema", "validate_report", "to_markdown", "to_junit"]
