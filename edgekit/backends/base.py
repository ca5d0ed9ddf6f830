"""The backend protocol: one runtime per file, the same four verbs for each.

    available()                          -> raises MissingExtraError naming the pip extra
    export(handle, target, workdir)      -> Artifact (float model in the runtime's format)
    quantize(artifact, handle, target, calibration, workdir) -> Artifact (the profile's precision)
    open(artifact, threads)              -> callable(dict[str, ndarray]) -> list[ndarray]

Optional: `backoff(...)` (accuracy-aware int8: artifacts with more and more in float, accuracy.py)
and `calibrate_methods` (the distinct calibration methods calibrate_method = "auto" tries).

Heavy imports (onnxruntime, openvino, litert) happen inside these functions, so `import edgekit`
stays light and a missing runtime is reported only when a profile needs it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import warnings
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np

Runner = Callable[[dict[str, np.ndarray]], list[np.ndarray]]


@dataclasses.dataclass
class Artifact:
    runtime: str
    path: Path                         # the file a runtime opens (model.onnx, model.xml, model.tflite)
    precision: str
    files: list[Path]                  # every file of the model (model.xml + model.bin, ...)
    details: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def size_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.files)


class Backend(Protocol):
    name: str
    extra: str
    model_format: str

    def available(self) -> None: ...

    def export(self, handle, target, workdir: Path, example: dict[str, np.ndarray]) -> Artifact: ...

    def quantize(self, artifact: Artifact, handle, target, calibration, workdir: Path) -> Artifact: ...

    def open(self, artifact: Artifact, threads: int = 1) -> Runner: ...


@contextlib.contextmanager
def quiet(*loggers: str):
    """Exporters and quantizers print banners, progress bars, warnings and log lines on stdout:
    keep the CLI readable by muting them (and the named loggers) for the duration."""
    logs = [logging.getLogger(n) for n in loggers]
    levels = [lg.level for lg in logs]
    for lg in logs:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(logs, levels):
            lg.setLevel(level)
