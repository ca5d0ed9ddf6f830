"""Compression recipes: an ordered list of stages (TOML ``[[stage]]`` tables), every key checked.

```toml
on_fail = "stop"                # stop | keep_last_good (a stage over its budget)
[[stage]]
kind = "distill"
student = "layers:0,2,4"        # or "width:0.5" (CNNs) or "path/file.py:factory"
epochs = 3
temperature = 4.0
alpha = 0.5
max_accuracy_drop = 0.03
[[stage]]
kind = "prune"
method = "structured"           # or "magnitude" (unstructured: size only)
ratio = 0.3
finetune_epochs = 1
```

Every problem is a ConfigError naming the file, the stage (1-based, as counted in the file) and
the key, with the offending value shown by repr. The full key list is in docs/COMPRESS.md.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

from ..errors import ConfigError

ON_FAIL = ("stop", "keep_last_good")
KINDS = ("distill", "prune", "vocab")
METHODS = ("structured", "magnitude")
IMPORTANCES = ("magnitude", "taylor")
STRUCTURES = ("heads", "ffn")

_NUM = (int, float)
_TOP: dict[str, Any] = {"on_fail": str, "description": str, "threads": int, "stage": list}

# Training keys shared by distillation and the fine-tuning that follows pruning.
_TRAIN: dict[str, Any] = {
    "temperature": _NUM, "alpha": _NUM, "hidden_loss_weight": _NUM, "attention_loss_weight": _NUM,
    "learning_rate": _NUM,
    "batch_size": int, "patience": int, "seed": int, "qat_epochs": int,
    "max_accuracy_drop": _NUM, "max_class_accuracy_drop": _NUM,
}
_STAGE_KEYS: dict[str, dict[str, Any]] = {
    "distill": {"kind": str, "student": str, "epochs": int, **_TRAIN},
    "prune": {"kind": str, "method": str, "ratio": _NUM, "importance": str, "finetune_epochs": int,
              "round_to": int, "structures": list, **_TRAIN},
    # vocabulary pruning (compress/vocab.py): no training, so no training keys
    "vocab": {"kind": str, "min_count": int, "positions": bool, "max_accuracy_drop": _NUM,
              "max_class_accuracy_drop": _NUM},
}
_REQUIRED = {"distill": ("student",), "prune": ("method", "ratio"), "vocab": ()}


@dataclasses.dataclass(frozen=True)
class Stage:
    """One stage; `index` is 1-based as in the file. Defaults are documented in docs/COMPRESS.md."""

    kind: str
    index: int
    # distill
    student: str | None = None
    epochs: int = 3
    # prune
    method: str | None = None
    ratio: float | None = None
    importance: str = "magnitude"
    finetune_epochs: int = 1
    round_to: int = 8
    structures: tuple[str, ...] = STRUCTURES
    # vocab: a token is kept when it occurs at least this often in the training text
    min_count: int = 1
    # vocab: also slice the position table to the sequence length (the bundle's tokenizer truncates
    # there, so rows past it are never read; the model then refuses longer inputs)
    positions: bool = False
    # training (distillation, and fine-tuning after pruning)
    temperature: float = 4.0
    alpha: float = 0.5
    hidden_loss_weight: float = 0.0
    attention_loss_weight: float = 0.0   # MiniLM-style: KL of the paired layers' attention maps
    learning_rate: float | None = None    # None: 1e-3 (Adam) for CNNs, 1e-4 (AdamW) for transformers
    batch_size: int = 32
    patience: int = 2
    seed: int = 0
    # quantization-aware epochs after the float ones (distill.fake_quant: ONNX Runtime's dynamic int8)
    qat_epochs: int = 0
    # budgets: drops measured against the source model, as fractions (0.03 = 3 points)
    max_accuracy_drop: float | None = None
    max_class_accuracy_drop: float | None = None
    given: tuple[str, ...] = ()           # the keys the file set (recorded with the results)

    @property
    def label(self) -> str:
        if self.kind == "distill":
            return f"distill {self.student}"
        if self.kind == "vocab":
            return f"vocab min_count {self.min_count}" + (" + positions" if self.positions else "")
        return f"prune {self.method} {self.ratio:g}"

    @property
    def train_epochs(self) -> int:
        return {"distill": self.epochs, "vocab": 0}.get(self.kind, self.finetune_epochs)

    def hyperparameters(self) -> dict[str, Any]:
        if self.kind == "vocab":
            keys: tuple[str, ...] = ("min_count", "positions", "max_accuracy_drop", "max_class_accuracy_drop")
        else:
            keys = (("student", "epochs") if self.kind == "distill" else
                    ("method", "ratio", "importance", "finetune_epochs", "round_to", "structures"))
            keys += ("temperature", "alpha", "hidden_loss_weight", "learning_rate", "batch_size",
                     "patience", "seed", "max_accuracy_drop", "max_class_accuracy_drop")
        out = {"kind": self.kind}
        for k in keys:
            v = getattr(self, k)
            out[k] = list(v) if isinstance(v, tuple) else v
        for k in ("qat_epochs", "attention_loss_weight"):  # only when set: older recipes' cache keys stay
            if getattr(self, k) and self.kind != "vocab":
                out[k] = getattr(self, k)
        return out


@dataclasses.dataclass(frozen=True)
class Recipe:
    stages: tuple[Stage, ...]
    on_fail: str = "stop"
    description: str = ""
    threads: int | None = None            # torch intra-op threads while compressing; None: torch's default
    path: str = "<recipe>"

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "on_fail": self.on_fail, "description": self.description,
                "threads": self.threads, "stages": [s.hyperparameters() for s in self.stages]}


def _check_type(where: str, key: str, value: Any, want: Any) -> None:
    # TOML true is an int to Python: a boolean is never a count, a ratio or a limit.
    if isinstance(value, bool) and want is not bool:
        raise ConfigError(f"{where}: {key} = {value!r} must be a number, not a boolean"
                          if want in (int, _NUM) else
                          f"{where}: {key} = {value!r} has type bool; expected {_tname(want)}")
    if not isinstance(value, want):
        raise ConfigError(f"{where}: {key} = {value!r} has type {type(value).__name__}; expected {_tname(want)}")


def _tname(want: Any) -> str:
    return "/".join(t.__name__ for t in (want if isinstance(want, tuple) else (want,)))


def _one_of(where: str, key: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        raise ConfigError(f"{where}: {key} = {value!r} is not valid; expected one of {', '.join(allowed)}")


def _student_syntax(where: str, spec: str) -> None:
    if spec.startswith("layers:"):
        body = spec[len("layers:"):]
        if not re.fullmatch(r"\s*\d+\s*(,\s*\d+\s*)*", body):
            raise ConfigError(f"{where}: student = {spec!r}: expected layers:I,J,... with layer "
                              "indices counted from 0 (for example 'layers:0,2,4')")
        idx = [int(i) for i in body.split(",")]
        if len(set(idx)) != len(idx) or idx != sorted(idx):
            raise ConfigError(f"{where}: student = {spec!r}: layer indices must be increasing, "
                              "each given once")
    elif spec.startswith("width:"):
        try:
            w = float(spec[len("width:"):])
        except ValueError as exc:
            raise ConfigError(f"{where}: student = {spec!r}: expected width:W with W the fraction of "
                              "channels kept, between 0 and 1 (for example 'width:0.5')") from exc
        if not 0.0 < w < 1.0:
            raise ConfigError(f"{where}: student = {spec!r}: the width {w!r} must be between 0 and 1 "
                              "(exclusive): the fraction of the teacher's channels kept")
    else:
        target, _, fn = spec.rpartition(":")
        if not target or not fn or not fn.isidentifier():
            raise ConfigError(f"{where}: student = {spec!r} is not valid; expected 'layers:0,2,4' "
                              "(transformers), 'width:0.5' (CNNs) or 'path/file.py:factory'")


def stage_from_dict(raw: Any, index: int, path: str) -> Stage:
    where = f"{path}: stage {index}"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: each [[stage]] must be a table, got {type(raw).__name__}")
    if "kind" not in raw:
        raise ConfigError(f"{where}: missing required key 'kind'; expected one of {', '.join(KINDS)}")
    kind = raw["kind"]
    _check_type(where, "kind", kind, str)
    _one_of(where, "kind", kind, KINDS)
    spec = _STAGE_KEYS[kind]
    for key, value in raw.items():
        if key not in spec:
            raise ConfigError(f"{where}: unknown key {key!r} for a {kind!r} stage; valid keys: "
                              f"{', '.join(sorted(spec))}")
        _check_type(where, key, value, spec[key])
    for key in _REQUIRED[kind]:
        if key not in raw:
            raise ConfigError(f"{where}: missing required key {key!r} for a {kind!r} stage")
    f = {k: v for k, v in raw.items()}
    for key in ("temperature", "alpha", "hidden_loss_weight", "attention_loss_weight", "learning_rate", "ratio",
                "max_accuracy_drop", "max_class_accuracy_drop"):
        if key in f:
            f[key] = float(f[key])
    if "ratio" in f and not 0.0 < f["ratio"] < 1.0:
        raise ConfigError(f"{where}: ratio = {raw['ratio']!r} must be between 0 and 1 (exclusive): "
                          "the fraction of channels/heads/weights removed")
    if "method" in f:
        _one_of(where, "method", f["method"], METHODS)
    if "importance" in f:
        _one_of(where, "importance", f["importance"], IMPORTANCES)
    if "structures" in f:
        for s in f["structures"]:
            _one_of(where, "structures entry", s, STRUCTURES)
        if not f["structures"]:
            raise ConfigError(f"{where}: structures = [] prunes nothing; give 'heads', 'ffn' or both")
        f["structures"] = tuple(f["structures"])
    for key in ("batch_size", "patience", "round_to", "min_count"):
        if key in f and f[key] < 1:
            raise ConfigError(f"{where}: {key} = {raw[key]!r} must be >= 1")
    for key in ("epochs", "finetune_epochs", "seed", "qat_epochs"):
        if key in f and f[key] < 0:
            raise ConfigError(f"{where}: {key} = {raw[key]!r} must be >= 0")
    if "temperature" in f and f["temperature"] <= 0:
        raise ConfigError(f"{where}: temperature = {raw['temperature']!r} must be > 0")
    if "learning_rate" in f and f["learning_rate"] <= 0:
        raise ConfigError(f"{where}: learning_rate = {raw['learning_rate']!r} must be > 0")
    if "alpha" in f and not 0.0 <= f["alpha"] <= 1.0:
        raise ConfigError(f"{where}: alpha = {raw['alpha']!r} must be between 0 and 1 "
                          "(the weight of the distillation loss against the label loss)")
    for key in ("hidden_loss_weight", "attention_loss_weight", "max_accuracy_drop", "max_class_accuracy_drop"):
        if key in f and f[key] < 0:
            raise ConfigError(f"{where}: {key} = {raw[key]!r} must be >= 0")
    if kind == "distill":
        _student_syntax(where, f["student"])
    if kind == "prune" and f["method"] == "magnitude":
        for key in ("importance", "round_to", "structures"):
            if key in f:
                raise ConfigError(f"{where}: {key} applies to method = 'structured' only "
                                  "(method 'magnitude' zeroes the smallest weights, layer by layer)")
    return Stage(index=index, given=tuple(raw), **f)


def recipe_from_dict(raw: dict[str, Any], path: str = "<recipe>") -> Recipe:
    for key, value in raw.items():
        if key not in _TOP:
            raise ConfigError(f"{path}: unknown key {key!r}; valid top-level keys: {', '.join(sorted(_TOP))} "
                              "(stages are [[stage]] tables)")
        _check_type(path, key, value, _TOP[key])
    on_fail = raw.get("on_fail", "stop")
    _one_of(path, "on_fail", on_fail, ON_FAIL)
    if "threads" in raw and raw["threads"] < 1:
        raise ConfigError(f"{path}: threads = {raw['threads']!r} must be >= 1")
    stages = raw.get("stage", [])
    if not stages:
        raise ConfigError(f"{path}: no stages; add at least one [[stage]] table with kind = "
                          f"{' or '.join(repr(k) for k in KINDS)}")
    return Recipe(tuple(stage_from_dict(s, i, path) for i, s in enumerate(stages, 1)),
                  on_fail=on_fail, description=raw.get("description", ""),
                  threads=raw.get("threads"), path=path)


def load_recipe(path: str | Path) -> Recipe:
    """Read and validate a recipe file; every problem is a ConfigError naming the file."""
    from ..tomlfile import read_toml
    return recipe_from_dict(read_toml(path, "recipe"), str(path))
