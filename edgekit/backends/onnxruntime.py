"""ONNX Runtime backend: export to ONNX, basic graph optimisation, fp32 / int8 static (QDQ) /
int8 dynamic, with int8 settings chosen from the target's ISA.

Why the ISA matters (FIELD_NOTES trap 1; ONNX Runtime's quantization guide): on x86 without VNNI
the U8S8 kernels use VPMADDUBSW, which adds two u8*s8 products into a saturating int16. With full
8-bit weights that intermediate overflows and accuracy drops (4.5 top-1 points on ResNet-50 in a
published case). 7-bit weights (reduce_range) keep every pair sum inside int16. VNNI (VPDPBUSD)
accumulates in int32, so VNNI CPUs and ARM (SDOT/UDOT, or widening multiplies) take full 8 bits.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from ..errors import BackendError, ConfigError, MissingExtraError
from .base import Artifact, quiet

# Transformers lose accuracy when LayerNorm / Softmax / GELU run in int8 (FIELD_NOTES trap 2):
# quantize only the matrix multiplications, which hold nearly all the MACs, and the embedding
# Gathers, which hold half of a small encoder's weights. Measured on the MiniLM-L6 classifier
# (examples/text): MatMul/Gemm only -> 56.2 MB, top-1 0.8867; with Gather -> 22.1 MB, 0.8900
# (fp32 86.7 MB, 0.8967).
TRANSFORMER_OPS = ("MatMul", "Gemm", "Gather")
OPSET = 18  # the dynamo exporter's native opset; ORT 1.2x quantizes it fully
DYNAMIC_FORMAT = "QOperator (DynamicQuantizeLinear + MatMulInteger)"


def _ort():
    try:
        import onnxruntime
    except ImportError as exc:
        raise MissingExtraError("onnxruntime", "onnxruntime") from exc
    return onnxruntime


def resolved_quantization(target, transformer: bool) -> dict:
    """The int8 settings for a target and model: the profile's [quantization] table (with
    [quantization.transformer] on top for transformers, TargetProfile.int8_for) where given,
    otherwise defaults from its arch and ISA (module docstring)."""
    q = target.int8_for(transformer)
    if q.activation_type is not None:
        act = q.activation_type
    else:
        # ARM: ORT recommends S8S8 QDQ. x86: U8S8 (the fast MLAS path).
        act = "int8" if target.arch == "aarch64" else "uint8"
    if q.mode == "dynamic":
        act = "uint8"  # DynamicQuantizeLinear produces uint8 activations, whatever the profile says
    x86_no_vnni = target.arch == "x86_64" and not target.has_vnni
    return {
        "format": "QDQ" if q.mode == "static" else DYNAMIC_FORMAT,
        "mode": q.mode,
        "calibrate_method": q.calibrate_method,
        "per_channel": q.per_channel,
        "reduce_range": x86_no_vnni if q.reduce_range is None else q.reduce_range,
        "activation_type": act,
        "weight_type": q.weight_type or "int8",
        "op_types": list(q.op_types) if q.op_types else (list(TRANSFORMER_OPS) if transformer else None),
        "fusions": q.fusions,
    }


# HF config model_type -> onnxruntime.transformers.optimizer's model type: the BERT-family encoders
# whose layers its "bert" fusions match (Attention, SkipLayerNormalization, BiasGelu, EmbedLayerNormalization).
_FUSABLE = {"bert": "bert", "roberta": "bert", "xlm-roberta": "bert", "electra": "bert", "camembert": "bert"}


def fuse_transformer(path: Path, handle, out: Path) -> tuple[Path | None, dict]:
    """ONNX Runtime's transformer optimizer before dynamic int8: each encoder layer's ~40 nodes
    become Attention + 2 SkipLayerNormalization + BiasGelu, and quantize_dynamic turns Attention into
    QAttention. Measured on the MiniLM example (README "Transformer int8"): same or better top-1 than
    the unfused graph and fewer kernels per layer. Returns (fused file or None, what happened)."""
    import json
    cfg = {}
    if handle.hf_dir is not None and (Path(handle.hf_dir) / "config.json").is_file():
        cfg = json.loads((Path(handle.hf_dir) / "config.json").read_text(encoding="utf-8"))
    kind = _FUSABLE.get(cfg.get("model_type", "bert" if handle.hf_dir is None else ""))
    if kind is None:
        return None, {"reason": f"no ONNX Runtime fusions for model_type {cfg.get('model_type')!r}"}
    try:
        from onnxruntime.transformers import optimizer
        with _quiet():
            # 0 = detect heads / hidden size from the graph (compressed students carry no config)
            m = optimizer.optimize_model(str(path), model_type=kind, num_heads=int(cfg.get("num_attention_heads", 0)),
                                         hidden_size=int(cfg.get("hidden_size", 0)), opt_level=0)
    except Exception as exc:  # an aid, not a requirement: the unfused graph quantizes as before
        return None, {"reason": f"optimizer failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"}
    stats = {k: v for k, v in m.get_fused_operator_statistics().items() if v}
    if not stats.get("Attention"):
        return None, {"reason": "the optimizer matched no attention block", "fused": stats}
    m.save_model_to_file(str(out))
    inline_weights(out)
    return out, {"optimizer": f"onnxruntime.transformers.optimizer ({kind})", "fused": stats}


def _fused_ops(path: Path, ops: tuple[str, ...]) -> list[str]:
    import onnx
    present = {n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node}
    return [op for op in ops if op in present]


def _quiet():
    return quiet("torch.onnx", "torch.export", "torch._dynamo", "onnxscript")


# QuantType by name, looked up lazily so that onnxruntime is imported only when needed.
_QTYPE = {"uint8": lambda oq: oq.QuantType.QUInt8, "int8": lambda oq: oq.QuantType.QInt8}


def _sensitivity(float_model: Path, qdq_model: Path, data, workdir: Path) -> list[str]:
    """Quantized nodes ordered from the one that adds the most quantization noise."""
    import onnx
    from onnxruntime.quantization import qdq_loss_debug as dbg
    f_aug, q_aug = workdir / "sens_float.onnx", workdir / "sens_qdq.onnx"
    with _quiet():
        dbg.modify_model_output_intermediate_tensors(str(float_model), str(f_aug))
        dbg.modify_model_output_intermediate_tensors(str(qdq_model), str(q_aug))
        f_acts = dbg.collect_activations(str(f_aug), _reader_for_debug(data))
        q_acts = dbg.collect_activations(str(q_aug), _reader_for_debug(data))
        errors = dbg.compute_activation_error(dbg.create_activation_matching(q_acts, f_acts))
    sqnr = {t: e.get("xmodel_err") for t, e in errors.items()}
    qdq = onnx.load(str(qdq_model), load_external_data=False)
    quantized = {n.name for n in qdq.graph.node if n.op_type not in ("QuantizeLinear", "DequantizeLinear")}
    noise = {}
    fmodel = onnx.load(str(float_model), load_external_data=False)  # dims only: no weight values needed
    for node in fmodel.graph.node:
        if node.name not in quantized or node.op_type not in _WEIGHTED:
            continue
        out = sqnr.get(node.output[0])
        if out is None or not np.isfinite(out):
            continue
        before = [sqnr[i] for i in node.input if sqnr.get(i) is not None and np.isfinite(sqnr[i])]
        noise[node.name] = (min(before) if before else 100.0) - out
    for f in (f_aug, q_aug):
        f.unlink(missing_ok=True)
    return rank_by_cost(noise, node_macs(fmodel))


_WEIGHTED = ("Conv", "MatMul", "Gemm", "ConvTranspose")


def rank_by_cost(noise: dict[str, float], macs: dict[str, float]) -> list[str]:
    """Exclusion order: the quantization noise a node adds (dB of SQNR lost) per share of the
    model's multiply-accumulates it would take back to float, so that a small layer that adds as
    much noise as a large one goes first (it costs less latency to keep in float). Nodes that add
    no noise come last, noisiest first. A node whose MACs are unknown is charged the median."""
    known = [m for n, m in macs.items() if n in noise and m > 0]
    median = float(np.median(known)) if known else 1.0
    total = sum(macs.get(n, 0) if macs.get(n, 0) > 0 else median for n in noise) or 1.0

    def share(n):
        m = macs.get(n, 0)
        return (m if m > 0 else median) / total
    adds = sorted((n for n in noise if noise[n] > 0), key=lambda n: (-noise[n] / share(n), n))
    rest = sorted((n for n in noise if noise[n] <= 0), key=lambda n: (-noise[n], n))
    return adds + rest


def node_macs(model) -> dict[str, float]:
    """Multiply-accumulates of each weighted node per inference, from the weight's shape and the
    output's inferred spatial/token dims; dims ONNX shape inference leaves symbolic (batch, a
    dynamic sequence) count as 1, which is the same factor for every MatMul of a transformer."""
    import onnx
    try:
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=False)
    except Exception:  # shape inference is best effort here: weights alone still rank
        inferred = model
    dims = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.output):
        shape = vi.type.tensor_type.shape
        dims[vi.name] = [d.dim_value if d.HasField("dim_value") else 1 for d in shape.dim]
    weights = {i.name: list(i.dims) for i in model.graph.initializer}
    out = {}
    for node in model.graph.node:
        if node.op_type not in _WEIGHTED:
            continue
        w = next((weights[i] for i in node.input[1:2] if i in weights), None)
        if w is None:
            continue
        size = float(np.prod(w)) if w else 0.0
        shape = dims.get(node.output[0])
        if node.op_type in ("Conv", "ConvTranspose"):
            spatial = float(np.prod(shape[2:])) if shape and len(shape) > 2 else 1.0
            out[node.name] = size * spatial
        else:  # MatMul / Gemm: one weight-sized product per output row (token)
            rows = float(np.prod(shape[1:-1])) if shape and len(shape) > 2 else 1.0
            out[node.name] = size * rows
    return out


def _reader_for_debug(data):
    from onnxruntime import quantization as oq
    return _reader(oq, data)


# protobuf's hard limit for one file; larger models would need external data files.
_PROTOBUF_LIMIT = 2**31 - 1


def inline_weights(path: Path) -> Path:
    """Rewrite an ONNX file with every initializer inside it: exporters and ORT's optimiser write
    external .data files, and a bundle must hold the model as the files its manifest names."""
    import onnx
    model = onnx.load(str(path), load_external_data=True)
    if model.ByteSize() > _PROTOBUF_LIMIT:
        raise BackendError(f"{path}: {model.ByteSize() / 2**30:.1f} GiB is over ONNX's 2 GiB single-file "
                           "limit; models this large are not supported by edgekit yet")
    for f in path.parent.glob(path.name + "*.data"):
        f.unlink()
    onnx.save(model, str(path))
    return path


def open_session(path: Path | str, threads: int = 1, reference: bool = False):
    """An InferenceSession as a runner. reference=True turns graph optimisations off, so QDQ int8
    runs as quantize-dequantize in float: the exact arithmetic of a CPU whose int8 kernels do not
    saturate (ARM, VNNI). The emulated-ARM tests matched it to 0.0; this no-VNNI host's own int8
    kernels differ by up to 3.8 in the logits on the digits CNN (FIELD_NOTES trap 1)."""
    ort = _ort()
    so = ort.SessionOptions()
    if reference:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    try:
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise BackendError(f"{path}: ONNX Runtime cannot load this model: {str(exc).splitlines()[0][:300]}") from exc
    names = [i.name for i in sess.get_inputs()]

    def run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return sess.run(None, {n: feeds[n] for n in names})
    run.session = sess
    return run


def _fix_static(model, shapes: dict[str, tuple[int, ...]]):
    """Pin every input dimension (NPU-style static shapes, and fixed batch 1)."""
    for vi in model.graph.input:
        if vi.name in shapes:
            for d, size in zip(vi.type.tensor_type.shape.dim, shapes[vi.name]):
                d.Clear()
                d.dim_value = int(size)
    return model


def export_onnx(handle, target, workdir: Path, example: dict[str, np.ndarray]) -> tuple[Path, dict]:
    """Source -> float ONNX file; shared by every backend that starts from ONNX."""
    import onnx
    out = workdir / "export.onnx"
    static = {k: (1,) + tuple(v.shape[1:]) for k, v in example.items()} if target.static_shapes else None
    if handle.onnx_path is not None:
        model = onnx.load(str(handle.onnx_path))
        if static:
            model = _fix_static(model, static)
        onnx.save(model, str(out))
        return out, {"exporter": "copy", "static_shapes": bool(static)}
    if handle.hf_dir is not None and handle.optimum_task:
        try:
            return _export_optimum(handle, target, workdir, example, out)
        except MissingExtraError:
            pass  # torch.onnx below works for the same module
    return _export_torch(handle, target, example, out)


def _export_optimum(handle, target, workdir, example, out):
    try:
        from optimum.exporters.onnx import main_export
    except ImportError as exc:
        raise MissingExtraError("optimum", "hf") from exc
    seq = next(iter(example.values())).shape[1]
    tmp = workdir / "optimum"
    kwargs = dict(no_dynamic_axes=True, batch_size=1, sequence_length=seq) if target.static_shapes else {}
    try:
        with _quiet():
            main_export(str(handle.hf_dir), tmp, task=handle.optimum_task, opset=OPSET,
                        do_validation=False, local_files_only=True, library_name="transformers", **kwargs)
    except Exception as exc:
        raise BackendError(f"{handle.spec}: optimum could not export this model to ONNX: "
                           f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}") from exc
    shutil.move(str(tmp / "model.onnx"), out)
    return out, {"exporter": "optimum", "opset": OPSET, "static_shapes": target.static_shapes}


def _export_torch(handle, target, example, out):
    import torch
    names = handle.input_names
    # A dynamic batch needs an example batch of 2: torch.export specialises a size-1 dim to a constant.
    args = tuple(torch.from_numpy(example[n][:1 if target.static_shapes else 2]) for n in names)
    first_error = None
    # The dynamo exporter is torch's default since 2.9; the TorchScript one stays as a fallback
    # (FIELD_NOTES trap 7). Either way outputs are compared with PyTorch afterwards.
    for dynamo in (True, False):
        kwargs = {}
        if not target.static_shapes:
            if dynamo:
                # positional, one spec per argument: works for forward(x) and forward(*args) alike
                batch = torch.export.Dim("batch")
                kwargs["dynamic_shapes"] = tuple({0: batch} for _ in names)
            else:
                kwargs["dynamic_axes"] = {**{n: {0: "batch"} for n in names}, **{o: {0: "batch"} for o in handle.outputs}}
        try:
            with _quiet():
                torch.onnx.export(handle.module, args, str(out), input_names=names,
                                  output_names=handle.outputs, opset_version=OPSET if dynamo else 17,
                                  dynamo=dynamo, external_data=False, **kwargs)
            return out, {"exporter": "torch.onnx" + (" (dynamo)" if dynamo else " (torchscript)"),
                         "opset": OPSET if dynamo else 17, "static_shapes": target.static_shapes,
                         **({"dynamo_error": first_error} if first_error else {})}
        except Exception as exc:
            first_error = first_error or f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
            last = exc
    op = _unsupported_op(str(last)) or _unsupported_op(first_error or "")
    if op:
        raise BackendError(f"{handle.spec}: cannot export to ONNX for {target.name}: operator {op} is not "
                           "supported by torch.onnx (replace it in the model, or register a custom symbolic)") from last
    raise BackendError(f"{handle.spec}: cannot export to ONNX for {target.name} ({_plain(first_error)})") from last


def _plain(message: str | None) -> str:
    """One line, without the ANSI colours torch's exporter puts in its messages."""
    import re
    return re.sub(r"\x1b\[[0-9;]*m", "", message or "").splitlines()[0][:300] if message else ""


