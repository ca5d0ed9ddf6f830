"""What a conversion hands back, whichever pipeline made the bundle (edgekit/convert.py for
single-call models, edgekit/lm/convert.py for causal LMs): one BundleResult per bundle, and
ConversionFailed when some targets failed; plus the package versions every manifest records."""

from __future__ import annotations

import dataclasses
import platform
from pathlib import Path

from ._version import __version__
from .errors import EdgekitError


class ConversionFailed(EdgekitError):
    """Some bundles of a multi-target convert failed; `.results` holds the ones written."""

    results: list = []


def raise_failures(failures: list[str], total: int, results: list, out) -> None:
    """Every target's refusal, reported together once the others are written (a multi-target convert)."""
    if failures:
        err = ConversionFailed(f"{len(failures)} of {total} bundles failed ({len(results)} written to {out}): "
                               + "; ".join(failures))
        err.results = results
        raise err


@dataclasses.dataclass
class BundleResult:
    name: str
    path: Path
    target: str
    precision: str
    size_mb: float
    accuracy: float
    source_accuracy: float
    parity: list[dict]
    accuracy_control: str = "within budget"
    metric: str = "top1"              # what accuracy means here (the task's: top1, or embedding = mean cosine)

    @property
    def accuracy_drop(self) -> float:
        return self.source_accuracy - self.accuracy


def versions(runtime: str, extra: tuple[str, ...] = ()) -> dict[str, str]:
    import importlib.metadata as md
    v = {"edgekit": __version__, "python": platform.python_version()}
    for pkg in ("torch", "onnx", "numpy", {"onnxruntime": "onnxruntime", "openvino": "openvino",
                                           "litert": "ai-edge-litert"}[runtime], *extra):
        try:
            v[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return v
