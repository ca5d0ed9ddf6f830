"""OpenVINO adapter (protocol in _ek_runtime.py). Needs: pip install openvino.

The artifact is an IR pair (model.xml + model.bin; manifest model.file names the .xml).
Compilation follows benchmark_app's synchronous latency mode:
  * PERFORMANCE_HINT = LATENCY           - one stream, one request: batch-1 latency, not throughput;
  * INFERENCE_NUM_THREADS = threads      - the profile's thread count (CPU plugin only);
  * INFERENCE_PRECISION_HINT            - the target's compute precision, as the dev machine's
                                           parity check pinned it (manifest runtime_settings.
                                           inference_precision; f32 on CPUs): otherwise the CPU
                                           plugin silently runs bf16 on AMX/AVX512-BF16 CPUs and
                                           f16 on ARM, which is not the arithmetic that was checked.
                                           Bundles without the key pin f32 for fp32 models only.
                                           The report records the precision actually used.
A property is set only when the device lists it in SUPPORTED_PROPERTIES: the NPU and GPU plugins
reject CPU-only keys such as INFERENCE_NUM_THREADS at compile time.

When the requested device (runtime_settings.device, e.g. "NPU") is not in Core.available_devices,
the model is compiled for "CPU" instead so that the bundle can still be checked, and the report says
actual_device "CPU", stand_in true; the gate's target.stand_in policy decides what that is worth.
"""

from __future__ import annotations

import numpy as np

from _ek_runtime import Adapter, match_names


class OpenVinoAdapter(Adapter):
    name = "openvino"
    pip_hint = "pip install openvino"

    def __init__(self, bundle, manifest, threads):
        super().__init__(bundle, manifest, threads)
        self.core = None
        self.compiled = None
        self.request = None
        self.device = None
        self.config: dict = {}
        self._in_ports: dict[str, int] = {}
        self._in_dtypes: dict[str, str] = {}
        self._out_ports: list[int] = []

    def import_runtime(self) -> None:
        try:
            import openvino
        except Exception as exc:  # ImportError, or a plugin library that will not load
            raise self.missing(exc) from exc
        self.module = openvino

    def _pick_device(self, available: list[str]) -> str:
        """The requested device when present ("GPU" also matches "GPU.0"), else "CPU" (stand-in)."""
        want = self.requested_device.upper()
        for dev in available:
            if dev.upper() == want or dev.upper().split(".")[0] == want:
                return self.requested_device
        return "CPU"

    def _config(self, device: str) -> dict:
        try:
            supported = set(self.core.get_property(device, "SUPPORTED_PROPERTIES"))
        except Exception:  # very old plugins: fall back to the one hint every device accepts
            supported = {"PERFORMANCE_HINT"}
        config = {}
        if "PERFORMANCE_HINT" in supported:
            config["PERFORMANCE_HINT"] = "LATENCY"
        if "INFERENCE_NUM_THREADS" in supported:
            config["INFERENCE_NUM_THREADS"] = max(1, self.threads)
        pinned = (self.manifest.get("runtime_settings") or {}).get("inference_precision")
        if pinned is None and (self.precision or "").lower() == "fp32":
            pinned = "f32"  # bundles written before the key existed
        if pinned and "INFERENCE_PRECISION_HINT" in supported:
            config["INFERENCE_PRECISION_HINT"] = pinned
        return config

    def load(self) -> None:
        ov = self.module
        xml = self.model_path
        try:
            self.core = ov.Core()
            self.device = self._pick_device(list(self.core.available_devices))
            self.config = self._config(self.device)
            # compile_model(path) reads model.xml and its model.bin beside it, then compiles: both
            # belong in load_ms, as an application pays for both.
            self.compiled = self.core.compile_model(str(xml), self.device, self.config)
            self.request = self.compiled.create_infer_request()
        except Exception as exc:  # openvino raises RuntimeError subclasses with long messages
            raise self.load_failed(exc, xml) from exc

        inputs = list(self.compiled.inputs)
        outputs = list(self.compiled.outputs)
        if len(inputs) != len(self.input_specs):
            raise self.load_failed(RuntimeError(
                f"model takes {len(inputs)} input(s), manifest.json lists {len(self.input_specs)}"), xml)
        in_map = match_names([s["name"] for s in self.input_specs], [_port_name(p, i) for i, p in
                                                                     enumerate(inputs)])
        self._in_ports = dict(in_map)
        self._in_dtypes = {w: _port_dtype(inputs[i]) for w, i in in_map.items()}
        out_map = match_names(self.output_names, [_port_name(p, i) for i, p in enumerate(outputs)])
        missing = [w for w in self.output_names if w not in out_map]
        if missing:
            raise self.load_failed(RuntimeError(f"model has no output(s) {missing}"), xml)
        self._out_ports = [out_map[w] for w in self.output_names]

    def _feeds(self, feeds):
        cast = self.cast(feeds, self._in_dtypes)
        # Keyed by port index: names can be ambiguous after conversion, indices cannot.
        return {self._in_ports[k]: v for k, v in cast.items()}

    def runner(self, feeds):
        infer = self.request.infer
        prepared = self._feeds(feeds)
        # infer() copies inputs in and outputs out (share_* default False), as an application
        # that keeps results beyond the next call must.
        return lambda: infer(prepared)

    def run(self, feeds):
        self.request.infer(self._feeds(feeds))
        return {name: np.array(self.request.get_output_tensor(port).data, copy=True)
                for name, port in zip(self.output_names, self._out_ports)}

    def info(self) -> dict:
        ov = self.module
        execution = None
        try:
            execution = list(self.compiled.get_property("EXECUTION_DEVICES"))
        except Exception:
            pass
        try:
            full_name = self.core.get_property(self.device, "FULL_DEVICE_NAME")
        except Exception:
            full_name = None
        try:  # what the plugin computes in: it replaces a precision the CPU lacks by f32, silently
            computed = self.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        except Exception:
            computed = None
        return {"name": self.name, "version": ov.get_version() if hasattr(ov, "get_version") else
                getattr(ov, "__version__", None),
                "available_devices": list(self.core.available_devices),
                "device": self.device, "execution_devices": execution,
                "device_name": full_name,
                "config": {k: str(v) for k, v in self.config.items()},
                "inference_precision": computed,
                "actual_device": self.device}

    def reset(self) -> None:
        if self.request is not None:
            self.request.reset_state()  # a stateful LM's KV cache (a no-op for stateless models)

    def close(self) -> None:
        self.request = None
        self.compiled = None


def _port_name(port, index: int) -> str:
    try:
        return port.get_any_name()
    except Exception:  # a port without tensor names (possible after some conversions)
        return f"port{index}"


def _port_dtype(port) -> str | None:
    try:
        return str(port.get_element_type().to_dtype())
    except Exception:  # dynamic or undefined element type: keep the manifest's dtype
        return None


ADAPTER = OpenVinoAdapter
