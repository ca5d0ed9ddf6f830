"""Target profiles: where a bundle will run and what it must fit in.

Profiles are TOML files (format in docs/FORMATS.md and the README). A ``--target`` is either a
profile name, looked up in the shipped profiles, or a path to a TOML file. Every key is checked:
an unknown key or a value of the wrong type is a ConfigError naming the file and the key.
"""

from __future__ import annotations

import dataclasses
import re
import sys
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .tomlfile import read_toml

ARCHES = ("x86_64", "aarch64")
RUNTIMES = ("onnxruntime", "openvino", "litert")
PRECISIONS = ("fp32", "fp16", "int8", "int8-dynamic")
DEVICES = ("CPU", "NPU", "GPU")
ISAS = ("sse4_2", "avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx",
        "neon", "dotprod", "i8mm", "sve", "fp16")
CALIBRATE_METHODS = ("minmax", "entropy", "percentile")
# "auto": every method the runtime offers is calibrated and measured on the tuning split, the best
# kept (accuracy.choose_calibration); which one wins depends on the model.
CALIBRATE_CHOICES = CALIBRATE_METHODS + ("auto",)
QTYPES = ("uint8", "int8")
MODES = ("static", "dynamic")
STAND_IN = ("warn", "fail")
# The precision a device computes float work in (OpenVINO's INFERENCE_PRECISION_HINT). Pinned on the
# device and on the dev machine, so that both run the same arithmetic whatever CPU they have: left
# alone, OpenVINO's CPU plugin computes in bf16 on AVX512_BF16/AMX hosts and in f16 on ARM.
INFERENCE_PRECISIONS = ("f32", "bf16", "f16")

# key -> accepted python type(s)
_TOP: dict[str, type | tuple[type, ...]] = {
    "name": str, "description": str, "arch": str, "isa": list, "runtime": str, "device": str,
    "precision": str, "threads": int, "static_shapes": bool, "sequence_length": int,
    "calibration_samples": int, "stand_in": str, "memory_mb": int, "require_robustness": bool,
    "inference_precision": str, "quantization": dict, "budget": dict, "generation": dict,
}
_REQUIRED = ("name", "description", "arch", "isa", "runtime", "device", "precision", "threads")
_QUANT: dict[str, type | tuple[type, ...]] = {
    "calibrate_method": str,
    "per_channel": bool,
    "reduce_range": bool,
    "activation_type": str,
    "weight_type": str,
    "op_types": list,
    "accuracy_aware": bool,
    "fusions": bool,
    "mode": str,
    "transformer": dict,
}
_BUDGET: dict[str, type | tuple[type, ...]] = {
    "latency_p95_ms": (int, float),
    "peak_memory_mb": (int, float),
    "model_size_mb": (int, float),
    "max_accuracy_drop": (int, float),
    "max_class_accuracy_drop": (int, float),
    "load_time_ms": (int, float),
    # feature extraction (edgekit/tasks/feature_extraction.py): floors, not ceilings
    "min_cosine_similarity": (int, float),
    "min_recall_at_10": (int, float),
    # text generation (edgekit/tasks/text_generation.py)
    "ttft_ms": (int, float),
    "min_decode_tokens_per_s": (int, float),
    "max_perplexity_increase": (int, float),
    "min_token_agreement": (int, float),
    "context_length": int,
    # deployment (edgekit package): the OCI image per architecture
    "max_image_mb": (int, float),
}
_FLOORS_0_1 = ("min_cosine_similarity", "min_recall_at_10", "max_accuracy_drop", "max_class_accuracy_drop",
               "min_token_agreement")
# [generation]: how a causal LM is compressed for this target (edgekit/lm/export.py).
WEIGHT_BITS = ("int4", "int8", "fp32")
# rtn: round to nearest; hqq: ONNX Runtime's half-quadratic (data-free); awq: NNCF's AWQ + scale
# estimation driven by calibration text (OpenVINO IR, or MatMulNBits through NNCF's ONNX backend).
INT4_METHODS = ("rtn", "hqq", "awq")
_GENERATION: dict[str, type | tuple[type, ...]] = {
    "weights": str, "method": str, "block_size": int, "symmetric": bool, "embeddings": str, "lm_head": str,
    "accuracy_level": int, "prompt_length": int, "new_tokens": int, "ratio": (int, float), "runtime": str,
    "budget": dict,
}