def _unsupported_op(message: str) -> str | None:
    import re
    m = re.search(r"(aten::[\w.]+|aten\.[\w.]+)", message)
    return m.group(1) if m else None


class OnnxRuntimeBackend:
    calibrate_methods = ("minmax", "percentile", "entropy")  # calibrate_method = "auto" tries these
    name = "onnxruntime"
    extra = "onnxruntime"
    model_format = "onnx"
    precisions = ("fp32", "int8", "int8-dynamic")

    def available(self) -> None:
        _ort()

    def export(self, handle, target, workdir: Path, example) -> Artifact:
        raw, details = export_onnx(handle, target, workdir, example)
        ort = _ort()
        out = workdir / "model_fp32.onnx"
        # Basic optimisations only (constant folding, redundant nodes): they are portable across
        # CPUs. Layout and fusion passes (EXTENDED/ALL) are hardware-specific and run at load time.
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        so.optimized_model_filepath = str(out)
        so.log_severity_level = 3
        try:
            ort.InferenceSession(str(raw), so, providers=["CPUExecutionProvider"])
        except Exception as exc:
            msg = str(exc).splitlines()[0][:300]
            op = _missing_kernel(msg)
            raise BackendError(f"{handle.spec}: ONNX Runtime cannot run the exported model for {target.name}"
                               f"{f': no kernel for operator {op}' if op else ''} ({msg})") from exc
        details["graph_optimization"] = "ORT_ENABLE_BASIC (offline)"
        inline_weights(out)
        return Artifact("onnxruntime", out, "fp32", [out], details)

    def quantize(self, artifact: Artifact, handle, target, calibration, workdir: Path) -> Artifact:
        p = target.precision
        if p == "fp32":
            return artifact
        if p == "fp16":
            raise ConfigError(f"{target.path or target.name}: precision 'fp16' is not offered for runtime "
                              "'onnxruntime' on CPU (no fp16 CPU kernels); use fp32, int8, or an openvino/litert target")
        from onnxruntime import quantization as oq
        q = resolved_quantization(target, handle.is_transformer)
        if (p == "int8-dynamic" or q["mode"] == "dynamic") and handle.is_transformer and q["fusions"]:
            fused, fusion = fuse_transformer(artifact.path, handle, workdir / "model_fused.onnx")
            if fused is not None:
                art = self._dynamic(artifact, fused, q, p, workdir / "model_int8.onnx")
                art.details["quantization"]["fusions"] = fusion
                return art
            q = {**q, "fusions_skipped": fusion}
        pre = self._preprocess(artifact, handle, workdir)
        if p == "int8-dynamic" or q["mode"] == "dynamic":
            return self._dynamic(artifact, pre, q, p, workdir / "model_int8.onnx")
        return self._static(artifact, pre, q, calibration, workdir / "model_int8.onnx")

    @staticmethod
    def _dynamic(artifact: Artifact, pre: Path, q: dict, precision: str, out: Path,
                 exclude: list[str] | None = None) -> Artifact:
        """int8 weights; activations quantized per tensor at run time (DynamicQuantizeLinear), so
        there is no calibration range to get wrong: ONNX Runtime's choice for transformers."""
        from onnxruntime import quantization as oq
        keep = ("per_channel", "reduce_range", "activation_type", "weight_type", "op_types")
        q = {"mode": "dynamic", "format": DYNAMIC_FORMAT, **{k: q[k] for k in keep},
             **({"fusions_skipped": q["fusions_skipped"]} if "fusions_skipped" in q else {})}
        ops = q["op_types"]
        if ops:
            # fused nodes take the int8 of what they absorbed: Attention -> QAttention (QKV weights),
            # EmbedLayerNormalization -> QEmbedLayerNormalization (the embedding tables, the Gathers')
            ops = [*ops, *_fused_ops(pre, ("Attention", "EmbedLayerNormalization"))]
        # quantize_dynamic first rewrites every Gemm as MatMul (+ Add), named "<gemm>_MatMul"
        # (onnxruntime/quantization/onnx_model.py, replace_gemm_with_matmul): exclude both names.
        names = [n for name in exclude or [] for n in (name, f"{name}_MatMul")]
        with _quiet():
            oq.quantize_dynamic(str(pre), str(out), per_channel=q["per_channel"],
                                reduce_range=q["reduce_range"], weight_type=_QTYPE[q["weight_type"]](oq),
                                op_types_to_quantize=ops, nodes_to_exclude=names,
                                # fused com.microsoft nodes defeat ONNX shape inference: their outputs are float
                                extra_options={"DefaultTensorType": 1})
        inline_weights(out)
        q["nodes_in_float"] = exclude or []
        return Artifact("onnxruntime", out, precision, [out], {**artifact.details, "quantization": q})

    @staticmethod
    def _preprocess(artifact: Artifact, handle, workdir: Path) -> Path:
        """Shape inference + optimisation before quantization (ORT's recommended first step)."""
        from onnxruntime import quantization as oq
        pre = workdir / "model_pre.onnx"
        if not pre.exists():
            with _quiet():
                try:
                    oq.quant_pre_process(str(artifact.path), str(pre), skip_symbolic_shape=handle.is_transformer)
                except Exception:
                    shutil.copy(artifact.path, pre)  # shape inference is an aid, not a requirement
        return pre

    @staticmethod
    def _static(artifact: Artifact, pre: Path, q: dict, calibration, out: Path,
                exclude: list[str] | None = None) -> Artifact:
        from onnxruntime import quantization as oq
        method = {"minmax": oq.CalibrationMethod.MinMax, "entropy": oq.CalibrationMethod.Entropy,
                  "percentile": oq.CalibrationMethod.Percentile}[q["calibrate_method"]]
        # Ranges are cached per method: the back-off's rungs reuse them instead of calibrating again
        # (excluding a node from quantization does not change any tensor's range).
        cache = out.parent / f"calibration_{q['calibrate_method']}_{len(calibration)}_{pre.stem}.json"
        with _quiet():
            if method == oq.CalibrationMethod.Entropy and not cache.is_file():
                _entropy_ranges(oq, pre, q["op_types"], calibration, cache)
            oq.quantize_static(str(pre), str(out), _reader(oq, calibration), quant_format=oq.QuantFormat.QDQ,
                               calibration_cache_path=str(cache),
                               per_channel=q["per_channel"], reduce_range=q["reduce_range"],
                               activation_type=_QTYPE[q["activation_type"]](oq),
                               weight_type=_QTYPE[q["weight_type"]](oq),
                               calibrate_method=method, op_types_to_quantize=q["op_types"],
                               nodes_to_exclude=exclude or [],
                               extra_options={"CalibTensorRangeSymmetric": False})
        inline_weights(out)
        q = {**q, "mode": "static", "calibration_samples": len(calibration), "nodes_in_float": exclude or []}
        return Artifact("onnxruntime", out, "int8", [out], {**artifact.details, "quantization": q})

    def backoff(self, artifact: Artifact, handle, target, calibration, validation, workdir: Path, evaluate,
                max_drop: float):
        """Accuracy-aware int8: yield (artifact, layers kept in float) with 1, 2, 4, ... of the most
        sensitive layers in float. Sensitivity comes from ONNX Runtime's qdq_loss_debug: the SQNR
        (dB) a layer's output loses against the float model, minus what its input had already lost,
        i.e. the quantization noise that layer itself adds, charged by the share of the model's
        MACs the layer would run in float (rank_by_cost)."""
        q = resolved_quantization(target, handle.is_transformer)
        pre = self._preprocess(artifact, handle, workdir)
        dynamic = target.precision == "int8-dynamic" or q["mode"] == "dynamic"
        first = workdir / "model_int8.onnx"
        if dynamic:
            # qdq_loss_debug pairs QuantizeLinear/DequantizeLinear outputs with float tensors: the
            # ranking comes from a static QDQ twin with the same weights settings.
            first = self._static(artifact, pre, {**q, "mode": "static", "calibrate_method": "minmax"},
                                 calibration.head(min(len(calibration), 16)), workdir / "model_rank_qdq.onnx").path
        ranking = _sensitivity(pre, first, calibration.head(min(len(calibration), 16)), workdir)
        per_channel_rung = not q["per_channel"]
        if per_channel_rung:
            # First rung, before any layer goes back to float: per-channel weight scales cost no
            # size and ~1% time (paired ratio 1.013 vs per-tensor on MiniLM), and lifted MiniLM's
            # embeddings from mean cosine 0.958 to 0.993 (recall@10 0.780 -> 0.894; README, issue 12).
            # On the fused graph where the first attempt was fused (the 3-layer MiniLM student:
            # tuning top-1 0.8688 -> 0.8750, held-out = its fp32 figure).
            q = {**q, "per_channel": True}
            out = workdir / "model_int8_per_channel.onnx"
            fused = workdir / "model_fused.onnx"
            src = fused if dynamic and fused.exists() else pre
            art = (self._dynamic(artifact, src, q, target.precision, out) if dynamic else
                   self._static(artifact, pre, q, calibration, out))
            if src is fused:
                art.details["quantization"]["fusions"] = "as the first attempt (model_fused.onnx)"
            art.details["backoff"] = "per-channel weights"
            yield art, []
        if not dynamic:
            current = art if per_channel_rung else Artifact("onnxruntime", first, "int8", [first],
                                                            {**artifact.details, "quantization": q})
            q = yield from self._calibration_rungs(artifact, pre, q, calibration, workdir, evaluate, current)
        k = 1
        while ranking and k <= len(ranking):
            excluded = ranking[:k]
            out = workdir / f"model_int8_float{k}.onnx"
            yield (self._dynamic(artifact, pre, q, target.precision, out, excluded) if dynamic else
                   self._static(artifact, pre, q, calibration, out, excluded)), excluded
            if k == len(ranking):
                break
            k = min(2 * k, len(ranking))

    def _calibration_rungs(self, artifact: Artifact, pre: Path, q: dict, calibration, workdir: Path, evaluate,
                           current: Artifact):
        """Static int8, before any layer goes back to float: the other calibration methods, each
        measured (the caller stops at the first within budget). Returns the settings the layer
        rungs continue with: the best-scoring method's (ties keep the profile's). Which method wins
        depends on the model: on the MiniLM example's S8S8 QDQ, min-max and entropy lost 1.33
        points, percentile 0.67 (benchmarks/results/minilm_int8_study.md)."""
        from ..targets import CALIBRATE_METHODS
        best, best_score = q, (evaluate(current) if evaluate is not None else None)
        for method in [m for m in CALIBRATE_METHODS if m != q["calibrate_method"]]:
            trial = {**q, "calibrate_method": method}
            art = self._static(artifact, pre, trial, calibration, workdir / f"model_int8_{method}.onnx")
            art.details["backoff"] = f"calibrate_method {method}"
            yield art, []
            if evaluate is not None:
                score = evaluate(art)
                if score > best_score:
                    best, best_score = trial, score
        return best

    def open(self, artifact: Artifact, threads: int = 1, reference: bool = False):
        return open_session(artifact.path, threads, reference=reference and artifact.precision.startswith("int8"))


