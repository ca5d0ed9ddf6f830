"""Compare a converted artifact's outputs with the source model's (after every export and
quantization): max abs diff, and top-1 agreement for classifiers."""

from __future__ import annotations

import dataclasses

import numpy as np

from .data import Dataset


# How far an artifact's outputs may stray from PyTorch's on the same inputs, per precision, for
# every backend (tests/backends assert these; the README cites them). fp32: summation order and
# converter rewrites only. fp16: f16 weights (f32 compute on x86 CPUs). int8: judged on top-1
# agreement, since logits move by about one quantization step (and full-integer LiteRT outputs
# saturate at the calibrated range).
PARITY_TOLERANCE = {
    "fp32": {"max_abs_diff": 1e-4},
    "fp16": {"max_abs_diff": 1e-2},
    "int8": {"min_top1_agreement": 0.9},
    "int8-dynamic": {"min_top1_agreement": 0.9},
}


@dataclasses.dataclass
class Parity:
    stage: str
    n: int
    max_abs_diff: float
    mean_abs_diff: float
    top1_agreement: float

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def run_all(runner, data: Dataset) -> list[np.ndarray]:
    """Run every sample at batch 1; outputs stacked per output."""
    outs = [runner(data.sample(i)) for i in range(len(data))]
    return [np.concatenate([o[k] for o in outs]) for k in range(len(outs[0]))]


def compare(stage: str, got: list[np.ndarray], ref: list[np.ndarray]) -> Parity:
    g, r = np.asarray(got[0], np.float64), np.asarray(ref[0], np.float64)
    diff = np.abs(g - r)
    agree = float(np.mean(g.argmax(-1) == r.argmax(-1))) if g.ndim >= 2 else float("nan")
    return Parity(stage, int(len(g)), float(diff.max()), float(diff.mean()), agree)


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.asarray(logits).argmax(-1) == labels))


def per_class_accuracy(logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    pred = np.asarray(logits).argmax(-1)
    return {str(c): float(np.mean(pred[labels == c] == c)) for c in np.unique(labels)}
