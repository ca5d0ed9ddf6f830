"""Quality metrics per task, computed the same way on the device (harness) and on the dev machine
(edgekit/tasks imports this module): numpy only.

Feature extraction has no labels to score; what must survive conversion is the embedding space's
geometry (issue 12): how close each item's embedding stays to the source model's (cosine), and
whether each item keeps the same nearest neighbours (recall@k against the source's neighbours,
queries = every validation item, corpus = the others). With labels, a leave-one-out 1-NN top-1
shows what a downstream nearest-neighbour classifier would lose.
"""

from __future__ import annotations

import math

import numpy as np

RECALL_KS = (1, 10)
# The cosine histogram the HTML report draws: 20 bins over [0.8, 1.0] plus an underflow bin, which
# resolves the region budgets live in (min_cosine_similarity is typically 0.95-0.99).
HIST_EDGES = [round(0.8 + 0.01 * i, 2) for i in range(21)]


def _rows(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    return a.reshape(a.shape[0], -1)


def unit(a: np.ndarray) -> np.ndarray:
    a = _rows(a)
    norm = np.linalg.norm(a, axis=1, keepdims=True)
    return a / np.where(norm == 0, 1.0, norm)


def cosine_per_item(got: np.ndarray, ref: np.ndarray) -> np.ndarray:
    return np.sum(unit(got) * unit(ref), axis=1)


def nearest_rank(values, p: float) -> float:
    """HARNESS_SPEC: sorted[ceil(n*p)-1]."""
    s = sorted(float(v) for v in values)
    return s[max(0, math.ceil(len(s) * p) - 1)]


def neighbours(emb: np.ndarray, k: int) -> np.ndarray:
    """Indices of each item's k most cosine-similar other items (ties broken by index: stable)."""
    u = unit(emb)
    sim = u @ u.T
    np.fill_diagonal(sim, -np.inf)
    order = np.argsort(-sim, axis=1, kind="stable")
    return order[:, :k]


def recall_at_k(got: np.ndarray, ref: np.ndarray, k: int) -> float:
    """Mean share of each item's k nearest neighbours under the source's embeddings that the
    artifact's embeddings also place among its k nearest."""
    k = min(k, len(got) - 1)
    a, b = neighbours(got, k), neighbours(ref, k)
    return float(np.mean([len(set(x) & set(y)) / k for x, y in zip(a.tolist(), b.tolist())]))


def knn_top1(emb: np.ndarray, labels: np.ndarray) -> float:
    """Leave-one-out 1-nearest-neighbour accuracy: each item takes its nearest other item's label."""
    labels = np.asarray(labels).reshape(-1)
    nn = neighbours(emb, 1)[:, 0]
    return float(np.mean(labels[nn] == labels))


def cosine_histogram(cos: np.ndarray) -> dict:
    counts, _ = np.histogram(np.clip(cos, HIST_EDGES[0], HIST_EDGES[-1]), bins=HIST_EDGES)
    return {"edges": HIST_EDGES, "counts": counts.astype(int).tolist(),
            "below": int(np.sum(cos < HIST_EDGES[0]))}


def embedding_quality(got: np.ndarray, ref: np.ndarray, labels=None, decimals: int = 6) -> dict:
    """The feature-extraction quality section: artifact embeddings `got` vs source embeddings `ref`
    on the same items (N x D each)."""
    got, ref = _rows(got), _rows(ref)
    if got.shape != ref.shape:
        raise ValueError(f"embeddings of shape {got.shape} against source embeddings {ref.shape}")
    cos = cosine_per_item(got, ref)
    out = {"task": "feature-extraction", "n": int(len(got)), "dim": int(got.shape[1]),
           "mean_cosine": round(float(np.mean(cos)), decimals),
           "p5_cosine": round(nearest_rank(cos, 0.05), decimals),
           "min_cosine": round(float(np.min(cos)), decimals),
           "cosine_histogram": cosine_histogram(cos)}
    for k in RECALL_KS:
        out[f"recall_at_{k}"] = round(recall_at_k(got, ref, k), decimals)
    if labels is not None:
        out["knn_top1"] = round(knn_top1(got, labels), decimals)
    return out
