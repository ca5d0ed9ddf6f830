"""Runtime backends, by profile `runtime` name. A new runtime is one file and one line here."""

from __future__ import annotations

import importlib

from ..errors import ConfigError

_REGISTRY = {
    "onnxruntime": "edgekit.backends.onnxruntime:OnnxRuntimeBackend",
    "openvino": "edgekit.backends.openvino:OpenVinoBackend",
    "litert": "edgekit.backends.litert:LiteRtBackend",
}


def get_backend(name: str):
    if name not in _REGISTRY:
        raise ConfigError(f"unknown runtime {name!r}; available: {', '.join(_REGISTRY)}")
    module, _, cls = _REGISTRY[name].partition(":")
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        raise ConfigError(f"runtime {name!r} is not implemented in this edgekit ({exc.name})") from exc
    return getattr(mod, cls)()
