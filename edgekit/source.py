"""Load a source model into a ModelHandle: a PyTorch module (or an ONNX file) plus what edgekit
must know about it (input names and dtypes, output names, task, a content hash).

Accepted sources, and how each is loaded without unpickling anything:
- ``path/to/file.py:factory`` or ``package.module:factory``: the factory is called with no
  arguments and must return a ``torch.nn.Module`` (weights loaded by the factory itself);
- ``model.pt2``: a ``torch.export`` program (``torch.export.load``: weights only);
- a Hugging Face model directory (config.json + model.safetensors; ``use_safetensors=True``);
- ``model.onnx``: checked with ``onnx.checker``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import importlib.util
import inspect
import json
import logging
import re
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from .backends.base import quiet
from .errors import MissingExtraError, SourceError
from .hashing import sha256_file, sha256_path, sha256_state_dict


@dataclasses.dataclass
class TensorSpec:
    name: str
    shape: tuple[int | None, ...] | None = None  # None: learnt from the data
    dtype: str | None = None                     # numpy dtype name; None: learnt from the data

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": None if self.shape is None else list(self.shape),
                "dtype": self.dtype}


@dataclasses.dataclass
class ModelHandle:
    kind: str                       # "python" | "pt2" | "hf" | "onnx"
    spec: str                       # what the user passed
    sha256: str
    inputs: list[TensorSpec]
    outputs: list[str]
    module: Any = None              # torch.nn.Module, eval mode (None for ONNX sources)
    onnx_path: Path | None = None   # ONNX sources
    hf_dir: Path | None = None      # HF sources: tokenizer + config live here
    task: str = "classification"   # edgekit/tasks: "classification" | "feature-extraction"
    optimum_task: str | None = None  # HF sources optimum can export as they are (None: export `module`)
    is_transformer: bool = False
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)
    # integer inputs that index a table (token ids -> embedding): input name -> rows in the table
    id_limits: dict[str, int] = dataclasses.field(default_factory=dict)

    @property
    def input_names(self) -> list[str]:
        return [i.name for i in self.inputs]

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "path": self.spec, "sha256": self.sha256, "task": self.task,
                "transformer": self.is_transformer,
                "inputs": [i.to_dict() for i in self.inputs], "outputs": self.outputs,
                **self.metadata}

    def runner(self):
        """A callable feeding a dict of numpy arrays, returning the list of numpy outputs."""
        if self.onnx_path is not None:
            from .backends.onnxruntime import open_session
            return open_session(self.onnx_path, threads=0)
        return _torch_runner(self.module, self.input_names)


def _torch_runner(module, names: list[str]):
    import torch

    def run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        with torch.inference_mode():
            out = module(*[torch.from_numpy(np.ascontiguousarray(feeds[n])) for n in names])
        if isinstance(out, dict):
            out = list(out.values())
        elif hasattr(out, "logits"):
            out = [out.logits]
        elif isinstance(out, (tuple, list)):
            out = list(out)
        else:
            out = [out]
        return [o.detach().numpy() for o in out]
    return run


def _forward_names(module) -> list[str]:
    params = inspect.signature(module.forward).parameters.values()
    names = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
             and p.default is inspect.Parameter.empty]
    return names or ["x"]


def _one_line(exc: BaseException) -> str:
    """A library's exception as one line: type, first line of its message, C++ enforce prefix and
    miniz boilerplate dropped (the CLI's error is a single line)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    text = lines[0] if lines else ""
    if text.endswith(":") and len(lines) > 1:  # "Error(s) in loading state_dict for X:" + the first one
        text += " " + lines[1]
    text = re.sub(r"^\[enforce fail at [^\]]*\]\s*\.?\s*", "", text)
    text = text.split(". This is an internal miniz error")[0]
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__


def _check_zip(path: Path) -> None:
    """A .pt2 is a zip archive. torch's reader neither needs the central directory to be whole
    nor checks CRCs, so a file damaged in transfer can load with silently wrong weights: check
    every member's CRC-32 first (one read of the file)."""
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise SourceError(f"{path}: not a readable torch.export program (.pt2): not a whole zip archive "
                          f"(truncated, or not written by torch.export.save): {_one_line(exc)}") from exc
    if bad is not None:
        raise SourceError(f"{path}: not a readable torch.export program (.pt2): member {bad!r} fails its "
                          "CRC-32 check (the file is corrupt or was altered after saving)")


@contextlib.contextmanager
def _kept_log(name: str):
    """Collect a logger's records instead of printing them (the caller picks the cause)."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record)

    log = logging.getLogger(name)
    saved = log.handlers[:], log.propagate, log.level
    log.handlers, log.propagate = [Keep()], False
    log.setLevel(logging.WARNING)  # the cause is logged as a warning: it must reach Keep
    try:
        yield records
    finally:
        log.handlers, log.propagate = saved[0], saved[1]
        log.setLevel(saved[2])


def _load_factory(spec: str) -> ModelHandle:
    target, _, fn_name = spec.rpartition(":")
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise SourceError(f"{target}: model file not found")
        mod_name = f"_edgekit_src_{path.stem}"
        loader = importlib.util.spec_from_file_location(mod_name, path)
        module = importlib.util.module_from_spec(loader)
        sys.modules[mod_name] = module
        try:
            loader.loader.exec_module(module)
        except Exception as exc:  # user code: any failure is theirs to see, cause kept
            raise SourceError(f"{target}: importing the model file failed: {type(exc).__name__}: {exc}") from exc
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as exc:
            raise SourceError(f"{spec}: cannot import module {target!r} ({exc}); "
                              "give path/to/file.py:factory or package.module:factory") from exc
    factory = getattr(module, fn_name, None)
    if not callable(factory):
        raise SourceError(f"{spec}: {target} has no callable {fn_name!r}")
    try:
        model = factory()
    except Exception as exc:
        raise SourceError(f"{spec}: factory {fn_name}() raised {type(exc).__name__}: {exc}") from exc
    import torch
    if not isinstance(model, torch.nn.Module):
        raise SourceError(f"{spec}: factory {fn_name}() returned {type(model).__name__}, expected a torch.nn.Module")
    model.eval()
    names = _forward_names(model)
    # A factory says what its model is for with an attribute (the output shape cannot: N x 10 may be
    # logits or a 10-d embedding); --task overrides it.
    task = getattr(model, "edgekit_task", None) or "classification"
    return ModelHandle("python", spec, sha256_state_dict(model), [TensorSpec(n) for n in names],
                       [OUTPUT_NAME.get(task, "logits")], module=model, task=task)


def _load_pt2(path: Path) -> ModelHandle:
    import torch
    _check_zip(path)
    # torch.export.load logs each failed attempt as a warning with its own traceback, then raises
    # "check the warnings above": keep that logged cause for the one-line error, print nothing.
    with quiet("torch._export", "torch.utils._pytree"), _kept_log("torch.export") as logged:
        try:
            ep = torch.export.load(str(path))
            module = ep.module()
        except Exception as exc:
            cause = next((r.exc_info[1] for r in logged if r.exc_info), None)
            why = _one_line(cause or exc)
            if cause is None and "warnings above" in str(exc):  # a whole zip without a program in it
                why = "the archive holds no exported program (was it written by torch.export.save?)"
            raise SourceError(f"{path}: not a readable torch.export program (.pt2): {why}") from exc
    inputs = []
    for node in ep.graph.nodes:
        if node.op == "placeholder" and node.name in ep.graph_signature.user_inputs:
            val = node.meta.get("val")
            shape = tuple(int(d) if isinstance(d, int) else None for d in val.shape) if val is not None else None
            dtype = str(val.dtype).replace("torch.", "") if val is not None else None
            inputs.append(TensorSpec(node.name, shape, dtype))
    return ModelHandle("pt2", str(path), sha256_file(path), inputs, ["logits"], module=module)


# The output name edgekit gives a model's first output, per task (python factories, .pt2, HF).
OUTPUT_NAME = {"classification": "logits", "feature-extraction": "embedding"}
# ONNX output names that mark a feature extractor when --task is not given.
_EMBEDDING_OUTPUTS = ("embedding", "embeddings", "sentence_embedding", "pooler_output")

_HF_LOGITS = None
_HF_EMBEDDING = None


def _hf_logits_class():
    """The wrapper class, built on first use so that importing this module does not import torch."""
    global _HF_LOGITS
    if _HF_LOGITS is None:
        import torch

        class HFLogits(torch.nn.Module):
            """The classifier's logits tensor alone: exporters and runners want tensors, not ModelOutput."""

            def __init__(self, inner, names):
                super().__init__()
                self.inner = inner
                self.names = list(names)

            def forward(self, *args):
                return self.inner(**dict(zip(self.names, args))).logits

        HFLogits.__module__, HFLogits.__qualname__ = __name__, "HFLogits"
        _HF_LOGITS = HFLogits
    return _HF_LOGITS


def _hf_embedding_class():
    """Sentence-encoder wrapper: the encoder's last hidden state, mean-pooled over the attention
    mask (padding excluded) and optionally L2-normalised, so that pooling is part of the artifact
    (sentence-transformers' Pooling + Normalize modules, the way all-MiniLM-L6-v2 is meant to run)."""
    global _HF_EMBEDDING
    if _HF_EMBEDDING is None:
        import torch

        class HFEmbedding(torch.nn.Module):
            def __init__(self, inner, names, pooling: str = "mean", normalize: bool = False):
                super().__init__()
                self.inner = inner
                self.names = list(names)
                self.pooling = pooling
                self.normalize = normalize

            def forward(self, *args):
                feeds = dict(zip(self.names, args))
                hidden = self.inner(**feeds).last_hidden_state
                if self.pooling == "cls":
                    pooled = hidden[:, 0]
                else:
                    mask = feeds["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                    # clamp: an all-padding row would divide by zero (sentence-transformers uses 1e-9)
                    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                if self.normalize:
                    pooled = torch.nn.functional.normalize(pooled, p=2.0, dim=1)
                return pooled

        HFEmbedding.__module__, HFEmbedding.__qualname__ = __name__, "HFEmbedding"
        _HF_EMBEDDING = HFEmbedding
    return _HF_EMBEDDING


def _sentence_pooling(path: Path) -> tuple[str, bool]:
    """(pooling, normalize) from a sentence-transformers directory's modules.json and
    1_Pooling/config.json; plain HF encoders get mean pooling without normalisation."""
    modules_file = path / "modules.json"
    if not modules_file.is_file():
        return "mean", False
    try:
        modules = json.loads(modules_file.read_text())
        types = [m["type"] for m in modules]
        pool_dir = next((m["path"] for m in modules if m["type"].endswith(".Pooling")), None)
        cfg = json.loads((path / pool_dir / "config.json").read_text()) if pool_dir else {}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SourceError(f"{modules_file}: not a readable sentence-transformers module list ({exc})") from exc
    modes = [k for k, v in cfg.items() if k.startswith("pooling_mode_") and v]
    mode = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls"}
    if len(modes) > 1 or (modes and modes[0] not in mode):
        raise SourceError(f"{path / pool_dir / 'config.json'}: pooling {', '.join(modes)} is not supported; "
                          "edgekit pools with pooling_mode_mean_tokens or pooling_mode_cls_token")
    return (mode[modes[0]] if modes else "mean"), any(t.endswith(".Normalize") for t in types)


def __getattr__(name: str):
    """``edgekit.source.HFLogits`` as a module-level name, so that a wrapped model pickles (the
    benchmarks cache compressed students with torch.save)."""
    if name == "HFLogits":
        return _hf_logits_class()
    if name == "HFEmbedding":
        return _hf_embedding_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def hf_task(cfg: dict, path: Path, task: str | None) -> str:
    """A directory's task: a head (architectures "...ForSequenceClassification") classifies, a bare
    encoder ("BertModel", a sentence-transformers directory) extracts features; --task overrides,
    except that a bare encoder has no class scores to classify with."""
    arch = (cfg.get("architectures") or [""])[0]
    headless = "For" not in arch
    if task is None:
        return "feature-extraction" if headless else "classification"
    if task == "classification" and headless:
        raise SourceError(f"{path}: {arch or 'this model'} has no classification head, so it cannot classify "
                          "labelled data (it emits embeddings): use --task feature-extraction, or give a "
                          "directory saved from AutoModelForSequenceClassification")
    return task


def _load_hf(path: Path, task: str | None = None) -> ModelHandle:
    try:
        import transformers
    except ImportError as exc:
        raise MissingExtraError("transformers", "hf", "Hugging Face model directories") from exc
    import torch
    cfg_file = path / "config.json"
    try:
        cfg = json.loads(cfg_file.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise SourceError(f"{cfg_file}: not a readable Hugging Face config ({exc})") from exc
    if not (path / "model.safetensors").is_file():
        raise SourceError(f"{path}: no model.safetensors; edgekit loads safetensors only "
                          "(never unpickles pytorch_model.bin): save with save_pretrained(safe_serialization=True)")
    # from_pretrained imports optional kernels (torchao) that log load failures and deprecation
    # warnings on stderr: a bad directory must end in our one line only.
    task = hf_task(cfg, path, task)
    auto = (transformers.AutoModelForSequenceClassification if task == "classification"
            else transformers.AutoModel)
    with quiet("transformers", "torchao", "torch.utils._pytree", "safetensors"):
        try:
            model = auto.from_pretrained(str(path), use_safetensors=True, local_files_only=True)
        except Exception as exc:
            raise SourceError(f"{path}: loading the Hugging Face model failed: {_one_line(exc)}") from exc
        try:
            tok = transformers.AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        except Exception as exc:
            raise SourceError(f"{path}: loading the tokenizer failed ({_one_line(exc)}); the directory needs the "
                              "tokenizer files too (tokenizer.save_pretrained(DIR))") from exc

    names = [n for n in tok.model_input_names]

    arch = (cfg.get("architectures") or ["?"])[0]
    if task == "classification":
        wrapped = _hf_logits_class()(model, names).eval()
        metadata = {"architecture": arch, "num_labels": model.config.num_labels,
                    "id2label": {str(k): v for k, v in model.config.id2label.items()}}
    else:
        if "attention_mask" not in names:
            raise SourceError(f"{path}: the tokenizer gives no attention_mask; mean pooling needs it to "
                              "leave padding out")
        pooling, normalize = _sentence_pooling(path)
        wrapped = _hf_embedding_class()(model, names, pooling, normalize).eval()
        metadata = {"architecture": arch, "pooling": pooling, "normalize": normalize,
                    "embedding_dim": int(getattr(model.config, "hidden_size", 0)) or None}
    handle = ModelHandle("hf", str(path), sha256_path(path),
                         [TensorSpec(n, None, "int64") for n in names], [OUTPUT_NAME[task]],
                         module=wrapped, hf_dir=path, is_transformer=True, task=task,
                         # optimum exports classifiers as they are; pooling lives in `wrapped` only
                         optimum_task="text-classification" if task == "classification" else None)
    metadata["num_hidden_layers"] = int(getattr(model.config, "num_hidden_layers", 0) or 0) or None
    handle.metadata = metadata
    handle.id_limits = {n: int(v) for n, v in (("input_ids", getattr(model.config, "vocab_size", None)),
                                               ("token_type_ids", getattr(model.config, "type_vocab_size", None)))
                        if n in names and isinstance(v, int) and v > 0}
    return handle


def _load_onnx(path: Path) -> ModelHandle:
    import onnx
    try:
        model = onnx.load(str(path), load_external_data=True)
        onnx.checker.check_model(model)
    except Exception as exc:
        raise SourceError(f"{path}: not a valid ONNX model ({_one_line(exc)})") from exc
    init = {i.name for i in model.graph.initializer}
    inputs = []
    for vi in model.graph.input:
        if vi.name in init:
            continue
        t = vi.type.tensor_type
        shape = tuple(d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim)
        dtype = onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name
        inputs.append(TensorSpec(vi.name, shape, dtype))
    outputs = [o.name for o in model.graph.output]
    ops = {n.op_type for n in model.graph.node}
    task = "feature-extraction" if outputs and outputs[0].lower() in _EMBEDDING_OUTPUTS else "classification"
    return ModelHandle("onnx", str(path), sha256_file(path), inputs, outputs, onnx_path=path, task=task,
                       is_transformer=bool(ops & {"Attention", "LayerNormalization", "Softmax"} and "MatMul" in ops))


TASK_NAMES = tuple(OUTPUT_NAME)


def load(source: str | Path, task: str | None = None) -> ModelHandle:
    """Load any supported source model (see module docstring). `task` overrides what the source
    says it is for (edgekit/tasks; detected otherwise: HF head or none, a factory's edgekit_task
    attribute, an ONNX output named like an embedding)."""
    if task is not None and task not in TASK_NAMES:
        raise SourceError(f"--task {task!r} is not valid; expected one of {', '.join(TASK_NAMES)}")
    s = str(source)
    p = Path(s)
    if p.is_dir():
        return _load_hf(p, task)
    handle = _load_file(s, p)
    if task is not None and task != handle.task:
        handle.task = task
        if handle.kind != "onnx":  # edgekit names these outputs; an ONNX file keeps its own
            handle.outputs = [OUTPUT_NAME[task]]
    return handle


def _load_file(s: str, p: Path) -> ModelHandle:
    if s.endswith(".onnx"):
        if not p.is_file():
            raise SourceError(f"{s}: model file not found")
        return _load_onnx(p)
    if s.endswith(".pt2"):
        if not p.is_file():
            raise SourceError(f"{s}: model file not found")
        return _load_pt2(p)
    if ":" in s and not s.endswith(":"):
        return _load_factory(s)
    if not p.exists():
        raise SourceError(f"{s}: source model not found; give a .pt2, a .onnx, a Hugging Face "
                          "model directory, or path/to/file.py:factory")
    raise SourceError(f"{s}: unsupported source model; give a .pt2, a .onnx, a Hugging Face "
                      "model directory, or path/to/file.py:factory")
