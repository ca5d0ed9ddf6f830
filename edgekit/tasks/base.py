"""The task protocol. Each task turns model outputs into quality figures, on the dev machine and
(through harness/_ek_metrics.py, numpy only) on the device, in the same way.

    check(handle, outputs, datasets)   refuse data the model cannot be judged on, before any export
    source_quality(outputs, labels)    the source's own figures on the validation set
    quality(outputs, source, labels)   an artifact's figures against the source's outputs
    score(quality) -> float            the headline figure (top-1; mean cosine), shown and recorded
    margin(quality, target) -> float   what accuracy control keeps, higher is better, and the
    source_margin(quality, target)       source's; an artifact is within budget when its margin is
    max_drop(target) -> float | None     at most max_drop below the source's (None: no budget)
    rules                              budget -> gate rule, for the budgets only this task has
"""

from __future__ import annotations

from typing import Any, Callable, ClassVar, Protocol

import numpy as np


class Task(Protocol):
    name: ClassVar[str]
    needs_labels: ClassVar[bool]
    metric: ClassVar[str]                     # the validation metric recorded in the manifest
    budgets: ClassVar[tuple[str, ...]]        # budgets only this task reads (see rules)
    not_judged: ClassVar[tuple[str, ...]]     # shared budgets that do not apply to this task

    def check(self, handle, outputs: list[np.ndarray], datasets: list) -> None: ...

    def source_quality(self, outputs: np.ndarray, labels: np.ndarray | None) -> dict[str, Any]: ...

    def quality(self, outputs: np.ndarray, source: np.ndarray, labels: np.ndarray | None) -> dict[str, Any]: ...

    def score(self, quality: dict[str, Any]) -> float: ...

    def source_score(self, source_quality: dict[str, Any]) -> float: ...

    def margin(self, quality: dict[str, Any], target) -> float: ...

    def source_margin(self, source_quality: dict[str, Any], target) -> float: ...

    def max_drop(self, target) -> float | None: ...

    def rules(self) -> dict[str, Callable[[dict[str, Any], float], tuple[Any, str, str, str]]]: ...
