"""LiteRT (TensorFlow Lite) adapter (protocol in _ek_runtime.py). Needs: pip install ai-edge-litert
(or, on older devices, the tflite-runtime wheel, which is tried second).

Settings follow TFLite's benchmark_model defaults for CPU: the interpreter with num_threads =
threads and the default op resolver, which applies the XNNPACK delegate to the ops it supports.

Tensor names in a .tflite file are whatever the converter produced ("serving_default_x:0",
"args_0", "StatefulPartitionedCall:0"), so manifest names are matched loosely and, failing that,
by order (the converters keep the order of the source model's inputs/outputs).

Fully integer models take and return int8/uint8 tensors. The bundle's samples are real-valued (the
manifest's dtype), so inputs are quantized with the tensor's own (scale, zero_point) and outputs
dequantized the same way before any comparison: q = round(x / scale) + zero_point, and
x = (q - zero_point) * scale (TFLite quantization spec).
"""

from __future__ import annotations

import numpy as np

from _ek_runtime import Adapter, match_names

_INT_TYPES = (np.int8, np.uint8, np.int16)


class LiteRtAdapter(Adapter):
    name = "litert"
    pip_hint = "pip install ai-edge-litert"

    def __init__(self, bundle, manifest, threads):
        super().__init__(bundle, manifest, threads)
        self.package = None
        self.interpreter = None
        self._inputs: dict[str, dict] = {}   # manifest name -> tflite input detail
        self._outputs: list[dict] = []       # tflite output details in manifest order
        self._shapes: dict[int, tuple] = {}  # tensor index -> shape it is allocated for

    def import_runtime(self) -> None:
        errors = []
        for package in ("ai_edge_litert.interpreter", "tflite_runtime.interpreter"):
            try:
                module = __import__(package, fromlist=["Interpreter"])
                self.module = module.Interpreter
                self.package = package.split(".")[0]
                return
            except Exception as exc:  # ImportError, or a wheel built for another CPU
                errors.append(exc)
        raise self.missing(errors[0]) from errors[0]

    def load(self) -> None:
        path = self.model_path
        try:
            self.interpreter = self.module(model_path=str(path), num_threads=max(1, self.threads))
            self.interpreter.allocate_tensors()
        except Exception as exc:
            raise self.load_failed(exc, path) from exc
        ins = self.interpreter.get_input_details()
        outs = self.interpreter.get_output_details()
        if len(ins) != len(self.input_specs):
            raise self.load_failed(RuntimeError(
                f"model takes {len(ins)} input(s), manifest.json lists {len(self.input_specs)}"), path)
        in_map = match_names([s["name"] for s in self.input_specs], [d["name"] for d in ins])
        self._inputs = {w: ins[i] for w, i in in_map.items()}
        out_map = match_names(self.output_names, [d["name"] for d in outs])
        missing = [w for w in self.output_names if w not in out_map]
        if missing:
            raise self.load_failed(RuntimeError(f"model has no output(s) {missing}"), path)
        self._outputs = [outs[out_map[w]] for w in self.output_names]
        self._shapes = {d["index"]: tuple(int(s) for s in d["shape"]) for d in ins}

    # -- tensors ---------------------------------------------------------------------------------
    def _to_tensor(self, name: str, arr: np.ndarray) -> np.ndarray:
        d = self._inputs[name]
        dtype = np.dtype(d["dtype"])
        scale, zero = _quant(d)
        if dtype.type in _INT_TYPES and np.issubdtype(arr.dtype, np.floating) and scale:
            info = np.iinfo(dtype)
            q = np.round(arr.astype(np.float64) / scale) + zero
            return np.ascontiguousarray(np.clip(q, info.min, info.max).astype(dtype))
        return np.ascontiguousarray(arr.astype(dtype, copy=False))

    def _from_tensor(self, detail: dict, spec_dtype, value: np.ndarray) -> np.ndarray:
        scale, zero = _quant(detail)
        wants_float = spec_dtype is None or np.issubdtype(np.dtype(spec_dtype), np.floating)
        if value.dtype.type in _INT_TYPES and scale and wants_float:
            return ((value.astype(np.float32) - zero) * scale).astype(np.float32)
        return value

    def _prepare(self, feeds) -> list[tuple[int, np.ndarray]]:
        """(tensor index, ready tensor) pairs; resizes inputs whose shape differs (dynamic batch)."""
        pairs = []
        resized = False
        for spec in self.input_specs:
            name = spec["name"]
            tensor = self._to_tensor(name, feeds[name])
            index = self._inputs[name]["index"]
            if self._shapes.get(index) != tuple(tensor.shape):
                self.interpreter.resize_tensor_input(index, list(tensor.shape))
                self._shapes[index] = tuple(tensor.shape)
                resized = True
            pairs.append((index, tensor))
        if resized:
            self.interpreter.allocate_tensors()
        return pairs

    # -- protocol --------------------------------------------------------------------------------
    def runner(self, feeds):
        pairs = self._prepare(feeds)
        set_tensor = self.interpreter.set_tensor
        invoke = self.interpreter.invoke
        get_tensor = self.interpreter.get_tensor  # returns a copy, as an application keeps it
        out_idx = [d["index"] for d in self._outputs]

        def one_inference():
            for index, tensor in pairs:
                set_tensor(index, tensor)
            invoke()
            return [get_tensor(i) for i in out_idx]

        return one_inference

    def run(self, feeds):
        values = self.runner(feeds)()
        specs = {o["name"]: o.get("dtype") for o in self.manifest["model"]["outputs"]}
        return {name: self._from_tensor(d, specs.get(name), v)
                for name, d, v in zip(self.output_names, self._outputs, values)}

    def info(self) -> dict:
        version = None
        try:
            version = getattr(__import__(self.package), "__version__", None)
        except Exception:
            pass
        return {"name": self.name, "version": version, "package": self.package,
                "num_threads": self.threads,
                "delegates": ["default (XNNPACK where supported)"],
                "actual_device": "CPU"}

    def close(self) -> None:
        self.interpreter = None


def _quant(detail: dict) -> tuple[float, int]:
    """Per-tensor (scale, zero_point); (0.0, 0) for float tensors. Per-channel I/O is not produced
    by converters for model inputs/outputs, so the first pair is the one that applies."""
    q = detail.get("quantization") or (0.0, 0)
    try:
        return float(q[0]), int(q[1])
    except (TypeError, ValueError, IndexError):
        return 0.0, 0


ADAPTER = LiteRtAdapter
