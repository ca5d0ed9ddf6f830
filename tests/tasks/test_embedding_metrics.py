"""The feature-extraction figures (harness/_ek_metrics.py: the same code on device and dev machine)
on embeddings whose answers are known by construction."""

from __future__ import annotations

import numpy as np
import pytest

from edgekit.harness._ek_metrics import (cosine_per_item, embedding_quality, knn_top1, neighbours,
                                         recall_at_k)


def _clusters(n_per=20, k=4, dim=16, spread=0.05, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, dim))
    x = np.concatenate([c + spread * rng.normal(size=(n_per, dim)) for c in centres])
    return x.astype(np.float32), np.repeat(np.arange(k), n_per)


def test_identical_embeddings_keep_everything():
    x, y = _clusters()
    q = embedding_quality(x, x, y)
    assert q["mean_cosine"] == pytest.approx(1.0) and q["p5_cosine"] == pytest.approx(1.0)
    assert q["recall_at_1"] == 1.0 and q["recall_at_10"] == 1.0
    assert q["knn_top1"] == 1.0          # well separated clusters: the nearest other item shares the label
    assert sum(q["cosine_histogram"]["counts"]) == len(x) and q["cosine_histogram"]["below"] == 0


def test_scale_does_not_matter_but_direction_does():
    x, _ = _clusters()
    assert np.allclose(cosine_per_item(3.0 * x, x), 1.0)          # cosine ignores the norm
    flipped = x.copy()
    flipped[:5] *= -1
    cos = cosine_per_item(flipped, x)
    assert np.allclose(cos[:5], -1.0) and np.allclose(cos[5:], 1.0)
    q = embedding_quality(flipped, x)
    assert q["min_cosine"] == pytest.approx(-1.0) and q["cosine_histogram"]["below"] == 5


def test_recall_counts_shared_neighbours():
    # points on the unit circle: cosine neighbours are the nearest angles, known exactly
    angles = np.array([0.0, 0.1, 0.25, 1.5, 1.6])
    ref = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    assert neighbours(ref, 1)[:, 0].tolist() == [1, 0, 1, 4, 3]
    assert recall_at_k(ref, ref, 2) == 1.0
    swapped = ref[[0, 1, 2, 4, 3]]          # items 3 and 4 exchange places: still each other's nearest
    assert recall_at_k(swapped, ref, 1) == 1.0
    moved = ref.copy()
    moved[0] = [np.cos(1.55), np.sin(1.55)]  # item 0 jumps into the other group
    assert recall_at_k(moved, ref, 1) < 1.0
    assert recall_at_k(ref, ref, 50) == 1.0  # k is capped at n - 1


def test_noise_lowers_every_figure_monotonically():
    x, y = _clusters(spread=0.4, seed=1)
    rng = np.random.default_rng(2)
    figures = [embedding_quality(x + s * rng.normal(size=x.shape), x, y) for s in (0.0, 0.1, 0.5)]
    for key in ("mean_cosine", "recall_at_10"):
        values = [f[key] for f in figures]
        assert values[0] > values[1] > values[2], (key, values)
    assert knn_top1(x, y) >= figures[2]["knn_top1"]


def test_shapes_must_match():
    with pytest.raises(ValueError, match="embeddings of shape"):
        embedding_quality(np.zeros((4, 3)), np.zeros((4, 5)))
