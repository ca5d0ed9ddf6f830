"""LiteRT backend: PyTorch -> .tflite with litert-torch (no TensorFlow), fp32 / fp16 (f16 weights) /
int8-dynamic (dynamic range: int8 weights, float activations) / int8 (full integer, PT2E static
quantization calibrated on the calibration set).

API calls (litert-torch 0.10, ai-edge-litert 2.3; FIELD_NOTES "litert-torch converts PyTorch to
.tflite without TensorFlow"):
  export     litert_torch.convert(module, sample_args).export("model.tflite")
  fp16       litert_torch.convert(module, sample_args,
                 quant_config=litert_torch.generative.quantize.quant_recipes.full_fp16_recipe())
             (an ai-edge-quantizer pass over the converted flatbuffer, regex ".*": every supported
             op, not only Edge Generative API models)
  int8-dyn   as int8 below with get_symmetric_quantization_config(is_per_channel=True, is_dynamic=True)
             and one forward pass. quant_recipes.full_dynamic_recipe() (ai-edge-quantizer) gives the
             same op types but ran ~30x slower in XNNPACK on the test CNN (0.21 ms vs 0.006 ms per
             inference); it serves transformers, whose embedding tables PT2E quantizes in a way
             TFLite's EMBEDDING_LOOKUP rejects, and any model the PT2E route fails on.
  int8       quantizer = litert_torch.quantize.pt2e_quantizer.PT2EQuantizer().set_global(
                 get_symmetric_quantization_config(is_per_channel=True, is_dynamic=False))
             (activation observer: MinMaxObserver for calibrate_method "minmax", see _OBSERVERS)
             m = torchao.quantization.pt2e.quantize_pt2e.prepare_pt2e(
                 torch.export.export(module, args).module(), quantizer)
             m(*sample) for every calibration sample; m = convert_pt2e(m, fold_quantize=False)
             (nn.Embedding tables first become int8 rows with per-row scales: int8_embeddings)
             litert_torch.convert(m, args, quant_config=QuantConfig(pt2e_quantizer=quantizer))
  open       ai_edge_litert.interpreter.Interpreter(model_path, num_threads) (tflite_runtime fallback)

Full-integer I/O: litert-torch's STATIC QDQ conversion folds the boundary quantize/dequantize into
the model's inputs and outputs, which then become int8 tensors. The converter's strict_qdq_mode
keeps them as QUANTIZE / DEQUANTIZE ops inside the model instead, so inputs and outputs stay
float32 and the compute stays int8. litert-torch does not expose that flag for this path, so it is
set on the converter config for the duration of one conversion (`_float_io`); should a later
litert-torch drop the hook, the model comes out with int8 I/O, which open() here and the device
harness both handle by (de)quantizing with each tensor's (scale, zero_point).

Shapes: LiteRT models are exported at batch 1, always (static shapes; details["batch"] = 1).
Input matching: .tflite input names are converter-made ("serving_default_args_0:0", signature
name "args_0"), so inputs are matched by position, in the order of handle.input_names (the source's
forward() order, which litert-torch keeps as args_0, args_1, ...); outputs likewise (output_0, ...).
int64 inputs (token ids) are narrowed to int32 by the converter (enable_x64=False, the LiteRT
default); open() casts feeds to the model's input dtype.

ONNX sources cannot be converted: the ONNX -> TFLite route needs TensorFlow (onnx2tf / onnx-tf).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
import os
import re
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

from ..errors import BackendError, ConfigError, MissingExtraError
from .base import Artifact

BATCH = 1  # every LiteRT artifact is exported at batch 1
_INT_TYPES = (np.int8, np.uint8, np.int16)


def _need_torch_source(handle, target) -> None:
    if handle.module is None:
        where = target.path or target.name
        raise ConfigError(f"{where}: runtime 'litert' needs a PyTorch source; {handle.spec} is an ONNX model "
                          "and ONNX -> TFLite conversion needs TensorFlow (onnx2tf), which edgekit does not use. "
                          "Convert from the PyTorch model (.py factory, .pt2 or Hugging Face directory), "
                          "or target onnxruntime/openvino")


@contextlib.contextmanager
def _quiet():
    """litert-torch draws a progress tree, torch.export and torchao warn and log, and the native
    converter and interpreter print absl/TFLite INFO lines straight to file descriptors 1 and 2:
    keep the CLI readable. The native output is replayed on stderr when the block fails."""
    loggers = [logging.getLogger(n) for n in ("torchao", "torch.export", "torch._dynamo", "root")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    saved_env = os.environ.get("LITERT_TORCH_SHOW_PROGRESS")
    os.environ["LITERT_TORCH_SHOW_PROGRESS"] = "n"
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), _native_output() as native:
            warnings.simplefilter("ignore")
            try:
                yield
            except BaseException:
                native.replay = True
                raise
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
        if saved_env is None:
            os.environ.pop("LITERT_TORCH_SHOW_PROGRESS", None)
        else:
            os.environ["LITERT_TORCH_SHOW_PROGRESS"] = saved_env


class _Native:
    replay = False


@contextlib.contextmanager
def _native_output():
    """Send file descriptors 1 and 2 to a temporary file (C++ logging bypasses sys.stdout)."""
    state = _Native()
    try:
        fds = [(fd, os.dup(fd)) for fd in (1, 2)]
    except OSError:  # no real descriptors (embedded interpreters): leave output alone
        yield state
        return
    with tempfile.TemporaryFile() as sink:
        for stream in (sys.__stdout__, sys.__stderr__):
            if stream is not None:
                stream.flush()
        for fd, _ in fds:
            os.dup2(sink.fileno(), fd)
        try:
            yield state
        finally:
            for fd, saved in fds:
                os.dup2(saved, fd)
                os.close(saved)
            if state.replay:
                sink.seek(0)
                sys.stderr.write(sink.read().decode("utf-8", "replace")[-4000:])


def _litert_torch():
    try:
        with _quiet():
            import litert_torch
    except ImportError as exc:
        raise MissingExtraError("litert-torch", "litert") from exc
    return litert_torch


def _interpreter_class():
    for package in ("ai_edge_litert.interpreter", "tflite_runtime.interpreter"):
        try:
            return importlib.import_module(package).Interpreter
        except ImportError:
            continue
    raise MissingExtraError("ai-edge-litert", "litert")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:300] if text else ''}"


@contextlib.contextmanager
def _float_io():
    """Keep a full-integer model's inputs/outputs float (module docstring); yields whether the
    converter hook was found."""
    try:
        from litert_torch._convert import litert_converter
        api = litert_converter.converter_api_ext
        original = api.ConvertToTFLConfig
        hooked = hasattr(original(), "strict_qdq_mode")
    except Exception:  # a litert-torch without this layout: int8 I/O, handled downstream
        hooked = False
    if not hooked:
        yield False
        return

    def config():
        c = original()
        c.strict_qdq_mode = True
        return c

    api.ConvertToTFLConfig = config
    try:
        yield True
    finally:
        api.ConvertToTFLConfig = original


def _sample_args(handle, feeds: dict[str, np.ndarray]):
    import torch
    return tuple(torch.from_numpy(np.ascontiguousarray(feeds[n][:BATCH])) for n in handle.input_names)


def _convert(handle, target, args, out: Path, quant_config=None, module=None) -> Path:
    lt = _litert_torch()
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with _quiet():
            lt.convert(module if module is not None else handle.module, args,
                       quant_config=quant_config).export(str(out))
    except Exception as exc:
        raise BackendError(f"{handle.spec}: litert-torch cannot convert this model for {target.name} "
                           f"({_first_line(exc)})") from exc
    return out


def _io_dtypes(path: Path) -> dict:
    it = _load_interpreter(path, 1)
    return {"inputs": [np.dtype(d["dtype"]).name for d in it.get_input_details()],
            "outputs": [np.dtype(d["dtype"]).name for d in it.get_output_details()]}


# profile calibrate_method -> the activation observer of PT2E static quantization. "minmax" (the
# profile default) keeps the whole observed range, as TFLite's classic post-training calibration
# does; litert-torch's own default, HistogramObserver (range chosen to minimise the L2 error), serves
# "entropy" and "percentile". In a full-integer model the logits are int8 too: values outside the
# range seen in calibration saturate (tests: a -28.5 logit came out -20.3, the calibrated minimum,
# with top-1 unchanged), so int8 parity is judged on top-1 agreement, not on max abs diff.
_OBSERVERS = {"minmax": "MinMaxObserver", "entropy": "HistogramObserver", "percentile": "HistogramObserver"}


def _static_config(pq, per_channel: bool, method: str):
    """litert-torch's symmetric static config, with the activation observer the profile asks for."""
    import dataclasses
    config = pq.get_symmetric_quantization_config(is_per_channel=per_channel, is_dynamic=False)
    if _OBSERVERS[method] == "HistogramObserver":
        return config
    from torchao.quantization.pt2e.observer import MinMaxObserver
    act = dataclasses.replace(config.input_activation,
                              observer_or_fake_quant_ctr=MinMaxObserver.with_args(eps=2**-12))
    return dataclasses.replace(config, input_activation=act, output_activation=act)


