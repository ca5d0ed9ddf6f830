"""OpenVINO backend: PyTorch (or ONNX) -> OpenVINO IR (model.xml + model.bin), fp32 / fp16 /
int8 static (NNCF post-training quantization) / int8 weight-only (NNCF weight compression).

API calls (OpenVINO 2026.x, NNCF 3.x; FIELD_NOTES "APIs, as used in 2026"):
  export     ov.convert_model(module, example_input=(tensors...), input=[PartialShape...])
             or ov.convert_model("model.onnx"); model.reshape({name: [1, ...]}) for static shapes;
             ov.save_model(model, "model.xml", compress_to_fp16=False)
  fp16       ov.save_model(model, "model.xml", compress_to_fp16=True): weights stored as f16, the
             plugin picks the compute precision (f32 on AVX2 CPUs, f16 on NPU and ARM)
  int8       nncf.quantize(model, nncf.Dataset(items, transform), subset_size=N, preset=...,
             model_type=nncf.ModelType.TRANSFORMER (transformers), target_device=CPU|NPU|GPU,
             advanced_parameters=AdvancedQuantizationParameters(overflow_fix=..., ...))
  int8-dyn   nncf.compress_weights(model, mode=nncf.CompressWeightsMode.INT8_ASYM): int8 weights,
             float activations
  open       core.compile_model(model, "CPU", {PERFORMANCE_HINT: LATENCY, INFERENCE_NUM_THREADS,
             INFERENCE_PRECISION_HINT: the target's compute_precision}), as the device harness does.
             The hint is always pinned: left alone, the CPU plugin computes in bf16 on AVX512_BF16/AMX
             hosts (an fp16 digits CNN then moved by 0.098 instead of < 0.01) and in f16 on ARM. A
             precision the host cannot compute is silently replaced by f32 by the plugin; the runner
             reads back what was used (run.inference_precision) and the manifest records it.

The overflow fix is NNCF's answer to FIELD_NOTES trap 1 (int8 saturation without VNNI): AVX2 and
AVX-512 without VNNI add u8*s8 pairs in a saturating int16, so NNCF quantizes weights to half the
8-bit range (7 bits). "first_layer_only" (NNCF's recommendation for those CPUs) applies it to the
first convolution(s), whose un-normalised inputs overflow most; VNNI / AMX / ARM accumulate in
int32 and take the full range ("disable"). A profile's quantization.reduce_range overrides this:
true -> "enable" (every Conv/MatMul), false -> "disable".

Input names are set from the source (handle.input_names, positionally) and output names from
handle.outputs, so a compiled model takes feeds keyed by the manifest's names.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import BackendError, MissingExtraError
from .base import Artifact, quiet

# Dynamic batch needs a traced batch that is not 1 (a size-1 dim may be specialised to a constant).
_DYNAMIC_EXAMPLE_BATCH = 2


def _ov():
    try:
        import openvino
    except ImportError as exc:
        raise MissingExtraError("openvino", "openvino") from exc
    return openvino


def _nncf():
    try:
        with _quiet():
            import nncf
    except ImportError as exc:
        raise MissingExtraError("nncf", "openvino", "int8 quantization") from exc
    return nncf


def _quiet():
    return quiet("nncf", "torch.jit", "openvino")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:300] if text else ''}"


def _name_ports(model, handle) -> None:
    """Give the IR the source's input and output names (by position), replacing converter names
    such as "input" / "x.1" / unnamed outputs."""
    if len(model.inputs) != len(handle.input_names):
        raise BackendError(f"{handle.spec}: the OpenVINO model has {len(model.inputs)} input(s), "
                           f"the source {len(handle.input_names)} ({', '.join(handle.input_names)})")
    for port, name in zip(model.inputs, handle.input_names):
        port.get_tensor().set_names({name})
    for port, name in zip(model.outputs, handle.outputs):
        port.get_tensor().set_names({name})


def _input_shapes(handle, example: dict[str, np.ndarray], static: bool) -> dict[str, list[int]]:
    """[1, ...] per input for static shapes, [-1, ...] (dynamic batch) otherwise; the other dims
    come from the example data (for text: the sequence length the data was tokenised to)."""
    return {n: [1 if static else -1, *map(int, example[n].shape[1:])] for n in handle.input_names}


def _convert_torch(ov, handle, example, shapes):
    import torch
    batch = 1 if all(shapes[n][0] == 1 for n in handle.input_names) else _DYNAMIC_EXAMPLE_BATCH
    args = tuple(torch.from_numpy(np.ascontiguousarray(example[n][:batch])) for n in handle.input_names)
    inputs = [ov.PartialShape(shapes[n]) for n in handle.input_names]
    with _quiet(), torch.no_grad():
        return ov.convert_model(handle.module, example_input=args, input=inputs)


def _convert(ov, handle, target, workdir: Path, example) -> tuple[object, dict]:
    shapes = _input_shapes(handle, example, target.static_shapes)
    if handle.onnx_path is not None:
        try:
            with _quiet():
                model = ov.convert_model(str(handle.onnx_path))
        except Exception as exc:
            raise BackendError(f"{handle.onnx_path}: OpenVINO cannot read this ONNX model "
                               f"({_first_line(exc)})") from exc
        return model, {"exporter": "openvino.convert_model (onnx)"}
    try:
        return _convert_torch(ov, handle, example, shapes), {"exporter": "openvino.convert_model (pytorch)"}
    except Exception as exc:
        direct_error = _first_line(exc)
    # Some modules trace badly in OpenVINO's PyTorch frontend but export to ONNX (torch.onnx,
    # dynamo then TorchScript); the ONNX frontend then takes them.
    from .onnxruntime import export_onnx
    try:
        onnx_file, onnx_details = export_onnx(handle, target, workdir, example)
        with _quiet():
            model = ov.convert_model(str(onnx_file))
    except Exception as exc:
        raise BackendError(f"{handle.spec}: cannot convert to OpenVINO for {target.name}: the PyTorch "
                           f"frontend failed ({direct_error}) and so did the ONNX route "
                           f"({_first_line(exc)})") from exc
    return model, {"exporter": "openvino.convert_model (onnx via " + onnx_details["exporter"] + ")",
                   "pytorch_frontend_error": direct_error}


def _save(ov, model, folder: Path, fp16: bool) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    xml = folder / "model.xml"
    ov.save_model(model, str(xml), compress_to_fp16=fp16)
    return [xml, xml.with_suffix(".bin")]


def _read(ov, artifact: Artifact):
    return ov.Core().read_model(str(artifact.path))


def compile_config(threads: int, inference_precision: str = "f32") -> dict:
    """The CPU plugin settings used here, the same as the device harness's (harness/_ek_rt_openvino.py):
    the compute precision is pinned for every artifact precision (module docstring)."""
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": inference_precision}
    if threads and threads > 0:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    return config


def int8_settings(target, transformer: bool) -> dict:
    """NNCF post-training quantization settings for a target and model (module docstring), from
    TargetProfile.int8_for: [quantization.transformer] applies to transformers here too."""
    q = target.int8_for(transformer)
    x86_no_vnni = target.arch == "x86_64" and not target.has_vnni
    if q.reduce_range is None:
        overflow_fix = "first_layer_only" if x86_no_vnni else "disable"
    else:
        overflow_fix = "enable" if q.reduce_range else "disable"
    # MIXED = symmetric weights, asymmetric activations (NNCF's choice for transformers, whose
    # activations are far from zero-centred); PERFORMANCE = symmetric both (CNNs).
    preset = "mixed" if transformer or q.activation_type == "uint8" else "performance"
    device = target.device if target.device in ("CPU", "NPU", "GPU") else "ANY"
    return {
        "method": "nncf.quantize (post-training, static activations)",
        "preset": preset,
        "model_type": "transformer" if transformer else None,
        "target_device": device,
        "overflow_fix": overflow_fix,
        "per_channel": q.per_channel,
        "calibrate_method": q.calibrate_method,
        "weight_type": "int8",
        # SmoothQuant (activation outliers migrated into the weights, Xiao et al. 2023): NNCF runs it
        # for ModelType.TRANSFORMER, alpha 0.95 on MatMuls; pinned here so the manifest says so. On
        # the MiniLM example: 0.00 pts held-out with it, 0.33 without (one sentence; the tuning split
        # ranks them the other way), no latency cost (0.976x; benchmarks/ov_smoothquant.py).
        **({"smooth_quant": {"matmul_alpha": SMOOTH_QUANT_ALPHA}} if transformer else {}),
    }


SMOOTH_QUANT_ALPHA = 0.95  # NNCF 3.4's AdvancedSmoothQuantParameters.matmul default


def _nncf_kwargs(nncf, settings: dict) -> dict:
    from nncf.quantization.advanced_parameters import (AdvancedQuantizationParameters, OverflowFix,
                                                       QuantizationParameters)
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet
    estimator = {"minmax": RangeEstimatorParametersSet.MINMAX,
                 "entropy": RangeEstimatorParametersSet.HISTOGRAM,
                 "percentile": RangeEstimatorParametersSet.MEAN_QUANTILE}[settings["calibrate_method"]]
    sq = settings.get("smooth_quant")
    extra = {}
    if sq:
        from nncf.quantization.advanced_parameters import AdvancedSmoothQuantParameters
        extra["smooth_quant_alphas"] = AdvancedSmoothQuantParameters(matmul=sq["matmul_alpha"])
    advanced = AdvancedQuantizationParameters(
        **extra,
        overflow_fix=OverflowFix(settings["overflow_fix"]),
        activations_range_estimator_params=estimator,
        **({} if settings["per_channel"] else
           {"weights_quantization_params": QuantizationParameters(per_channel=False)}))
    kwargs = {"preset": nncf.QuantizationPreset(settings["preset"]),
              "target_device": nncf.TargetDevice(settings["target_device"]),
              "advanced_parameters": advanced}
    if settings["model_type"] == "transformer":
        kwargs["model_type"] = nncf.ModelType.TRANSFORMER
    return kwargs


def _nncf_dataset(nncf, data):
    """Items are sample indices, mapped to a batch-of-one feed dict (what the IR takes)."""
    return nncf.Dataset(list(range(len(data))), data.sample)


class OpenVinoBackend:
    # calibrate_method = "auto" tries these (NNCF range estimators MINMAX, MEAN_QUANTILE, HISTOGRAM)
    calibrate_methods = ("minmax", "percentile", "entropy")
    name = "openvino"
    extra = "openvino"
    model_format = "openvino-ir"
    precisions = ("fp32", "fp16", "int8", "int8-dynamic")

    def available(self) -> None:
        _ov()

    def export(self, handle, target, workdir: Path, example) -> Artifact:
        ov = _ov()
        model, details = _convert(ov, handle, target, workdir, example)
        _name_ports(model, handle)
        shapes = _input_shapes(handle, example, target.static_shapes)
        try:
            if target.static_shapes:
                # NPUs compile static shapes only (FIELD_NOTES trap 6): every dim fixed, batch 1.
                model.reshape({n: ov.PartialShape(s) for n, s in shapes.items()})
            # Otherwise an ONNX source keeps its own dims (as the ONNX Runtime backend does): a
            # graph exported at a fixed batch may hold Reshape constants that assume it.
        except Exception as exc:
            raise BackendError(f"{handle.spec}: cannot reshape the OpenVINO model to "
                               f"{shapes} for {target.name} ({_first_line(exc)})") from exc
        files = _save(ov, model, workdir / "openvino-fp32", fp16=False)
        details.update({"static_shapes": target.static_shapes,
                        "input_shapes": {p.get_any_name(): str(p.get_partial_shape()) for p in model.inputs},
                        "ir_weights": "f32"})
        return Artifact("openvino", files[0], "fp32", files, details)

    def quantize(self, artifact: Artifact, handle, target, calibration, workdir: Path) -> Artifact:
        p = target.precision
        if p == "fp32":
            return artifact
        ov = _ov()
        model = _read(ov, artifact)
        if p == "fp16":
            files = _save(ov, model, workdir / "openvino-fp16", fp16=True)
            q = {"method": "ov.save_model(compress_to_fp16=True)", "weights": "f16",
                 "compute": f"pinned: INFERENCE_PRECISION_HINT={target.compute_precision}"}
            return Artifact("openvino", files[0], p, files, {**artifact.details, "quantization": q,
                                                             "inference_precision": target.compute_precision})
        nncf = _nncf()
        if p == "int8-dynamic":
            q = {"method": "nncf.compress_weights", "mode": "INT8_ASYM", "weights": "int8 per-channel, asymmetric",
                 "activations": "float"}
            try:
                with _quiet():
                    model = nncf.compress_weights(model, mode=nncf.CompressWeightsMode.INT8_ASYM)
            except Exception as exc:
                raise BackendError(f"{handle.spec}: NNCF weight compression failed for {target.name} "
                                   f"({_first_line(exc)})") from exc
        else:
            q = int8_settings(target, handle.is_transformer)
            q["calibration_samples"] = len(calibration)
            try:
                with _quiet():
                    model = nncf.quantize(model, _nncf_dataset(nncf, calibration), subset_size=len(calibration),
                                          **_nncf_kwargs(nncf, q))
            except Exception as exc:
                raise BackendError(f"{handle.spec}: NNCF quantization failed for {target.name} "
                                   f"({_first_line(exc)})") from exc
        files = _save(ov, model, workdir / f"openvino-{p}", fp16=False)
        return Artifact("openvino", files[0], p, files, {**artifact.details, "quantization": q,
                                                         "inference_precision": target.compute_precision})

    def quantize_with_accuracy_control(self, artifact, handle, target, calibration, validation,
                                       max_drop, workdir):
        return quantize_with_accuracy_control(artifact, handle, target, calibration, validation,
                                              max_drop, workdir)

    def backoff(self, artifact, handle, target, calibration, validation, workdir, evaluate, max_drop):
        """Accuracy-aware int8 (edgekit.accuracy): one candidate from NNCF's accuracy-control
        quantization, which itself ranks layers and reverts the most sensitive to float. NNCF's
        loop judges top-1 on labels: other tasks get no candidate here (edgekit then ships the float
        artifact, as for any back-off that finds nothing within budget)."""
        if handle.task != "classification":
            return
        art = self.quantize_with_accuracy_control(artifact, handle, target, calibration, validation,
                                                  max_drop, workdir)
        yield art, art.details.get("quantization", {}).get("ignored_scope", ["(chosen by NNCF)"])

    def open(self, artifact: Artifact, threads: int = 1):
        return open_compiled(artifact.path, threads, artifact.details.get("inference_precision", "f32"))


def open_compiled(path: Path | str, threads: int = 1, inference_precision: str = "f32"):
    """Compile an IR for "CPU" with the compute precision pinned; returns run(feeds by input name)
    -> outputs in model order, with run.inference_precision = what the plugin actually computes in."""
    ov = _ov()
    core = ov.Core()
    try:
        compiled = core.compile_model(str(path), "CPU", compile_config(threads, inference_precision))
    except Exception as exc:
        raise BackendError(f"{path}: OpenVINO cannot compile this model for CPU ({_first_line(exc)})") from exc
    run = _runner(compiled)
    try:
        run.inference_precision = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
    except Exception:  # a plugin without the property computes in f32 on CPU
        run.inference_precision = "f32"
    return run


def _runner(compiled):
    request = compiled.create_infer_request()
    names = [p.get_any_name() for p in compiled.inputs]
    outputs = list(compiled.outputs)

    def run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        missing = [n for n in names if n not in feeds]
        if missing:
            raise BackendError(f"OpenVINO model input(s) {missing} not fed (got {sorted(feeds)})")
        # infer() copies inputs in and outputs out (share_inputs/share_outputs default False).
        result = request.infer({n: feeds[n] for n in names})
        return [result[o] for o in outputs]
    run.compiled = compiled
    return run


def quantize_with_accuracy_control(artifact: Artifact, handle, target, calibration, validation,
                                   max_drop: float, workdir: Path) -> Artifact:
    """int8 with NNCF's accuracy-aware quantization: quantize, then return layers to float (most
    harmful first, ranked on the validation set) until the absolute top-1 drop against the float
    IR is at most max_drop. The metric is top-1 accuracy of the compiled model on
    validation.sample(i) against validation.labels[i]."""
    ov = _ov()
    nncf = _nncf()
    if validation.labels is None:
        raise BackendError(f"{validation.path}: accuracy-aware quantization needs labelled validation data")
    labels = np.asarray(validation.labels)

    def validation_fn(compiled, items) -> tuple[float, list[float]]:
        run = _runner(compiled)
        hits = [float(np.argmax(run(validation.sample(i))[0], axis=-1)[0] == labels[i]) for i in items]
        return (float(np.mean(hits)) if hits else 0.0), hits

    q = int8_settings(target, handle.is_transformer)
    q.update({"method": "nncf.quantize_with_accuracy_control", "calibration_samples": len(calibration),
              "accuracy_control": {"metric": "top1", "max_drop": float(max_drop), "drop_type": "absolute",
                                   "validation_samples": len(validation)}})
    kwargs = _nncf_kwargs(nncf, q)
    model = _read(ov, artifact)
    try:
        with _quiet():
            model = nncf.quantize_with_accuracy_control(
                model, _nncf_dataset(nncf, calibration), _nncf_dataset(nncf, validation), validation_fn,
                max_drop=float(max_drop), drop_type=nncf.DropType.ABSOLUTE, subset_size=len(calibration),
                advanced_quantization_parameters=kwargs.pop("advanced_parameters"), **kwargs)
    except Exception as exc:
        raise BackendError(f"{handle.spec}: NNCF accuracy-aware quantization failed for {target.name} "
                           f"({_first_line(exc)})") from exc
    q["ignored_scope"] = float_layers(model)
    files = _save(ov, model, workdir / "openvino-int8-ac", fp16=False)
    return Artifact("openvino", files[0], "int8", files, {**artifact.details, "quantization": q,
                                                          "inference_precision": target.compute_precision})


def float_layers(model) -> list[str]:
    """Weighted layers left in float: no FakeQuantize feeds them (what accuracy control reverted)."""
    weighted = {"Convolution", "GroupConvolution", "MatMul", "ConvolutionBackpropData"}
    out = []
    for op in model.get_ordered_ops():
        if op.get_type_name() in weighted:
            feeders = {op.input_value(i).get_node().get_type_name() for i in range(op.get_input_size())}
            if "FakeQuantize" not in feeders:
                out.append(op.get_friendly_name())
    return out
