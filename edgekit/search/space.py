"""The search space: a TOML file of the values each setting may take, validated like a recipe.

```toml
runtime = ["onnxruntime", "openvino"]   # within the target's family (below)
precision = ["int8", "fp32"]
per_channel = [false, true]             # int8 weight scales per output channel
threads = [1, 2]
student = ["none", "layers:0,2,4"]      # distillation: none, or a recipe student spec
prune_ratio = [0.0, 0.3]                # structured pruning of heads / FFN neurons (CNNs: channels)
vocab = [false, true]                   # vocabulary pruning (text transformers)

[stages]                                # fixed settings of the stages a trial runs (recipe keys)
distill = {epochs = 3, hidden_loss_weight = 1.0}
prune = {finetune_epochs = 3}
```
Left-out keys take the default space of the task and model (`default_space`). Every problem is a
ConfigError naming the file and the key: an empty list, a value of the wrong type, a runtime
outside the target's family, a compression setting for a model that cannot take it, or a space in
which no combination can run on the target.
"""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path
from typing import Any

from ..errors import ConfigError

# What a target's hardware family can run: the runtimes of the shipped profiles per arch/device.
FAMILY = {("x86_64", "CPU"): ("onnxruntime", "openvino"), ("aarch64", "CPU"): ("onnxruntime", "litert"),
          ("x86_64", "NPU"): ("openvino",)}
PRECISIONS_OF = {"onnxruntime": ("fp32", "int8", "int8-dynamic"), "openvino": ("fp32", "fp16", "int8", "int8-dynamic"),
                 "litert": ("fp32", "fp16", "int8")}
KEYS: dict[str, type] = {"runtime": str, "precision": str, "per_channel": bool, "threads": int,
                         "student": str, "prune_ratio": float, "vocab": bool}
STAGE_TABLES = ("distill", "prune", "vocab")
# Stage keys a space may fix; the rest are chosen per trial (student, ratio) or are budgets the
# search itself enforces (max_accuracy_drop: the target's).
_STAGE_FIXED = {"distill": ("epochs", "temperature", "alpha", "hidden_loss_weight", "learning_rate", "batch_size",
                            "patience", "seed"),
                "prune": ("method", "importance", "finetune_epochs", "round_to", "structures", "temperature", "alpha",
                          "hidden_loss_weight", "learning_rate", "batch_size", "patience", "seed"),
                "vocab": ("min_count",)}


@dataclasses.dataclass(frozen=True)
class Space:
    values: dict[str, tuple]            # key -> the values a trial may take (in file order)
    stages: dict[str, dict]             # fixed stage settings
    path: str = "<default space>"

    def to_dict(self) -> dict:
        return {"path": self.path, "values": {k: list(v) for k, v in self.values.items()}, "stages": self.stages}



def family(target) -> tuple[str, ...]:
    return FAMILY.get((target.arch, "NPU" if target.device == "NPU" else "CPU"), (target.runtime,))