def int8_embeddings(module):
    """A copy of `module` whose nn.Embedding tables hold int8 rows with one float scale per row
    (symmetric, zero point 0: weight-only, as ai-edge-quantizer's dynamic recipe stores them); None
    for the info when there is no table. PT2E static quantization annotates no embedding op, so
    without this a full-integer transformer keeps its tables in float32 (MiniLM: 55.9 MB, 45 of it the
    30,522 x 384 word table). Converted, a table is EMBEDDING_LOOKUP on the int8 rows, CAST to float
    and a MUL by the rows' scales, all LiteRT builtins; the lookup is exact, the rounding is each
    row's max |w| / 127."""
    import copy

    import torch

    class Int8Embedding(torch.nn.Module):
        def __init__(self, emb: torch.nn.Embedding):
            super().__init__()
            w = emb.weight.detach().float()
            scale = (w.abs().amax(dim=1, keepdim=True) / 127.0).clamp(min=1e-12)
            self.register_buffer("qweight", torch.round(w / scale).clamp(-127, 127).to(torch.int8))
            self.register_buffer("scale", scale)

        def forward(self, ids):
            rows = torch.nn.functional.embedding(ids, self.qweight).to(torch.float32)
            return rows * torch.nn.functional.embedding(ids, self.scale)

    names = [n for n, m in module.named_modules() if isinstance(m, torch.nn.Embedding)]
    if not names:
        return module, None
    out = copy.deepcopy(module)
    params = 0
    for name in names:
        parent, _, attr = name.rpartition(".")
        holder = out.get_submodule(parent) if parent else out
        emb = getattr(holder, attr)
        params += emb.weight.numel()
        setattr(holder, attr, Int8Embedding(emb))
    return out, {"tables": names, "params": params,
                 "storage": "int8 symmetric per-row (EMBEDDING_LOOKUP on int8 rows, CAST, MUL by the row scale)"}


