"""Conversion-time budget checks: refuse a model that cannot fit its target before anything is
flashed or run on a device. Two moments:

- before export, an *estimate* from the PyTorch model: parameters x bytes per weight at the
  target's precision (size), plus activations at batch 1 (memory);
- after conversion, the *exact* artifact size against `model_size_mb`.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .errors import BudgetError

# Bytes per stored weight. int8 stores one byte per weight plus per-channel scales and zero points,
# a few percent on real layers; fp16 two bytes; fp32 four.
BYTES_PER_WEIGHT = {"fp32": 4.0, "fp16": 2.0, "int8": 1.0, "int8-dynamic": 1.0}
MB = 2**20


@dataclasses.dataclass
class Estimate:
    params: int
    size_mb: float              # weights at the target's precision
    activations_mb: float       # every intermediate tensor at batch 1 (no buffer reuse: an upper bound)

    @property
    def memory_mb(self) -> float:
        """Weights + activations: a floor for the runtime's own share of peak RSS."""
        return self.size_mb + self.activations_mb

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "memory_mb": self.memory_mb}


def estimate(module, sample: dict[str, np.ndarray], names: list[str], precision: str) -> Estimate:
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten
    params = sum(p.numel() for p in module.parameters())
    acts = [0]

    class CountOutputs(TorchDispatchMode):
        """Every aten op's output bytes: works for eager modules and torch.export graphs alike
        (module hooks never fire inside an exported GraphModule)."""

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            acts[0] += sum(t.numel() * t.element_size() for t in tree_flatten(out)[0]
                           if isinstance(t, torch.Tensor))
            return out

    with torch.inference_mode(), CountOutputs():
        module(*[torch.from_numpy(np.ascontiguousarray(sample[n][:1])) for n in names])
    return Estimate(params, params * BYTES_PER_WEIGHT[precision] / MB, acts[0] / MB)


def _hint(precision: str) -> str:
    return "try pruning or distillation" if precision.startswith("int8") else "try int8 or pruning"


def check_estimate(target, est: Estimate) -> None:
    """Collect every budget the estimate already breaks; raise them together."""
    b, problems = target.budget, []
    if b.model_size_mb is not None and est.size_mb > b.model_size_mb:
        problems.append(f"model_size {est.size_mb:.1f} MB (estimated: {est.params / 1e6:.1f}M params at "
                        f"{target.precision}) > budget {b.model_size_mb:g} MB")
    limit = min(x for x in (b.peak_memory_mb, target.memory_mb, float("inf")) if x is not None)
    if limit != float("inf") and est.memory_mb > limit:
        problems.append(f"memory {est.memory_mb:.1f} MB (estimated: weights + batch-1 activations) > "
                        f"{'budget' if limit == b.peak_memory_mb else 'device memory'} {limit:g} MB")
    if problems:
        raise BudgetError(f"{'; '.join(problems)} for {target.name}: {_hint(target.precision)}")


def check_size(target, size_bytes: int, why: str = "") -> None:
    b = target.budget.model_size_mb
    if b is not None and size_bytes / MB > b:
        raise BudgetError(f"model_size {size_bytes / MB:.2f} MB > budget {b:g} MB for {target.name}{why}: "
                          f"{_hint(target.precision)}")
