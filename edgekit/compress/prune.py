"""Pruning.

- ``structured`` (torch-pruning 1.6.1, ``tp.pruner.BasePruner``): whole channels of CNNs (and the
  hidden units of MLPs), whole attention heads and FFN neurons of BERT-family transformers. The
  classifier head is never pruned; widths are rounded to multiples of ``round_to`` (8); importance
  is ``magnitude`` (GroupMagnitudeImportance, L2) or ``taylor`` (GroupTaylorImportance, |w * dL/dw|
  from a few training batches). For transformers the embeddings and pooler are left whole (the
  residual width stays), heads are removed per layer at ``ratio`` (``prune_num_heads``), FFN
  neurons at ``ratio``; each attention module's num_attention_heads / attention_head_size /
  all_head_size are updated afterwards. The network really gets smaller: fewer MACs, a smaller
  file, and (measured, not assumed) lower latency.
- ``magnitude``: unstructured L1 pruning (torch.nn.utils.prune) of every Conv/Linear weight but
  the head, layer by layer, made permanent. The tensors keep their shapes: this shrinks a
  *compressed* file and nothing else; no runtime here runs zeros faster.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch import nn

from ..errors import ConfigError
from . import _torch as T

_PRUNABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def attention_modules(model: nn.Module) -> list[nn.Module]:
    """BERT-family self-attention modules (query/key/value Linear layers and a head count)."""
    return [m for m in model.modules()
            if all(isinstance(getattr(m, a, None), nn.Linear) for a in ("query", "key", "value"))
            and hasattr(m, "num_attention_heads")]


def _importance(name: str):
    import torch_pruning as tp
    if name == "taylor":
        return tp.importance.GroupTaylorImportance()
    return tp.importance.GroupMagnitudeImportance(p=2)


def _effective_round_to(layers: list[nn.Module], ratio: float, round_to: int) -> int:
    """torch-pruning rounds the kept width down to a multiple of round_to, which removes a layer
    entirely when fewer than round_to channels would stay: lower round_to (8, 4, 2, 1) until every
    prunable layer keeps at least one multiple."""
    widths = [m.out_features if isinstance(m, nn.Linear) else m.out_channels for m in layers]
    if not widths:
        return round_to
    least = min(int(w * (1.0 - ratio)) for w in widths)
    r = round_to
    while r > 1 and least < r:
        r //= 2
    return max(r, 1)


def structured(model: nn.Module, args: tuple, *, ratio: float, importance: str = "magnitude",
               round_to: int = 8, structures: tuple[str, ...] = ("heads", "ffn"), head: nn.Module | None,
               is_transformer: bool, where: str,
               gradients: Callable[[nn.Module], None] | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Prune `model` in place; returns it with a description of what was removed."""
    import torch_pruning as tp
    ignored: list[nn.Module] = [head] if head is not None else []
    kwargs: dict[str, Any] = {}
    info: dict[str, Any] = {"method": "structured", "ratio": ratio, "importance": importance,
                            "pruner": f"torch-pruning {_version()} BasePruner"}
    attn = attention_modules(model) if is_transformer else []
    if is_transformer:
        inner = getattr(model, "inner", model)
        base = getattr(inner, "base_model", inner)
        if not attn or getattr(base, "embeddings", None) is None:
            raise ConfigError(f"{where}: structured pruning of transformers supports BERT-family models "
                              "(self-attention with query/key/value layers); use method = 'magnitude' "
                              "or a distill stage for this model")
        # the residual width (embeddings, LayerNorms, every output projection) stays whole
        ignored += [base.embeddings]
        if getattr(base, "pooler", None) is not None:
            ignored.append(base.pooler)
        heads = {m.num_attention_heads for m in attn}
        if "heads" in structures:
            for n in heads:
                if math.ceil(ratio * n) >= n:
                    raise ConfigError(f"{where}: ratio = {ratio!r} would remove all {n} attention heads of a "
                                      f"layer (torch-pruning removes ceil(ratio x heads)); use a ratio below "
                                      f"{(n - 1) / n:.3f}")
            num_heads = {}
            for m in attn:
                for lin in (m.query, m.key, m.value):
                    num_heads[lin] = m.num_attention_heads
            kwargs.update(num_heads=num_heads, prune_num_heads=True, prune_head_dims=False,
                          head_pruning_ratio=ratio)
        else:
            ignored += [lin for m in attn for lin in (m.query, m.key, m.value)]
        if "ffn" not in structures:
            ignored += [m.intermediate for m in model.modules()
                        if isinstance(getattr(m, "intermediate", None), nn.Module)]
    ignored_ids = {id(x) for m in ignored for x in m.modules()}
    candidates = [m for m in model.modules() if isinstance(m, _PRUNABLE) and id(m) not in ignored_ids
                  and not any(m is lin for a in attn for lin in (a.query, a.key, a.value))]
    r = _effective_round_to(candidates, ratio, round_to)
    info["round_to"] = r
    if r != round_to:
        info["note"] = (f"round_to lowered from {round_to} to {r}: a layer would keep fewer than "
                        f"{round_to} channels")
    before = {name: _width(m) for name, m in model.named_modules() if isinstance(m, _PRUNABLE)}
    T.set_train(model, False)
    try:
        pruner = tp.pruner.BasePruner(model, args, importance=_importance(importance), pruning_ratio=ratio,
                                      round_to=r, ignored_layers=ignored, **kwargs)
        if importance == "taylor" and gradients is not None:
            model.zero_grad(set_to_none=True)
            gradients(model)
        pruner.step()
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(f"{where}: torch-pruning could not prune this model: {type(exc).__name__}: "
                          f"{str(exc).splitlines()[0][:200] if str(exc) else ''}") from exc
    finally:
        model.zero_grad(set_to_none=True)
    if is_transformer and "heads" in structures:
        per_layer = []
        for m in attn:
            n = pruner.num_heads[m.query]
            m.num_attention_heads = n
            m.all_head_size = m.query.out_features
            m.attention_head_size = m.all_head_size // n
            per_layer.append(n)
        info["heads_per_layer"] = per_layer
    if is_transformer:
        info["ffn_per_layer"] = [m.intermediate.dense.out_features for m in model.modules()
                                 if isinstance(getattr(getattr(m, "intermediate", None), "dense", None), nn.Linear)]
    after = {name: _width(m) for name, m in model.named_modules() if isinstance(m, _PRUNABLE)}
    info["widths"] = {k: [before[k], after[k]] for k in after if k in before and before[k] != after[k]}
    if not info["widths"]:
        raise ConfigError(f"{where}: structured pruning found nothing to remove at ratio = {ratio!r} "
                          "(no Conv/Linear layer besides the head, or widths too small to round); "
                          "give the source as path/file.py:factory, or use method = 'magnitude'")
    try:
        with torch.inference_mode():
            T.logits_of(model(*args))
    except Exception as exc:
        raise ConfigError(f"{where}: the pruned model no longer runs ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0][:200] if str(exc) else ''}); this architecture has "
                          "shapes fixed in its code: give the source as path/file.py:factory") from exc
    return model, info


def _width(m: nn.Module) -> int:
    return m.out_features if isinstance(m, nn.Linear) else m.out_channels


def magnitude_masks(model: nn.Module, ratio: float, head: nn.Module | None) -> list[nn.Module]:
    """Zero the `ratio` smallest-|w| weights of every Conv/Linear layer but the head (L1, layer by
    layer). The masks stay attached (fine-tuning keeps the zeros) until `make_permanent`."""
    from torch.nn.utils import prune
    layers = [m for m in model.modules() if isinstance(m, _PRUNABLE) and m is not head]
    for m in layers:
        prune.l1_unstructured(m, "weight", amount=ratio)
    return layers


def make_permanent(layers: list[nn.Module]) -> None:
    from torch.nn.utils import prune
    for m in layers:
        if prune.is_pruned(m):
            prune.remove(m, "weight")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("torch-pruning")
    except PackageNotFoundError:  # pragma: no cover
        import torch_pruning
        return getattr(torch_pruning, "__version__", "?")