@dataclasses.dataclass(frozen=True)
class Budgets:
    """Limits a bundle must meet on its target; None = not checked."""

    latency_p95_ms: float | None = None
    peak_memory_mb: float | None = None
    model_size_mb: float | None = None
    max_accuracy_drop: float | None = None
    max_class_accuracy_drop: float | None = None
    load_time_ms: float | None = None
    min_cosine_similarity: float | None = None   # mean cosine of the artifact's embeddings to the source's
    min_recall_at_10: float | None = None        # share of each item's 10 nearest neighbours kept
    ttft_ms: float | None = None                 # time to first token at generation.prompt_length, p95
    min_decode_tokens_per_s: float | None = None  # decode speed, median over the generations
    max_perplexity_increase: float | None = None  # relative: artifact ppl / source ppl - 1
    min_token_agreement: float | None = None     # top-1 next-token agreement with the source
    context_length: int | None = None            # tokens the KV cache is sized for (memory at this context)
    max_image_mb: float | None = None            # edgekit package: compressed image size per architecture


@dataclasses.dataclass(frozen=True)
class Generation:
    """[generation]: the weight compression of a causal LM and the shape of its measurement.
    Defaults follow the anchors: int4 weights in blocks of 32 (llama.cpp Q4_0's block, ONNX Runtime
    GenAI's default), the LM head int8 (llama.cpp keeps its output tensor at >= Q6_K even in Q4_0
    files, whose token embeddings are Q4_0)."""

    weights: str = "int4"
    method: str = "rtn"
    block_size: int = 32
    symmetric: bool = True
    # The token embedding table and the LM head (a tied head is stored again for its MatMul).
    # None = the runtime's best: ONNX Runtime int4 table (its GatherBlockQuantized takes 4 bits only)
    # + int8 head; OpenVINO int8 for both (NNCF's backup precision, one setting for both).
    embeddings: str | None = None
    lm_head: str | None = None
    accuracy_level: int = 4         # ONNX Runtime MatMulNBits: 4 = int8 activations (the fast kernels)
    ratio: float = 1.0              # NNCF: share of layers in int4 (the rest int8)
    prompt_length: int = 128        # tokens in the prompt that time to first token is measured at
    new_tokens: int = 64            # tokens generated per timed generation
    # The runtime of a generative bundle where it is not the profile's: litert-torch converts a
    # causal LM with a KV cache only after re-authoring it (litert_torch.generative), not from a
    # Hugging Face model, so the ARM boards run generation on ONNX Runtime.
    runtime: str | None = None
    # [generation.budget]: budgets that replace [budget]'s for generative bundles (a 135M-parameter
    # LM is not held to a classifier's 25 MB); the bundle's manifest carries the merged budgets.
    budget: tuple[tuple[str, Any], ...] = ()


@dataclasses.dataclass(frozen=True)
class Quantization:
    """int8 settings. None = derive from the target's arch and isa (see `resolved_quantization`)."""

    calibrate_method: str = "minmax"
    per_channel: bool = True
    reduce_range: bool | None = None
    activation_type: str | None = None
    weight_type: str | None = None
    op_types: tuple[str, ...] | None = None
    accuracy_aware: bool = True
    # ONNX Runtime, transformers, dynamic int8: fuse attention / layer norm / GELU first (backends/onnxruntime.py)
    fusions: bool = True
    # "static" (activations calibrated offline) or "dynamic" (activations quantized at run time);
    # None = auto (TargetProfile.int8_for).
    mode: str | None = None
    # [quantization.transformer]: keys that replace the ones above for transformer models.
    transformer: tuple[tuple[str, Any], ...] = ()