# TensorRT's entropy calibration: a 2048-bin histogram, thresholds searched over 128 quantized bins
# (Migacz, "8-bit Inference with TensorRT", GTC 2017). quantize_static builds its entropy
# calibrator with num_bins = num_quantized_bins = 128 and passes no option to change that, so its
# KL search has a single candidate, the full range: "entropy" came out byte-identical to min-max
# (onnxruntime 1.32, tests/backends/test_onnxruntime.py). The ranges are computed here instead and
# handed to quantize_static through its calibration cache.
_ENTROPY_BINS, _ENTROPY_QUANTIZED_BINS = 2048, 128


def _entropy_ranges(oq, pre: Path, op_types, calibration, cache: Path) -> None:
    import tempfile

    from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data
    with tempfile.TemporaryDirectory(prefix="edgekit-entropy-") as tmp:
        calibrator = create_calibrator(pre, op_types, augmented_model_path=str(Path(tmp) / "augmented.onnx"),
                                       calibrate_method=oq.CalibrationMethod.Entropy,
                                       extra_options={"symmetric": False, "num_bins": _ENTROPY_BINS,
                                                      "num_quantized_bins": _ENTROPY_QUANTIZED_BINS})
        calibrator.collect_data(_reader(oq, calibration))
        save_tensors_data(calibrator.compute_data(), cache)


def _reader(oq, data):
    """A CalibrationDataReader over a Dataset, one sample per batch (built here so that
    onnxruntime is imported only when a profile needs it)."""

    class Reader(oq.CalibrationDataReader):
        def __init__(self):
            self.i = 0

        def get_next(self):
            if self.i >= len(data):
                return None
            self.i += 1
            return data.sample(self.i - 1)

        def rewind(self):
            self.i = 0

    return Reader()


def _missing_kernel(message: str) -> str | None:
    import re
    m = re.search(r"Could not find an implementation for (\w+)", message) or \
        re.search(r"op_type[=:]\s*'?(\w+)", message)
    return m.group(1) if m else None