class LiteRtBackend:
    # calibrate_method = "auto": percentile and entropy are one observer here (HistogramObserver)
    calibrate_methods = ("minmax", "entropy")
    name = "litert"
    extra = "litert"
    model_format = "tflite"
    precisions = ("fp32", "fp16", "int8", "int8-dynamic")

    def available(self) -> None:
        # litert-torch takes ~10 s to import (torchao, jax): check presence only.
        if importlib.util.find_spec("litert_torch") is None:
            raise MissingExtraError("litert-torch", "litert")
        if importlib.util.find_spec("ai_edge_litert") is None and importlib.util.find_spec("tflite_runtime") is None:
            raise MissingExtraError("ai-edge-litert", "litert")

    def export(self, handle, target, workdir: Path, example) -> Artifact:
        _need_torch_source(handle, target)
        out = _convert(handle, target, _sample_args(handle, example), workdir / "litert-fp32" / "model.tflite")
        details = {"exporter": "litert_torch.convert", "batch": BATCH, "static_shapes": True,
                   "input_order": list(handle.input_names), "io_dtypes": _io_dtypes(out)}
        return Artifact("litert", out, "fp32", [out], details)

    def quantize(self, artifact: Artifact, handle, target, calibration, workdir: Path) -> Artifact:
        p = target.precision
        if p == "fp32":
            return artifact
        _need_torch_source(handle, target)
        _litert_torch()
        from litert_torch.generative.quantize import quant_recipes
        args = _sample_args(handle, calibration.sample(0))
        out = workdir / f"litert-{p}" / "model.tflite"
        if p == "fp16":
            _convert(handle, target, args, out, quant_config=quant_recipes.full_fp16_recipe())
            q = {"method": "litert_torch quant_recipes.full_fp16_recipe (ai-edge-quantizer)",
                 "weights": "float16", "activations": "float32"}
        elif p == "int8-dynamic" or target.int8_for(handle.is_transformer).mode == "dynamic":
            q = self._dynamic_int8(handle, target, calibration, args, out)
        else:
            q = self._pt2e_int8(handle, target, calibration, args, out, dynamic=False)
        q["io_dtypes"] = _io_dtypes(out)
        return Artifact("litert", out, p, [out], {**artifact.details, "quantization": q})

    def _dynamic_int8(self, handle, target, calibration, args, out: Path) -> dict:
        """Dynamic range int8. PT2E first (fast hybrid kernels in XNNPACK); transformers, and any
        model whose PT2E result fails to convert or load, take ai-edge-quantizer's dynamic recipe:
        PT2E gives embedding tables a zero point that TFLite's EMBEDDING_LOOKUP rejects
        ("qparams->zero_point->data[0] == 0 was not true")."""
        from litert_torch.generative.quantize import quant_attrs, quant_recipes
        pt2e_error = "transformer: the recipe is litert-torch's own path for transformers"
        if not handle.is_transformer:
            try:
                q = self._pt2e_int8(handle, target, calibration, args, out, dynamic=True)
                _load_interpreter(out, 1)
                return q
            except BackendError as exc:
                pt2e_error = str(exc)[:300]
        cfg = quant_recipes.full_dynamic_recipe(weight_dtype=quant_attrs.Dtype.INT8,
                                                granularity=quant_attrs.Granularity.CHANNELWISE)
        _convert(handle, target, args, out, quant_config=cfg)
        return {"method": "litert_torch quant_recipes.full_dynamic_recipe (ai-edge-quantizer)",
                "mode": "dynamic range", "weights": "int8 symmetric per-channel",
                "activations": "float32 (quantized on the fly by the kernels)", "pt2e_skipped": pt2e_error}

    def _pt2e_int8(self, handle, target, calibration, args, out: Path, dynamic: bool) -> dict:
        """PT2E quantization: static (observers calibrated on every calibration sample, int8
        activations) or dynamic (int8 weights; activations quantized at run time by the kernels)."""
        import torch
        from litert_torch.quantize import pt2e_quantizer as pq
        from litert_torch.quantize.quant_config import QuantConfig
        from torchao.quantization.pt2e import move_exported_model_to_eval
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
        settings = target.int8_for(handle.is_transformer)
        per_channel, method = settings.per_channel, settings.calibrate_method
        config = (pq.get_symmetric_quantization_config(is_per_channel=per_channel, is_dynamic=True) if dynamic
                  else _static_config(pq, per_channel, method))
        quantizer = pq.PT2EQuantizer().set_global(config)
        # Dynamic: one pass sets the weight observers (per-channel scales are scalars otherwise).
        n = 1 if dynamic else len(calibration)
        module, embeddings = (handle.module, None) if dynamic else int8_embeddings(handle.module)
        try:
            with _quiet():
                graph = torch.export.export(module, args).module()
                graph = prepare_pt2e(graph, quantizer)
                with torch.no_grad():
                    for i in range(n):
                        graph(*_sample_args(handle, calibration.sample(i)))
                graph = convert_pt2e(graph, fold_quantize=False)
                move_exported_model_to_eval(graph)
        except Exception as exc:
            raise BackendError(f"{handle.spec}: PT2E int8 quantization failed for {target.name} "
                               f"({_first_line(exc)})") from exc
        weights = f"int8 symmetric {'per-channel' if per_channel else 'per-tensor'}"
        if dynamic:
            _convert(handle, target, args, out, quant_config=QuantConfig(pt2e_quantizer=quantizer), module=graph)
            return {"method": "PT2E dynamic (torchao prepare_pt2e/convert_pt2e, litert_torch PT2EQuantizer)",
                    "mode": "dynamic range", "weights": weights,
                    "activations": "float32 (quantized on the fly by the kernels)"}
        with _float_io() as float_io:
            _convert(handle, target, args, out, quant_config=QuantConfig(pt2e_quantizer=quantizer), module=graph)
        return {"method": "PT2E static (torchao prepare_pt2e/convert_pt2e, litert_torch PT2EQuantizer)",
                "mode": "full integer", "weights": weights,
                "activations": "int8 asymmetric per-tensor", "calibrate_method": method,
                **({"embeddings": embeddings} if embeddings else {}),
                "observer": _OBSERVERS[method], "calibration_samples": len(calibration),
                "float_io": "QUANTIZE/DEQUANTIZE ops inside the model" if float_io else
                            "no (int8 inputs/outputs; (de)quantize with each tensor's scale/zero_point)"}

    def open(self, artifact: Artifact, threads: int = 1):
        return open_interpreter(artifact.path, threads, artifact.details.get("input_order"))