def default_space(target, handle, has_train: bool = True) -> dict[str, list]:
    """The task's and model's default: the target's own runtime family, int8 (+ fp32 where the
    budget may allow it), per-tensor and per-channel weights, the profile's threads, and for
    classifiers given training data the compression stages their model type takes."""
    text = handle.is_transformer and handle.hf_dir is not None
    classifier = handle.task == "classification" and handle.module is not None and has_train
    layers = int(handle.metadata.get("num_hidden_layers") or 0)
    students = ["none"]
    if classifier and handle.is_transformer and layers >= 4:
        students.append("layers:" + ",".join(str(i) for i in evenly(layers, layers // 2)))
    elif classifier and not handle.is_transformer:
        students.append("width:0.5")
    return {"runtime": [r for r in family(target)],
            "precision": ["int8", "fp32"], "per_channel": [False, True], "threads": [target.threads],
            "student": students, "prune_ratio": [0.0, 0.3] if classifier else [0.0],
            "vocab": [False, True] if classifier and text else [False]}


def evenly(n_layers: int, k: int) -> list[int]:
    """k of n_layers teacher layers, evenly spaced from layer 0 (6 -> 3: 0, 2, 4; DistilBERT's rule)."""
    return [round(i * n_layers / k) for i in range(k)]


def load_space(path: str | Path | None, target, handle, *, has_train: bool) -> Space:
    from ..tomlfile import read_toml
    raw = read_toml(path, "search space") if path else {}
    where = str(path) if path else "<default space>"
    values = default_space(target, handle, has_train)
    stages: dict[str, dict] = {}
    for key, val in raw.items():
        if key == "stages":
            stages = _stages(val, where)
            continue
        if key not in KEYS:
            raise ConfigError(f"{where}: unknown key {key!r}; valid keys: {', '.join(KEYS)} and [stages]")
        if not isinstance(val, list):
            val = [val]
        if not val:
            raise ConfigError(f"{where}: {key} = [] leaves nothing to try; give at least one value")
        want = KEYS[key]
        for v in val:
            ok = isinstance(v, want) and not (want is not bool and isinstance(v, bool)) or \
                (want is float and isinstance(v, int) and not isinstance(v, bool))
            if not ok:
                raise ConfigError(f"{where}: {key} value {v!r} has type {type(v).__name__}; expected {want.__name__}")
        if len(set(val)) != len(val):
            raise ConfigError(f"{where}: {key} = {val!r} lists a value twice")
        values[key] = [float(v) if want is float else v for v in val]
    _check(values, where, target, handle, has_train)
    return Space({k: tuple(v) for k, v in values.items()}, stages, where)


def _stages(val: Any, where: str) -> dict[str, dict]:
    if not isinstance(val, dict):
        raise ConfigError(f"{where}: [stages] must be a table of distill / prune / vocab tables")
    for kind, table in val.items():
        if kind not in STAGE_TABLES or not isinstance(table, dict):
            raise ConfigError(f"{where}: stages.{kind} is not valid; expected tables stages.distill, stages.prune, "
                              "stages.vocab")
        for k in table:
            if k not in _STAGE_FIXED[kind]:
                raise ConfigError(f"{where}: stages.{kind}.{k} cannot be fixed here; valid keys: "
                                  f"{', '.join(_STAGE_FIXED[kind])}")
    return {k: dict(v) for k, v in val.items()}


def _check(values: dict, where: str, target, handle, has_train: bool) -> None:
    fam = family(target)
    for rt in values["runtime"]:
        if rt not in fam:
            raise ConfigError(f"{where}: runtime {rt!r} cannot run on target {target.name} ({target.arch} "
                              f"{target.device}); its family runs {', '.join(fam)}")
    for t in values["threads"]:
        if t < 1:
            raise ConfigError(f"{where}: threads value {t!r} must be >= 1")
    for r in values["prune_ratio"]:
        if not 0.0 <= r < 1.0:
            raise ConfigError(f"{where}: prune_ratio value {r!r} must be in [0, 1): the fraction removed")
    from ..compress.recipe import _student_syntax
    for s in values["student"]:
        if s != "none":
            _student_syntax(f"{where}: student", s)
    compress = any(s != "none" for s in values["student"]) or any(r > 0 for r in values["prune_ratio"]) \
        or True in values["vocab"]
    if compress:
        if handle.task != "classification" or handle.module is None:
            raise ConfigError(f"{where}: student / prune_ratio / vocab compress the model, which takes a PyTorch "
                              f"classifier; this source is a {handle.task} model"
                              + (" in ONNX" if handle.module is None else ""))
        if not has_train:
            raise ConfigError(f"{where}: student / prune_ratio / vocab train the model: pass --train DATA")
    if True in values["vocab"] and not (handle.is_transformer and handle.hf_dir is not None):
        raise ConfigError(f"{where}: vocab = true needs a text transformer with a Hugging Face tokenizer")
    for p in values["precision"]:
        if not any(p in PRECISIONS_OF[rt] for rt in values["runtime"]):
            raise ConfigError(f"{where}: precision {p!r} is offered by none of the runtimes "
                              f"{', '.join(values['runtime'])}")
    if not any(valid(dict(zip(values, combo))) is None for combo in itertools.product(*values.values())):
        raise ConfigError(f"{where}: no combination of these values can run (contradictory space)")


def valid(params: dict) -> str | None:
    """None when a combination can be built, else why not (a trial with it is skipped)."""
    if params["precision"] not in PRECISIONS_OF[params["runtime"]]:
        return f"{params['runtime']} offers no {params['precision']}"
    return None
