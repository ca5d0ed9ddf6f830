"""Feature extraction: one embedding per item (N x D); quality is the geometry the embeddings keep.

The figures (harness/_ek_metrics.py, the same code on the device) compare an artifact's embeddings
with the source's on the validation set: mean and 5th-percentile cosine similarity, recall@1/@10 of
each item's nearest neighbours, and a leave-one-out 1-NN top-1 where the data carries labels.
Accuracy control keeps every floor the profile sets (min_cosine_similarity on the mean cosine,
min_recall_at_10): its margin is the smallest of (figure - floor) / (1 - floor), 1 for the source
itself and >= 0 exactly when every floor is met (so max_drop is 1).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..checks import fmt, within
from ..errors import DataError, SourceError
from ..harness._ek_metrics import RECALL_KS, embedding_quality, knn_top1

# recall@10 needs each query's 10 nearest others: at least 11 validation items.
MIN_VALIDATION = max(RECALL_KS) + 1


class FeatureExtraction:
    name = "feature-extraction"
    needs_labels = False
    metric = "embedding"
    budgets = ("min_cosine_similarity", "min_recall_at_10")
    # The shared top-1 budgets are for class scores: k-NN top-1 is reported, not gated (on a few
    # hundred items one flipped neighbour moves it by 0.005, and the geometry budgets say more).
    not_judged = ("max_accuracy_drop", "max_class_accuracy_drop")

    def check(self, handle, outputs, datasets) -> None:
        for data in datasets:
            if data.role == "validation" and len(data) < MIN_VALIDATION:
                raise DataError(f"{data.path}: {len(data)} validation items; recall@{max(RECALL_KS)} needs at "
                                f"least {MIN_VALIDATION} (each query's {max(RECALL_KS)} nearest among the others)")
            if data.labels is not None and len(data.labels) and int(np.min(data.labels)) < 0:
                raise DataError(f"{data.path}: {data.role} label {int(np.min(data.labels))} is negative; "
                                "labels of a feature-extraction set are class ids >= 0 (used for k-NN top-1)")

    def check_outputs(self, handle, outputs: np.ndarray, data) -> None:
        if outputs.ndim != 2:
            raise SourceError(f"{handle.spec}: the source's output {handle.outputs[0]!r} has per-sample shape "
                              f"{'x'.join(map(str, outputs.shape[1:])) or 'scalar'}; a feature extractor emits "
                              "one embedding vector per item (N x D): pool or flatten it in the model")
        bad = ~np.isfinite(outputs).all(axis=1)
        if bad.any():
            raise SourceError(f"{handle.spec}: the source's embeddings hold NaN/Inf for {int(bad.sum())} of "
                              f"{len(outputs)} {data.role} items ({data.path}, first at item "
                              f"{int(np.flatnonzero(bad)[0])}); nothing to compare an artifact with")
        if not np.linalg.norm(outputs, axis=1).all():
            raise SourceError(f"{handle.spec}: the source gives an all-zero embedding for a {data.role} item "
                              f"({data.path}); cosine similarity is undefined for it")

    def source_quality(self, outputs, labels) -> dict[str, Any]:
        q: dict[str, Any] = {"metric": "embedding", "n": int(len(outputs)), "dim": int(outputs.shape[1])}
        if labels is not None:
            q["knn_top1"] = knn_top1(outputs, labels)
        return q

    def quality(self, outputs, source, labels) -> dict[str, Any]:
        return embedding_quality(outputs, source, labels)

    def score(self, quality) -> float:
        return quality["mean_cosine"]

    def source_score(self, source_quality) -> float:
        return 1.0  # the source against itself

    def margin(self, quality, target) -> float:
        floors = _floors(target)
        if not floors:
            return quality["mean_cosine"]
        return min((quality[k] - f) / (1.0 - f) if f < 1.0 else quality[k] - f for k, f in floors.items())

    def source_margin(self, source_quality, target) -> float:
        return 1.0

    def max_drop(self, target) -> float | None:
        return 1.0 if _floors(target) else None


    def rules(self) -> dict:
        return {"min_cosine_similarity": lambda r, lim: _at_least(r, lim, "mean_cosine",
                                                                  "mean cosine to the source's embeddings"),
                "min_recall_at_10": lambda r, lim: _at_least(r, lim, "recall_at_10",
                                                             "recall@10 of the source's neighbours")}


def _at_least(report: dict, limit: float, key: str, statistic: str) -> tuple[Any, str, str, str]:
    q = report.get("quality") or {}
    value = q.get(key)
    if value is None:
        return None, statistic, "fail", f"quality.{key} not in the report (harness run with --skip-accuracy?)"
    extra = f" (p5 cosine {fmt(q['p5_cosine'])}, n={q.get('n')})" if key == "mean_cosine" and "p5_cosine" in q else ""
    return float(value), statistic + extra, "pass" if within(limit, float(value)) else "fail", ""


def _floors(target) -> dict[str, float]:
    b = target.budget
    return {k: f for k, f in (("mean_cosine", b.min_cosine_similarity), ("recall_at_10", b.min_recall_at_10))
            if f is not None}
