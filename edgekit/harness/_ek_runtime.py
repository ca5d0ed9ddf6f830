"""The one small protocol every runtime adapter follows, and the loader that picks one.

An adapter is a module `_ek_rt_<runtime>.py` beside this file (runtime = manifest["model"]["runtime"])
that defines ADAPTER, a subclass of Adapter. The harness drives it in this order, timing each step
separately (HARNESS_SPEC.md step 3: cold start is never mixed into steady state):

    a = ADAPTER(bundle, manifest, threads)
    a.import_runtime()      # import the runtime package          -> import_ms
    a.load()                # read + compile the model             -> load_ms
    fn = a.runner(feeds)    # a no-argument callable: one inference at batch 1
    fn()                                                          -> first_inference_ms, samples
    outs = a.run(feeds)     # {output name (manifest spelling): np.ndarray}, for self-check/accuracy
    a.reset()               # stateful models (OpenVINO LMs keep their KV cache inside): new sequence
    a.info()                # {"name", "version", ..., "actual_device"} for the report
    a.close()

runner() returns the tightest loop body the runtime allows, yet it always includes feeding the
input and fetching the outputs: that is what an application pays per call, and including it keeps
figures comparable across runtimes whose APIs split the work differently.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import numpy as np

from _ek_bundle import BundleError

# Runtimes an edgekit bundle may name, and the adapter module for each.
KNOWN = ("onnxruntime", "openvino", "litert")


class RuntimeMissing(BundleError):
    """The bundle's runtime is not installed on this device (exit 2, with the pip command)."""


class ModelLoadError(BundleError):
    """The runtime refused the (hash-verified) artifact: wrong runtime version, or a bad export."""


class Adapter:
    name = "?"
    pip_hint = "?"

    def __init__(self, bundle: Path, manifest: dict, threads: int):
        self.bundle = Path(bundle)
        self.manifest = manifest
        self.threads = int(threads)
        model = manifest["model"]
        self.model_path = self.bundle / model["file"]
        self.input_specs = list(model["inputs"])
        self.output_names = [o["name"] for o in model["outputs"]]
        self.precision = model.get("precision") or (manifest.get("conversion") or {}).get("precision")
        settings = manifest.get("runtime_settings") or {}
        self.requested_device = settings.get("device") or "CPU"
        self.module = None

    # -- protocol -------------------------------------------------------------------------------
    def import_runtime(self) -> None:
        raise NotImplementedError

    def load(self) -> None:
        raise NotImplementedError

    def runner(self, feeds: dict[str, np.ndarray]):
        raise NotImplementedError

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def info(self) -> dict:
        raise NotImplementedError

    def reset(self) -> None:
        """Forget per-sequence state (a stateful LM's KV cache); stateless models have none."""

    def close(self) -> None:
        pass

    # -- helpers shared by adapters ------------------------------------------------------------
    def missing(self, exc: BaseException) -> RuntimeMissing:
        msg = f"{self.name} is not installed on this device: {self.pip_hint}"
        # A plain "No module named X" says nothing more; anything else (a shared library that
        # fails to load, a wheel for another CPU) is the clue the user needs.
        if not isinstance(exc, ModuleNotFoundError):
            msg += f" (import failed: {_first_line(exc)})"
        return RuntimeMissing(msg)

    def load_failed(self, exc: BaseException, path: Path | None = None) -> ModelLoadError:
        return ModelLoadError(f"{path or self.model_path}: {self.name} could not load the model "
                              f"({_first_line(exc)})")

    def cast(self, feeds: dict[str, np.ndarray], model_dtypes: dict | None = None) -> dict:
        """Cast each input to the dtype the loaded model declares (the runtime rejects anything
        else), else to the manifest's dtype; npz files may hold e.g. int32 token ids for int64."""
        out = {}
        model_dtypes = model_dtypes or {}
        for spec in self.input_specs:
            name = spec["name"]
            arr = feeds[name]
            dtype = model_dtypes.get(name) or spec.get("dtype")
            if dtype is not None and arr.dtype != np.dtype(dtype):
                arr = arr.astype(dtype)
            out[name] = np.ascontiguousarray(arr)
        return out


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]


def normalize_name(name: str) -> str:
    """Loose tensor-name key: TFLite converters mangle names ("serving_default_x:0", "x_1",
    "StatefulPartitionedCall:0"); case, punctuation and these decorations are dropped."""
    n = name.lower()
    n = re.sub(r":\d+$", "", n)
    for prefix in ("serving_default_", "args_"):
        if n.startswith(prefix) and len(n) > len(prefix):
            n = n[len(prefix):]
    return re.sub(r"[^a-z0-9]", "", n)


def match_names(wanted: list[str], available: list[str]) -> dict[str, int]:
    """Map each wanted (manifest) name to an index into available (runtime) names.

    Exact match first, then equal normalized names, then a unique normalized containment; whatever
    is still unmatched takes the remaining slots in order (the converter keeps input order).
    """
    result: dict[str, int] = {}
    free = list(range(len(available)))
    norm = [normalize_name(a) for a in available]
    for rule in ("exact", "normalized", "contains"):
        for w in wanted:
            if w in result:
                continue
            nw = normalize_name(w)
            if rule == "exact":
                hits = [i for i in free if available[i] == w]
            elif rule == "normalized":
                hits = [i for i in free if norm[i] == nw]
            else:
                hits = [i for i in free if nw and (nw in norm[i] or (norm[i] and norm[i] in nw))]
            if len(hits) == 1:
                result[w] = hits[0]
                free.remove(hits[0])
    for w in wanted:
        if w not in result and free:
            result[w] = free.pop(0)
    return result


def open_adapter(bundle: Path, manifest: dict, threads: int) -> Adapter:
    """The adapter named by manifest["model"]["runtime"]."""
    runtime = manifest["model"]["runtime"]
    if runtime not in KNOWN:
        raise BundleError(f"{Path(bundle) / 'manifest.json'}: model.runtime {runtime!r} is not one of "
                          f"{', '.join(KNOWN)}")
    try:
        module = importlib.import_module(f"_ek_rt_{runtime}")
    except ImportError as exc:
        raise BundleError(f"{Path(bundle) / 'harness'}: adapter _ek_rt_{runtime}.py missing "
                          f"({_first_line(exc)})") from exc
    return module.ADAPTER(bundle, manifest, threads)
