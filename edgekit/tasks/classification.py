"""Classification: class scores (N x classes) and labels; quality is top-1 accuracy."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..data import check_labels
from ..errors import DataError, SourceError
from ..parity import accuracy, per_class_accuracy


class Classification:
    name = "classification"
    needs_labels = True
    metric = "top1"
    budgets: tuple[str, ...] = ()  # the shared ones: max_accuracy_drop, max_class_accuracy_drop
    not_judged: tuple[str, ...] = ()

    def check(self, handle, outputs, datasets) -> None:
        n = output_classes(handle, outputs)
        for data in datasets:
            if data.role == "validation" and data.labels is None:
                raise DataError(f"{data.path}: the validation set has no labels; accuracy needs them "
                                "('labels' array in .npz, 'label' in JSONL, class folders for images)")
            check_labels(data, n)

    def check_outputs(self, handle, outputs: np.ndarray, data) -> None:
        pass  # any finite or not, class scores are judged by their argmax

    def source_quality(self, outputs, labels) -> dict[str, Any]:
        return {"metric": "top1", "value": accuracy(outputs, labels), "per_class": per_class_accuracy(outputs, labels)}

    def quality(self, outputs, source, labels) -> dict[str, Any]:
        return self.source_quality(outputs, labels)

    def score(self, quality) -> float:
        return quality["value"]

    def source_score(self, source_quality) -> float:
        return source_quality["value"]

    def margin(self, quality, target) -> float:
        return quality["value"]

    def source_margin(self, source_quality, target) -> float:
        return source_quality["value"]

    def max_drop(self, target) -> float | None:
        return target.budget.max_accuracy_drop

    def rules(self) -> dict:
        return {}


def output_classes(handle, outputs: list[np.ndarray]) -> int:
    """How many classes the source can emit: the last dimension of its first output (the logits
    accuracy takes the argmax of), which a Hugging Face config's num_labels must agree with."""
    logits = outputs[0]
    if logits.ndim < 2 or logits.shape[-1] < 1:
        raise SourceError(f"{handle.spec}: the source's output {handle.outputs[0]!r} has per-sample shape "
                          f"{'x'.join(map(str, logits.shape[1:])) or 'scalar'}; top-1 accuracy needs class "
                          "scores (N x classes)")
    n = int(logits.shape[-1])
    declared = handle.metadata.get("num_labels")
    if declared is not None and declared != n:
        raise SourceError(f"{handle.spec}: config.json says num_labels = {declared}, the model emits {n} class scores")
    return n
