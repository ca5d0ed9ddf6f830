"""ONNX Runtime adapter (protocol in _ek_runtime.py). Needs: pip install onnxruntime.

Session settings mirror onnxruntime_perf_test's CPU latency mode and what edgekit's target profile
promises (docs/FORMATS.md, "threads"):
  * intra_op_num_threads = threads  - the profile's thread count, not ORT's default of one thread
                                      per physical core, which differs from device to device;
  * inter_op_num_threads = 1 with ORT_SEQUENTIAL execution - edge classifiers are chains of ops,
                                      and a second pool only adds wake-up jitter;
  * CPUExecutionProvider only       - the bundle is built and checked for the CPU EP; another EP
                                      that happens to be installed (Azure, CUDA) would measure a
                                      different artifact path. get_providers() is reported as used.
Graph optimizations stay at ORT's default (ORT_ENABLE_ALL), as an application would run them.
runtime_settings.cpu_mem_arena = false (text-generation bundles) turns ORT's CPU arena off.
"""

from __future__ import annotations

import numpy as np

from _ek_runtime import Adapter, match_names

# ONNX tensor type strings (onnxruntime NodeArg.type) to numpy dtypes, for inputs the manifest
# does not give a dtype for.
_ORT_DTYPES = {
    "tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
    "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(int16)": "int16",
    "tensor(int8)": "int8", "tensor(uint8)": "uint8", "tensor(uint16)": "uint16",
    "tensor(bool)": "bool",
}

_PROVIDER = "CPUExecutionProvider"


class OnnxRuntimeAdapter(Adapter):
    name = "onnxruntime"
    pip_hint = "pip install onnxruntime"

    def __init__(self, bundle, manifest, threads):
        super().__init__(bundle, manifest, threads)
        self.session = None
        self._model_dtypes: dict[str, str] = {}
        self._ort_outputs: list[str] = []
        self._ort_inputs: dict[str, str] = {}

    def import_runtime(self) -> None:
        try:
            import onnxruntime
        except Exception as exc:  # ImportError, or OSError from a shared library that will not load
            raise self.missing(exc) from exc
        self.module = onnxruntime

    def load(self) -> None:
        ort = self.module
        so = ort.SessionOptions()
        so.intra_op_num_threads = max(1, self.threads)
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        # 3 = errors only: ORT's optimizer warnings would otherwise land in the trial's output.
        so.log_severity_level = 3
        if (self.manifest.get("runtime_settings") or {}).get("cpu_mem_arena") is False:
            # Language models feed a KV cache that grows every step: ORT's arena keeps a block of every
            # size it has handed out, so memory grows with the square of the context (measured on
            # SmolLM2-135M: 1326 MiB peak at 2048 tokens with the arena, see README "Text generation").
            so.enable_cpu_mem_arena = False
        if _PROVIDER not in ort.get_available_providers():
            raise self.load_failed(RuntimeError(f"this onnxruntime build has no {_PROVIDER}"))
        try:
            self.session = ort.InferenceSession(str(self.model_path), sess_options=so,
                                                providers=[_PROVIDER])
        except Exception as exc:  # ORT raises its own Fail/InvalidGraph/... types
            raise self.load_failed(exc) from exc
        inputs = self.session.get_inputs()
        outputs = self.session.get_outputs()
        if len(inputs) != len(self.input_specs):
            raise self.load_failed(RuntimeError(
                f"model takes {len(inputs)} input(s), manifest.json lists {len(self.input_specs)}"))
        # Manifest names are what the dev machine exported; map them onto the session's names
        # (identical for an ONNX artifact; the loose match only guards against renaming passes).
        in_map = match_names([s["name"] for s in self.input_specs], [i.name for i in inputs])
        self._ort_inputs = {w: inputs[i].name for w, i in in_map.items()}
        self._model_dtypes = {w: _ORT_DTYPES.get(inputs[i].type) for w, i in in_map.items()}
        out_map = match_names(self.output_names, [o.name for o in outputs])
        missing = [w for w in self.output_names if w not in out_map]
        if missing:
            raise self.load_failed(RuntimeError(f"model has no output(s) {missing}"))
        self._ort_outputs = [outputs[out_map[w]].name for w in self.output_names]

    def _feeds(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        cast = self.cast(feeds, self._model_dtypes)
        return {self._ort_inputs[k]: v for k, v in cast.items()}

    def runner(self, feeds):
        run = self.session.run
        names = self._ort_outputs
        prepared = self._feeds(feeds)
        # A closure over bound locals: the least Python work per call we can measure through.
        return lambda: run(names, prepared)

    def run(self, feeds):
        values = self.session.run(self._ort_outputs, self._feeds(feeds))
        return dict(zip(self.output_names, values))

    def info(self) -> dict:
        ort = self.module
        providers = self.session.get_providers() if self.session is not None else []
        # The settings actually applied, so a report reader can tell a 1-thread figure from a
        # 4-thread one without trusting the command line that produced it.
        config = {}
        if self.session is not None:
            so = self.session.get_session_options()
            config = {"intra_op_num_threads": so.intra_op_num_threads,
                      "inter_op_num_threads": so.inter_op_num_threads,
                      "execution_mode": str(so.execution_mode).rsplit(".", 1)[-1],
                      "graph_optimization_level": str(so.graph_optimization_level).rsplit(".", 1)[-1],
                      "cpu_mem_arena": bool(so.enable_cpu_mem_arena)}
        return {"name": self.name, "version": getattr(ort, "__version__", None),
                "providers": providers, "device": ort.get_device(), "config": config,
                "actual_device": "CPU" if providers and providers[0] == _PROVIDER else
                (providers[0] if providers else None)}

    def close(self) -> None:
        # Dropping the session stops its intra-op pool, whose threads spin for a while after
        # each run (allow_spinning defaults to on) and would steal cores from a running trial.
        self.session = None


ADAPTER = OnnxRuntimeAdapter