def _load_interpreter(path: Path | str, threads: int):
    Interpreter = _interpreter_class()
    try:
        with _native_output():
            it = Interpreter(model_path=str(path), num_threads=max(1, int(threads or 1)))
            it.allocate_tensors()
    except Exception as exc:
        raise BackendError(f"{path}: the LiteRT interpreter cannot load this model ({_first_line(exc)})") from exc
    return it


def _ordered(details: list[dict], signature: dict[str, int] | None, prefix: str) -> list[dict]:
    """Tensor details in source order: by the signature's args_<k> / output_<k> numbering when the
    model has it, else the interpreter's own order."""
    if signature:
        keyed = {}
        for name, index in signature.items():
            m = re.fullmatch(prefix + r"_(\d+)", name)
            if not m:
                break
            keyed[int(m.group(1))] = index
        else:
            by_index = {d["index"]: d for d in details}
            if sorted(keyed) == list(range(len(details))) and all(i in by_index for i in keyed.values()):
                return [by_index[keyed[k]] for k in sorted(keyed)]
    return list(details)


def open_interpreter(path: Path | str, threads: int = 1, input_names: list[str] | None = None):
    """A runner over a .tflite model: run(feeds by source input name) -> outputs in source order.
    Inputs are matched by position (module docstring); feeds larger than batch 1 are run one row
    at a time."""
    it = _load_interpreter(path, threads)
    sig = None
    try:
        sigs = it._get_full_signature_list()  # {key: {"inputs": {name: index}, "outputs": {...}}}
        if len(sigs) == 1:
            sig = next(iter(sigs.values()))
    except Exception:
        pass
    ins = _ordered(it.get_input_details(), sig and sig.get("inputs"), "args")
    outs = _ordered(it.get_output_details(), sig and sig.get("outputs"), "output")
    if input_names is not None and len(input_names) != len(ins):
        raise BackendError(f"{path}: the model takes {len(ins)} input(s), the source {len(input_names)}")
    set_tensor, invoke, get_tensor = it.set_tensor, it.invoke, it.get_tensor

    def one(arrays: list[np.ndarray]) -> list[np.ndarray]:
        for d, a in zip(ins, arrays):
            set_tensor(d["index"], _to_tensor(d, a))
        invoke()
        return [_from_tensor(d, get_tensor(d["index"])) for d in outs]

    def run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        names = input_names or list(feeds)
        arrays = [np.asarray(feeds[n]) for n in names]
        n = arrays[0].shape[0] if arrays and arrays[0].ndim else BATCH
        if n == BATCH:
            return one(arrays)
        rows = [one([a[i:i + 1] for a in arrays]) for i in range(n)]
        return [np.concatenate([r[k] for r in rows]) for k in range(len(outs))]
    run.interpreter = it
    return run


def _to_tensor(detail: dict, a: np.ndarray) -> np.ndarray:
    dtype = np.dtype(detail["dtype"])
    scale, zero = detail.get("quantization") or (0.0, 0)
    if dtype.type in _INT_TYPES and np.issubdtype(a.dtype, np.floating) and scale:
        info = np.iinfo(dtype)
        q = np.round(a.astype(np.float64) / scale) + zero
        return np.ascontiguousarray(np.clip(q, info.min, info.max).astype(dtype))
    return np.ascontiguousarray(a.astype(dtype, copy=False))


def _from_tensor(detail: dict, value: np.ndarray) -> np.ndarray:
    scale, zero = detail.get("quantization") or (0.0, 0)
    if value.dtype.type in _INT_TYPES and scale:
        return ((value.astype(np.float32) - zero) * scale).astype(np.float32)
    return value
