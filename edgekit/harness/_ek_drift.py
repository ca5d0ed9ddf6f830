"""Drift statistics shared by `edgekit drift` (edgekit/trust/drift.py) and the model server in every
bundle (server/, live input drift in /metrics): per-sample scalar features of a tensor, the bins of a
reference distribution, and the population stability index. numpy only (device side)."""

from __future__ import annotations

import numpy as np

MAX_ELEMENT_FEATURES = 64   # tensors with at most this many elements get one feature per element
PSI_FLOOR = 1e-4            # bin shares below this count as this (PSI is infinite for an empty bin)


def _element_names(name: str, shape: tuple[int, ...]) -> list[str]:
    return [f"{name}[{','.join(map(str, idx))}]" for idx in np.ndindex(*shape)] if shape else [name]


def features_of(name: str, a: np.ndarray) -> dict[str, np.ndarray]:
    """Per-sample scalar features of one tensor with N samples on axis 0: name -> float64 (N,)."""
    a = np.asarray(a)
    n = a.shape[0]
    flat = a.reshape(n, -1)
    out: dict[str, np.ndarray] = {}
    if a.dtype.kind in "iub":
        out[f"{name}:nonzero"] = np.count_nonzero(flat, axis=1).astype(np.float64)
        out[f"{name}:mean"] = flat.astype(np.float64).mean(axis=1)
        return out
    flat = flat.astype(np.float64)
    if flat.shape[1] <= MAX_ELEMENT_FEATURES:
        for j, fname in enumerate(_element_names(name, a.shape[1:])):
            out[fname] = flat[:, j]
    out[f"{name}:mean"] = flat.mean(axis=1)
    out[f"{name}:std"] = flat.std(axis=1)
    if flat.shape[1] > MAX_ELEMENT_FEATURES and a.ndim == 4:
        axis = 1 if a.shape[1] <= 16 else (3 if a.shape[3] <= 4 else None)
        if axis is not None:
            per = np.moveaxis(a.astype(np.float64), axis, 1).reshape(n, a.shape[axis], -1).mean(axis=2)
            for c in range(a.shape[axis]):
                out[f"{name}:c{c}:mean"] = per[:, c]
    return out


def _bins(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin index per value: bin 0 = (-inf, e0], bin i = (e[i-1], e[i]], last = (e[-1], inf)."""
    return np.searchsorted(edges, values, side="left")


def psi(actual: np.ndarray, expected: np.ndarray) -> float:
    a = np.maximum(np.asarray(actual, dtype=np.float64), PSI_FLOOR)
    e = np.maximum(np.asarray(expected, dtype=np.float64), PSI_FLOOR)
    return float(np.sum((a - e) * np.log(a / e)))


def live_psi(features: dict, reference: dict) -> dict[str, float]:
    """PSI per reference input feature of the samples seen so far ({feature: (N,) values})."""
    out = {}
    for name, ref in reference.get("features", {}).items():
        v = features.get(name)
        if ref.get("source") != "input" or v is None or not len(v):
            continue
        edges = np.asarray(ref["edges"], dtype=np.float64)
        actual = np.bincount(_bins(np.asarray(v, np.float64), edges), minlength=len(edges) + 1) / len(v)
        out[name] = psi(actual, ref["expected"])
    return out
