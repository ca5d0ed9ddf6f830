"""Export a causal LM with its KV cache, and compress its weights, per runtime.

ONNX Runtime: optimum's exporter (task text-generation-with-past: past_key_values.<i>.key/value in,
present.<i>.key/value out), then ONNX Runtime's own weight-only quantizer (MatMulNBitsQuantizer):
MatMul weights to int4 blocks (MatMulNBits; accuracy_level 4 = int8 activations, the fast kernels),
the token embedding table and the LM head to int8 (GatherBlockQuantized / MatMulNBits 8-bit), the
recipe the anchors use (ONNX Runtime GenAI's builder; llama.cpp keeps its output tensor >= Q6_K).
Methods: "rtn" (round to nearest, symmetric or not) and "hqq" (half-quadratic, ORT's HQQ; data-free).

OpenVINO: the same ONNX export converted by ov.convert_model, weights compressed by NNCF
(compress_weights: int4 sym/asym in groups, embeddings and the last layer int8 by default), "awq"
= NNCF's data-aware AWQ + scale estimation on the calibration text, then made stateful (the KV cache
moves into the infer request's state: no copies of it through Python per token), as optimum-intel does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..backends.base import quiet
from ..errors import BackendError

LOGGERS = ("optimum", "transformers", "torch.onnx", "onnxruntime", "nncf", "onnxruntime.quantization")


def export_onnx(hf_dir: Path, out: Path) -> Path:
    """The float32 model with explicit KV inputs/outputs: out/model.onnx."""
    import logging
    from optimum.exporters.onnx import main_export
    with quiet(*LOGGERS):
        logging.getLogger("onnxruntime.quantization").setLevel(logging.ERROR)
        try:
            main_export(str(hf_dir), output=str(out), task="text-generation-with-past", do_validation=False)
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise BackendError(f"{hf_dir}: the ONNX export with KV cache failed ({type(exc).__name__}: {first})") from exc
    path = out / "model.onnx"
    if not path.is_file():
        raise BackendError(f"{hf_dir}: optimum wrote no model.onnx")
    return path


def kv_names(path: Path) -> list[tuple[str, str]]:
    """(past input, present output) pairs of an exported model, in layer order."""
    import onnx
    m = onnx.load(str(path), load_external_data=False)
    outs = {o.name for o in m.graph.output}
    pairs = []
    for i in m.graph.input:
        if i.name.startswith("past_key_values."):
            present = "present." + i.name[len("past_key_values."):]
            if present not in outs:
                raise BackendError(f"{path}: input {i.name} has no matching output {present}")
            pairs.append((i.name, present))
    if not pairs:
        raise BackendError(f"{path}: no past_key_values inputs (exported without KV cache)")
    return pairs


def _untie_head(model) -> None:
    """optimum exports a tied LM head as MatMul(x, Transpose(embedding)): give the MatMul its own
    constant so the quantizer can compress it (it only takes constant weights)."""
    from onnx import numpy_helper
    inits = {t.name: t for t in model.graph.initializer}
    consumers: dict[str, list] = {}
    for n in model.graph.node:
        for x in n.input:
            consumers.setdefault(x, []).append(n)
    for n in list(model.graph.node):
        if n.op_type != "Transpose" or n.input[0] not in inits:
            continue
        users = consumers.get(n.output[0], [])
        if not users or not all(u.op_type == "MatMul" for u in users):
            continue
        w = numpy_helper.to_array(inits[n.input[0]])
        perm = [a.ints for a in n.attribute if a.name == "perm"]
        t = np.ascontiguousarray(np.transpose(w, list(perm[0]) if perm else None))
        model.graph.initializer.append(numpy_helper.from_array(t, n.output[0] + "_const"))
        for u in users:
            u.input[:] = [n.output[0] + "_const" if x == n.output[0] else x for x in u.input]
        model.graph.node.remove(n)


def _head_and_embeddings(model, vocab: int) -> tuple[list[str], list[str]]:
    inits = {t.name: list(t.dims) for t in model.graph.initializer}
    head = [n.name for n in model.graph.node if n.op_type == "MatMul" and "logits" in n.output
            or (n.op_type == "MatMul" and "lm_head" in n.name)]
    emb = [n.name for n in model.graph.node if n.op_type == "Gather" and n.input[0] in inits
           and inits[n.input[0]] and inits[n.input[0]][0] == vocab]
    return head, emb


def _nncf_mode(gen):
    import nncf
    M = nncf.CompressWeightsMode
    if gen.weights == "int4":
        return {"mode": M.INT4_SYM if gen.symmetric else M.INT4_ASYM, "group_size": gen.block_size, "ratio": gen.ratio}
    return {"mode": M.INT8_SYM if gen.symmetric else M.INT8_ASYM}


def _nncf_compress(model, gen, table: str, calib: list[dict] | None, where: Path, ignored=None):
    """NNCF compress_weights on an ov.Model or an onnx.ModelProto: int4 in groups, embeddings and the
    LM head at NNCF's backup precision (int8) unless told otherwise; awq = AWQ + scale estimation on
    the calibration windows (data-aware)."""
    import nncf
    kw = _nncf_mode(gen)
    if ignored is not None:
        kw["ignored_scope"] = ignored
    if table == "fp32":
        kw["backup_mode"] = nncf.BackupMode.NONE
    elif table == "int4" and gen.weights == "int4":
        kw["all_layers"] = True
    if gen.method == "awq" and gen.weights == "int4":
        if not calib:
            raise BackendError("generation.method = 'awq' needs calibration text")
        kw.update(dataset=nncf.Dataset(calib), awq=True, scale_estimation=True, subset_size=len(calib))
    try:
        return nncf.compress_weights(model, **kw)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise BackendError(f"{where}: NNCF weight compression failed ({type(exc).__name__}: {first})") from exc


def quantize_onnx(fp32: Path, gen, table: str, head_bits: str, vocab: int, out: Path,
                  calib: list[dict] | None = None) -> tuple[Path, dict]:
    """Weight-only int4/int8 for ONNX Runtime; returns (path, details).

    Body MatMuls: rtn/hqq through ONNX Runtime's own MatMulNBitsQuantizer; awq through NNCF's ONNX
    backend (AWQ + scale estimation on calibration text), which writes the same MatMulNBits nodes:
    ONNX Runtime's own data-aware int4 (GPTQ) runs through Intel Neural Compressor, whose ONNX path is
    deprecated (FIELD_NOTES trap 8). The embedding table always goes through ONNX Runtime's quantizer
    and the LM head always go through ONNX Runtime's quantizer (GatherBlockQuantized, MatMulNBits):
    NNCF leaves them as a DequantizeLinear of the whole matrix, run at every step (measured: decode
    18.8 vs 73.8 tokens/s on SmolLM2-135M, one thread)."""
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import (DefaultWeightOnlyQuantConfig,
                                                                 HQQWeightOnlyQuantConfig, MatMulNBitsQuantizer)
    bits = {"int4": 4, "int8": 8}
    model = onnx.load(str(fp32))
    _untie_head(model)
    head, emb = _head_and_embeddings(model, vocab)
    details: dict = {"method": gen.method if gen.weights != "fp32" else None, "weights": gen.weights,
                     "embeddings": table, "lm_head": head_bits, "block_size": gen.block_size,
                     "symmetric": gen.symmetric if gen.method != "hqq" else False,
                     "accuracy_level": gen.accuracy_level, "data_aware": False}

    def ort(model, nodes, op, precision, exclude=False):
        if gen.method == "hqq" and op == "MatMul" and exclude:
            algo = HQQWeightOnlyQuantConfig(block_size=gen.block_size, bits=bits[precision])
        else:
            algo = DefaultWeightOnlyQuantConfig(block_size=gen.block_size, is_symmetric=gen.symmetric,
                                                accuracy_level=gen.accuracy_level, bits=bits[precision],
                                                op_types_to_quantize=(op,))
        q = (MatMulNBitsQuantizer(model, algo_config=algo, nodes_to_exclude=nodes) if exclude else
             MatMulNBitsQuantizer(model, algo_config=algo, nodes_to_include=nodes))
        q.process()
        return q.model.model

    with quiet(*LOGGERS):
        if gen.weights != "fp32" and gen.method == "awq":
            import nncf
            model = _nncf_compress(model, gen, "fp32", calib, fp32,
                                   ignored=nncf.IgnoredScope(names=head + emb, validate=False))
            _pack_zero_points(model)
            details.update(data_aware=True, calibration_windows=len(calib or []), ratio=gen.ratio,
                           quantizer=f"nncf {nncf.__version__} compress_weights (ONNX backend: MatMulNBits, body) + "
                                     "onnxruntime MatMulNBitsQuantizer (LM head, embedding table)")
        else:
            if gen.weights != "fp32":
                model = ort(model, head, "MatMul", gen.weights, exclude=True)
            details["quantizer"] = "onnxruntime.quantization.matmul_nbits_quantizer.MatMulNBitsQuantizer"
        if head_bits != "fp32" and head:
            model = ort(model, head, "MatMul", head_bits)
        if table != "fp32" and emb:
            model = ort(model, emb, "Gather", table)
        _set_accuracy_level(model, gen.accuracy_level)  # NNCF writes 0; ORT's HQQ config takes none
    path = out / "model.onnx"
    onnx.save(model, str(path))
    ops = [n.op_type for n in model.graph.node]
    details.update(matmul_nbits=ops.count("MatMulNBits"), gather_block_quantized=ops.count("GatherBlockQuantized"),
                   float_matmul=ops.count("MatMul"))
    return path, details


def _pack_zero_points(model) -> int:
    """NNCF 3.4's ONNX backend writes 4-bit MatMulNBits zero points one per byte ([N, blocks]);
    ONNX Runtime reads them packed two per byte, low nibble first ([N, ceil(blocks / 2)]) and refuses
    the model otherwise ("zero_points initializer shape ... does not match"). Returns nodes fixed."""
    from onnx import helper, numpy_helper
    inits = {t.name: t for t in model.graph.initializer}
    fixed = 0
    for n in model.graph.node:
        if n.op_type != "MatMulNBits" or len(n.input) < 4 or n.input[3] not in inits:
            continue
        a = {x.name: helper.get_attribute_value(x) for x in n.attribute}
        if a.get("bits", 4) != 4:
            continue
        blocks = -(-a["K"] // a["block_size"])
        t = inits[n.input[3]]
        zp = numpy_helper.to_array(t)
        if zp.dtype != np.uint8 or zp.reshape(-1).size != a["N"] * blocks:
            continue
        zp = zp.reshape(a["N"], blocks)
        if blocks % 2:
            zp = np.concatenate([zp, np.full((a["N"], 1), 8, np.uint8)], axis=1)
        packed = (zp[:, 0::2] & 0x0F) | ((zp[:, 1::2] & 0x0F) << 4)
        t.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(packed.astype(np.uint8)), t.name))
        fixed += 1
    return fixed


def _set_accuracy_level(model, level: int) -> None:
    from onnx import helper
    for n in model.graph.node:
        if n.op_type == "MatMulNBits":
            kept = [a for a in n.attribute if a.name != "accuracy_level"]
            del n.attribute[:]
            n.attribute.extend(kept + [helper.make_attribute("accuracy_level", level)])


def calibration_items(windows: np.ndarray, pairs, dims: dict) -> list[dict]:
    """NNCF dataset items: each calibration window as a fresh sequence (empty past)."""
    empty = np.zeros((1, dims["kv_heads"], 0, dims["head_dim"]), np.float32)
    items = []
    for w in windows:
        n = len(w)
        item = {"input_ids": w[None, :].astype(np.int64), "attention_mask": np.ones((1, n), np.int64),
                "position_ids": np.arange(n, dtype=np.int64)[None, :]}
        item.update({p: empty for p, _ in pairs})
        items.append(item)
    return items


def export_openvino(fp32: Path, gen, table: str, pairs, calib: list[dict] | None, out: Path) -> tuple[Path, dict]:
    """OpenVINO IR, weights compressed by NNCF, stateful; returns (model.xml, details)."""
    import nncf
    import openvino as ov
    from openvino._offline_transformations import apply_make_stateful_transformation
    with quiet(*LOGGERS):
        model = ov.convert_model(str(fp32))
        # Batch 1 everywhere: the state made from a past input starts as zeros of its shape, and a
        # dynamic batch starts it at batch 0 (optimum-intel adds a beam_idx input for this instead).
        model.reshape({i.get_any_name(): ov.PartialShape([1] + list(i.get_partial_shape())[1:])
                       for i in model.inputs})
        details: dict = {"weights": gen.weights, "embeddings": table, "lm_head": table, "method": None,
                         "compressor": f"nncf {nncf.__version__} compress_weights"}
        if gen.weights != "fp32":
            model = _nncf_compress(model, gen, table, calib, fp32)
            details.update(method=gen.method if gen.weights == "int4" else "rtn", block_size=gen.block_size,
                           symmetric=gen.symmetric, ratio=gen.ratio,
                           data_aware=gen.method == "awq", calibration_windows=len(calib or []))
        apply_make_stateful_transformation(model, dict(pairs))
        path = out / "model.xml"
        ov.save_model(model, str(path), compress_to_fp16=False)
    details["stateful"] = True
    return path, details