@dataclasses.dataclass(frozen=True)
class TargetProfile:
    name: str
    description: str
    arch: str
    isa: tuple[str, ...]
    runtime: str
    device: str
    precision: str
    threads: int
    static_shapes: bool = False
    sequence_length: int = 128
    calibration_samples: int = 32
    stand_in: str = "warn"
    memory_mb: int | None = None
    require_robustness: bool = False  # the gate fails a report whose robustness suite did not pass
    inference_precision: str | None = None  # None = compute_precision's default
    quantization: Quantization = Quantization()
    budget: Budgets = Budgets()
    generation: Generation = Generation()
    path: str | None = None

    def for_generation(self) -> "TargetProfile":
        """This profile as a generative bundle sees it: [generation.budget] over [budget], without the
        budgets a generator is not judged on (one call's latency, top-1 drops; tasks/text_generation.py)."""
        off = {"latency_p95_ms": None, "max_accuracy_drop": None, "max_class_accuracy_drop": None}
        return dataclasses.replace(self, budget=dataclasses.replace(self.budget, **off, **dict(self.generation.budget)))

    @property
    def generation_weights(self) -> tuple[str, str]:
        """(embedding table, LM head) precisions of a generative bundle, resolved for its runtime."""
        g = self.generation
        if (g.runtime or self.runtime) == "openvino":
            both = g.embeddings or g.lm_head or "int8"
            return both, both
        return g.embeddings or "int4", g.lm_head or "int8"

    @property
    def has_vnni(self) -> bool:
        return any(i in self.isa for i in ("avx512_vnni", "avx_vnni", "amx"))

    @property
    def compute_precision(self) -> str:
        """What the device computes float work in: the profile's inference_precision, else f16 on an
        NPU (it has no f32 units; OpenVINO NPU plugin docs) and f32 on CPUs. bf16 is opt-in only:
        it changes results (logits move by ~0.1 on the digits CNN) and is not what was checked."""
        if self.inference_precision is not None:
            return self.inference_precision
        return "f16" if self.device == "NPU" else "f32"

    def int8_for(self, transformer: bool) -> Quantization:
        """The int8 settings for one model: [quantization], with [quantization.transformer] on top
        for transformers, and `mode` resolved. Auto mode is dynamic for transformers on x86 ONNX
        Runtime (ONNX Runtime's quantization guide: "dynamic quantization for RNNs and
        transformer-based models, static quantization for CNN models") and on LiteRT (on the
        MiniLM example full integer loses 1.33 points held-out, dynamic range none); static otherwise: CNNs everywhere, OpenVINO
        (NNCF's transformer preset; the NPU takes static int8 only) and aarch64 ONNX Runtime
        (QDQ, ONNX Runtime's advice for ARM)."""
        q = self.quantization
        if transformer and q.transformer:
            q = dataclasses.replace(q, **dict(q.transformer))
        if q.mode is None:
            dynamic = transformer and (self.runtime == "litert" or
                                       (self.runtime == "onnxruntime" and self.arch == "x86_64"))
            q = dataclasses.replace(q, mode="dynamic" if dynamic else "static")
        return dataclasses.replace(q, transformer=())

    def with_calibration(self, method: str) -> "TargetProfile":
        """This profile with `method` as the calibration method for every model family (the
        resolution of calibrate_method = "auto")."""
        q = self.quantization
        tr = tuple((k, method if k == "calibrate_method" else v) for k, v in q.transformer)
        return dataclasses.replace(self, quantization=dataclasses.replace(q, calibrate_method=method, transformer=tr))

    def with_precision(self, precision: str) -> "TargetProfile":
        _one_of(precision, PRECISIONS, "precision", self.path or self.name)
        return dataclasses.replace(self, precision=precision)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["isa"] = list(self.isa)
        if self.quantization.op_types is not None:
            d["quantization"]["op_types"] = list(self.quantization.op_types)
        d["quantization"]["transformer"] = {k: list(v) if isinstance(v, tuple) else v
                                            for k, v in self.quantization.transformer}
        d["generation"]["budget"] = dict(self.generation.budget)
        d.pop("path")
        return d


def _one_of(value: Any, allowed: tuple, key: str, where: str) -> None:
    if value not in allowed:
        raise ConfigError(f"{where}: {key} = {value!r} is not valid; expected one of {', '.join(allowed)}")


def _typed(table: dict, spec: dict, where: str, prefix: str = "") -> dict:
    for key, value in table.items():
        if key not in spec:
            raise ConfigError(
                f"{where}: unknown key '{prefix}{key}'; valid keys: {', '.join(sorted(spec))}")
        want = spec[key]
        # TOML true is an int to Python: a boolean is never a count or a limit.
        if isinstance(value, bool) and want is not bool:
            raise ConfigError(f"{where}: {prefix}{key} = {value!r} must be a number, not a boolean")
        if not isinstance(value, want):
            names = "/".join(t.__name__ for t in (want if isinstance(want, tuple) else (want,)))
            raise ConfigError(f"{where}: {prefix}{key} = {value!r} has type {type(value).__name__}; expected {names}")
    return table


