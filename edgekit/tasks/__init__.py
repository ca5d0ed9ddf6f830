"""What a model is FOR: one module per task behind one protocol (base.Task), like the backends.

A task decides which validation data a conversion needs (labels or not), which quality figures the
dev machine and the harness compute, which budgets apply, and what the gate reads. Adding a task is
one module and one line in TASKS.
"""

from __future__ import annotations

from ..errors import ConfigError
from .base import Task
from .classification import Classification
from .feature_extraction import FeatureExtraction
from .text_generation import TextGeneration

TASKS: dict[str, Task] = {t.name: t for t in (Classification(), FeatureExtraction(), TextGeneration())}


def get_task(name: str | None) -> Task:
    """The task by name; None (reports and bundles written before tasks existed) = classification."""
    key = name or "classification"
    if key not in TASKS:
        raise ConfigError(f"task {key!r} is not valid; expected one of {', '.join(TASKS)}")
    return TASKS[key]


def task_budgets() -> tuple[str, ...]:
    """Budgets that only some tasks read (the gate checks each where the report's task has it)."""
    return tuple(b for t in TASKS.values() for b in t.budgets)


__all__ = ["Task", "TASKS", "get_task", "task_budgets"]
