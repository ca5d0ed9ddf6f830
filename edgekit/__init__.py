"""edgekit: take a fine-tuned model to constrained hardware and prove it fits.

Public API:
    load(source)                     -> ModelHandle
    load_target(name_or_path)        -> TargetProfile
    convert(source, targets, calibration, validation, out, ...) -> list[BundleResult]
    bench(bundle, out=None, ...)     -> report dict (the harness run in a fresh process)
    gate(reports, ...)               -> GateResult (exit_code 0 pass / 1 fail)

Importing edgekit loads numpy and the standard library only; torch, onnx and the runtimes are
imported inside the functions that need them.
"""

from __future__ import annotations

from ._version import __version__  # noqa: E402
from .errors import EdgekitError  # noqa: E402
from .targets import TargetProfile, load_target  # noqa: E402
from .source import load  # noqa: E402
# The functions deliberately shadow their modules' names on the package (edgekit.convert is the
# function); the modules stay importable as edgekit.convert etc. through sys.modules.
from .convert import convert  # noqa: E402
from .bench import bench  # noqa: E402
from .gate import gate  # noqa: E402

__all__ = ["load", "load_target", "convert", "bench", "gate", "TargetProfile", "EdgekitError", "__version__"]