def profile_from_dict(raw: dict[str, Any], where: str) -> TargetProfile:
    """Validate a parsed profile table; every problem names `where` and the key."""
    _typed(raw, _TOP, where)
    for key in _REQUIRED:
        if key not in raw:
            raise ConfigError(f"{where}: missing required key {key!r}")
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]*", raw["name"]):
        raise ConfigError(f"{where}: name = {raw['name']!r} must be lower-case letters, digits and '-'")
    _one_of(raw["arch"], ARCHES, "arch", where)
    _one_of(raw["runtime"], RUNTIMES, "runtime", where)
    _one_of(raw["device"], DEVICES, "device", where)
    _one_of(raw["precision"], PRECISIONS, "precision", where)
    _one_of(raw.get("stand_in", "warn"), STAND_IN, "stand_in", where)
    if "inference_precision" in raw:
        _one_of(raw["inference_precision"], INFERENCE_PRECISIONS, "inference_precision", where)
        if raw["runtime"] != "openvino" and raw["inference_precision"] != "f32":
            raise ConfigError(f"{where}: inference_precision = {raw['inference_precision']!r} is only "
                              "honoured by runtime = 'openvino' (ONNX Runtime and LiteRT compute float "
                              "work in f32 on CPUs); leave it out or set 'f32'")
    for isa in raw["isa"]:
        _one_of(isa, ISAS, "isa entry", where)
    for key in ("threads", "sequence_length", "calibration_samples", "memory_mb"):
        if key in raw and raw[key] < 1:
            raise ConfigError(f"{where}: {key} = {raw[key]!r} must be >= 1")
    if raw["device"] == "NPU" and not raw.get("static_shapes", False):
        raise ConfigError(
            f"{where}: device = 'NPU' needs static_shapes = true (NPUs compile static shapes only; "
            "set static_shapes = true and sequence_length for text models)")
    if raw["runtime"] == "litert" and not raw.get("static_shapes", False):
        raise ConfigError(f"{where}: runtime = 'litert' exports fixed shapes (batch 1): set static_shapes = true")
    if raw["device"] != "CPU" and raw["runtime"] != "openvino":
        raise ConfigError(f"{where}: device = {raw['device']!r} is only available with runtime = 'openvino'")

    q = _quantization(dict(raw.get("quantization", {})), where, "quantization.", raw["runtime"])
    if "transformer" in q:
        t = _quantization(dict(q["transformer"]), where, "quantization.transformer.", raw["runtime"])
        if "transformer" in t:
            raise ConfigError(f"{where}: quantization.transformer.transformer: tables do not nest further")
        q["transformer"] = tuple(sorted(t.items()))
    b = _budget(dict(raw.get("budget", {})), where, "budget.")
    g = _generation(dict(raw.get("generation", {})), where, raw)
    fields = {k: v for k, v in raw.items() if k not in ("quantization", "budget", "generation")}
    fields["isa"] = tuple(raw["isa"])
    return TargetProfile(**fields, quantization=Quantization(**q), budget=Budgets(**b),
                         generation=Generation(**g), path=where)


def _budget(b: dict, where: str, prefix: str) -> dict:
    _typed(b, _BUDGET, where, prefix)
    for key, value in b.items():
        if value < 0:
            raise ConfigError(f"{where}: {prefix}{key} = {value!r} must be >= 0")
        if key in _FLOORS_0_1 and value > 1:
            raise ConfigError(f"{where}: {prefix}{key} = {value!r} must be between 0 and 1 (a fraction)")
    if b.get("context_length", 1) < 1:
        raise ConfigError(f"{where}: {prefix}context_length = {b['context_length']!r} must be >= 1")
    return b


def _generation(g: dict, where: str, raw: dict) -> dict:
    _typed(g, _GENERATION, where, "generation.")
    if "budget" in g:
        g["budget"] = tuple(sorted(_budget(dict(g["budget"]), where, "generation.budget.").items()))
    for key, allowed in (("weights", WEIGHT_BITS), ("embeddings", WEIGHT_BITS), ("lm_head", WEIGHT_BITS),
                         ("method", INT4_METHODS)):
        if key in g:
            _one_of(g[key], allowed, f"generation.{key}", where)
    for key in ("block_size", "prompt_length", "new_tokens"):
        if key in g and g[key] < 1:
            raise ConfigError(f"{where}: generation.{key} = {g[key]!r} must be >= 1")
    if "block_size" in g and (g["block_size"] < 16 or g["block_size"] & (g["block_size"] - 1)):
        raise ConfigError(f"{where}: generation.block_size = {g['block_size']!r} must be a power of two >= 16 "
                          "(MatMulNBits and NNCF group sizes)")
    if "ratio" in g and not 0.0 < g["ratio"] <= 1.0:
        raise ConfigError(f"{where}: generation.ratio = {g['ratio']!r} must be in (0, 1]")
    method = g.get("method", "rtn")
    if "runtime" in g:
        _one_of(g["runtime"], ("onnxruntime", "openvino"), "generation.runtime", where)
    runtime = g.get("runtime", raw["runtime"])
    if method == "hqq" and runtime != "onnxruntime":
        raise ConfigError(f"{where}: generation.method = 'hqq' is ONNX Runtime's; for runtime {runtime!r} "
                          "use 'rtn'" + (" or 'awq'" if runtime == "openvino" else ""))
    if runtime == "onnxruntime" and g.get("embeddings") == "int8":
        raise ConfigError(f"{where}: generation.embeddings = 'int8': ONNX Runtime's GatherBlockQuantized takes "
                          "4-bit tables only; use 'int4' or 'fp32' (the LM head has its own key, lm_head)")
    if runtime == "openvino" and g.get("embeddings", "int8") != g.get("lm_head", "int8"):
        raise ConfigError(f"{where}: generation.embeddings and lm_head differ; NNCF compresses both at one "
                          "precision (its backup mode, or int4 with all layers): set them equal")
    if raw["device"] == "NPU" and g.get("symmetric", True) is False:
        raise ConfigError(f"{where}: generation.symmetric = false: the NPU takes symmetric int4 weights only")
    return g


def _quantization(q: dict, where: str, prefix: str, runtime: str) -> dict:
    _typed(q, _QUANT, where, prefix)
    if "calibrate_method" in q:
        _one_of(q["calibrate_method"], CALIBRATE_CHOICES, f"{prefix}calibrate_method", where)
    for key in ("activation_type", "weight_type"):
        if key in q:
            _one_of(q[key], QTYPES, f"{prefix}{key}", where)
    if "mode" in q:
        _one_of(q["mode"], MODES, f"{prefix}mode", where)
        if q["mode"] == "dynamic" and runtime == "openvino":
            raise ConfigError(f"{where}: {prefix}mode = 'dynamic' is not offered for runtime 'openvino' "
                              "(NNCF quantizes activations statically); for int8 weights with float "
                              "activations use precision = 'int8-dynamic'")
    if "op_types" in q:
        q["op_types"] = tuple(q["op_types"])
    return q


def profile_dirs() -> list[Path]:
    """Where shipped profiles live: the repository's targets/ (source checkout or editable install),
    then <prefix>/share/edgekit/targets (a wheel install)."""
    return [p for p in (Path(__file__).resolve().parent.parent / "targets",
                        Path(sys.prefix) / "share" / "edgekit" / "targets") if p.is_dir()]


def available() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for d in profile_dirs():
        for f in sorted(d.glob("*.toml")):
            found.setdefault(f.stem, f)
    return found


def load_target(spec: str | Path | TargetProfile) -> TargetProfile:
    """A profile by name (shipped profiles) or by path to a TOML file."""
    if isinstance(spec, TargetProfile):
        return spec
    s = str(spec)
    path = Path(s)
    if not (s.endswith(".toml") or path.exists()):
        shipped = available()
        if s not in shipped:
            raise ConfigError(
                f"unknown target {s!r}; available: {', '.join(shipped) or '(none)'} or a path to a .toml file")
        path = shipped[s]
    return profile_from_dict(read_toml(path, "target profile"), str(path))


def load_targets(specs: list[str], targets_dir: str | None = None) -> list[TargetProfile]:
    out = [load_target(s) for s in specs]
    if targets_dir:
        d = Path(targets_dir)
        if not d.is_dir():
            raise ConfigError(f"{d}: --targets must be a folder of .toml profiles")
        files = sorted(d.glob("*.toml"))
        if not files:
            raise ConfigError(f"{d}: no .toml target profiles in this folder")
        out += [load_target(f) for f in files]
    names = [t.name for t in out]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise ConfigError(f"target {sorted(dup)[0]!r} given twice")
    if not out:
        raise ConfigError("no target given: pass --target NAME (see `edgekit targets`) or --targets DIR")
    return out
