"""Torch helpers shared by the compression stages: batches from a Dataset, logits, measurements
(parameters, MACs, file sizes, latency), seeds and threads, and turning a torch.export program's
module back into one made of nn.Conv2d / nn.Linear / norm modules so that it can be pruned."""

from __future__ import annotations

import contextlib
import copy
import io
import random
import statistics
import time
import zlib
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn

from ..data import Dataset
from ..errors import DataError


# ---------------------------------------------------------------------------------------------
# data


def check_inputs(data: Dataset, names: list[str], role: str) -> None:
    """Every model input must be in the data, with the same number of samples."""
    missing = [n for n in names if n not in data.inputs]
    if missing:
        raise DataError(f"{data.path}: the {role} data have no input {missing[0]!r} that the model needs "
                        f"(model inputs: {', '.join(names)}; found: {', '.join(data.inputs) or 'nothing'})")
    counts = {n: len(data.inputs[n]) for n in names}
    if len(set(counts.values())) > 1 or 0 in counts.values():
        raise DataError(f"{data.path}: the {role} data's inputs have different or zero sample counts "
                        f"({', '.join(f'{k}: {v}' for k, v in counts.items())})")
    if data.labels is not None and len(data.labels) != counts[names[0]]:
        raise DataError(f"{data.path}: {len(data.labels)} labels for {counts[names[0]]} {role} samples")


def batch(data: Dataset, names: list[str], idx: np.ndarray | slice) -> tuple[torch.Tensor, ...]:
    return tuple(torch.from_numpy(np.ascontiguousarray(data.inputs[n][idx])) for n in names)


def logits_of(out: Any) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    if hasattr(out, "logits"):
        return out.logits
    if isinstance(out, dict):
        return next(iter(out.values()))
    if isinstance(out, (tuple, list)):
        return out[0]
    raise TypeError(f"model returned {type(out).__name__}, not a tensor of logits")


def predict(model: nn.Module, data: Dataset, names: list[str], batch_size: int = 64) -> np.ndarray:
    """Logits for every sample (eval mode, no gradients)."""
    was = model.training
    set_train(model, False)
    outs = []
    with torch.inference_mode():
        for s in range(0, len(data), batch_size):
            outs.append(logits_of(model(*batch(data, names, slice(s, s + batch_size)))).float().numpy())
    set_train(model, was)
    return np.concatenate(outs)


def set_train(model: nn.Module, mode: bool) -> None:
    # torch.export's modules refuse .train(); lift_graph_module gives plain GraphModules that accept it.
    try:
        model.train(mode)
    except NotImplementedError:
        pass


# ---------------------------------------------------------------------------------------------
# measurements


def count_params(model: nn.Module) -> int:
    seen, n = set(), 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            n += p.numel()
    return n


def count_macs(model: nn.Module, args: tuple) -> int:
    """Multiply-accumulates of one forward pass at this input (batch 1): convolutions and matrix
    products, attention's included (torch's FlopCounterMode counts 2 FLOPs per MAC)."""
    from torch.utils.flop_counter import FlopCounterMode
    set_train(model, False)
    with FlopCounterMode(display=False) as fc, torch.inference_mode():
        model(*args)
    return int(fc.get_total_flops() // 2)


def weights_bytes(model: nn.Module) -> bytes:
    buf = io.BytesIO()
    torch.save({k: v.detach().contiguous() for k, v in model.state_dict().items()}, buf)
    return buf.getvalue()


def sizes(model: nn.Module) -> tuple[int, int]:
    """(fp32 file size, the same file zlib-compressed at level 6) in bytes. Zeroed weights shrink
    the second only: that is all unstructured sparsity buys."""
    raw = weights_bytes(model)
    return len(raw), len(zlib.compress(raw, 6))


def latency_ms(model: nn.Module, args: tuple, runs: int = 50, warmup: int = 5) -> float:
    """Median wall time of one forward pass at batch 1, one intra-op thread."""
    set_train(model, False)
    with threads(1), torch.inference_mode():
        for _ in range(warmup):
            model(*args)
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            model(*args)
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def sparsity(model: nn.Module) -> float:
    """Fraction of exact zeros among the weights of Conv/Linear layers."""
    zeros = total = 0
    for m in model.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
            w = m.weight.detach()
            zeros += int((w == 0).sum())
            total += w.numel()
    return zeros / total if total else 0.0


# ---------------------------------------------------------------------------------------------
# reproducibility


@contextlib.contextmanager
def threads(n: int | None) -> Iterator[None]:
    prev = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(prev)


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[torch.Generator]:
    """Fixed seeds for torch, numpy and random, deterministic kernels where torch has them;
    yields the generator that orders the training batches."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    was = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield torch.Generator().manual_seed(seed)
    finally:
        torch.use_deterministic_algorithms(was, warn_only=warn_only)


# ---------------------------------------------------------------------------------------------
# model structure


def find_head(model: nn.Module, args: tuple, n_classes: int) -> nn.Module | None:
    """The classifier head: the last Linear/Conv run in forward whose output has n_classes features."""
    order: list[nn.Module] = []
    hooks = [m.register_forward_hook(lambda m, i, o: order.append(m)) for m in model.modules()
             if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d))]
    try:
        with torch.inference_mode():
            model(*args)
    finally:
        for h in hooks:
            h.remove()
    for m in reversed(order):
        width = m.out_features if isinstance(m, nn.Linear) else m.out_channels
        if width == n_classes:
            return m
    return order[-1] if order else None


def lift_graph_module(gm: nn.Module, args: tuple) -> nn.Module:
    """A torch.export program's module calls aten ops on bare parameters: there is no nn.Conv2d or
    nn.Linear for torch-pruning to find. This rebuilds those calls (conv, linear, batch/layer norm)
    as modules holding the same parameters, and returns a plain GraphModule (which, unlike the
    exported one, accepts .train()). Anything that does not match the original outputs is refused
    by returning the input unchanged."""
    if not isinstance(gm, torch.fx.GraphModule):
        return gm
    aten = torch.ops.aten
    new = torch.fx.GraphModule(copy.deepcopy(gm), copy.deepcopy(gm.graph))
    graph = new.graph

    def attr(node):
        if node is None:
            return None
        if not isinstance(node, torch.fx.Node) or node.op != "get_attr":
            raise LookupError
        return node.target

    def fetch(target):
        mod_path, _, name = target.rpartition(".")
        owner = new.get_submodule(mod_path) if mod_path else new
        return getattr(owner, name)

    counter = 0
    lifted: list[nn.Module] = []
    for node in list(graph.nodes):
        if node.op != "call_function":
            continue
        a = list(node.args) + [None] * 10
        try:
            if node.target in (aten.conv1d.default, aten.conv2d.default, aten.conv3d.default):
                w_t, b_t = attr(a[1]), attr(a[2])
                w = fetch(w_t)
                dims = w.dim() - 2
                kw = dict(stride=a[3] or 1, padding=a[4] or 0, dilation=a[5] or 1, groups=a[6] or 1)
                kw.update(node.kwargs)
                cls = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[dims]
                mod = cls(w.shape[1] * kw["groups"], w.shape[0], tuple(w.shape[2:]), bias=b_t is not None, **kw)
                params = {"weight": w_t, "bias": b_t}
                inputs = (a[0],)
            elif node.target == aten.linear.default:
                w_t, b_t = attr(a[1]), attr(a[2])
                w = fetch(w_t)
                mod = nn.Linear(w.shape[1], w.shape[0], bias=b_t is not None)
                params = {"weight": w_t, "bias": b_t}
                inputs = (a[0],)
            elif node.target == aten.batch_norm.default:
                ts = [attr(a[i]) for i in range(1, 5)]
                rm = fetch(ts[2])
                mod = nn.BatchNorm1d(rm.shape[0], eps=a[7], momentum=a[6], affine=ts[0] is not None)
                if len(node.meta.get("val", torch.empty(0, 0, 0, 0)).shape) == 4:
                    mod = nn.BatchNorm2d(rm.shape[0], eps=a[7], momentum=a[6], affine=ts[0] is not None)
                params = dict(zip(("weight", "bias", "running_mean", "running_var"), ts))
                inputs = (a[0],)
            elif node.target == aten.layer_norm.default:
                w_t, b_t = attr(a[2]), attr(a[3])
                mod = nn.LayerNorm(tuple(a[1]), eps=a[4] if a[4] is not None else 1e-5,
                                   elementwise_affine=w_t is not None, bias=b_t is not None)
                params = {"weight": w_t, "bias": b_t}
                inputs = (a[0],)
            else:
                continue
        except (LookupError, KeyError, TypeError, AttributeError):
            continue  # not a call on plain parameters: left as it is
        for pname, target in params.items():
            if target is None:
                continue
            value = fetch(target)
            if isinstance(value, nn.Parameter):
                setattr(mod, pname, value)
            else:
                mod.register_buffer(pname, value)
        counter += 1
        mod.train(False)
        lifted.append(mod)
        name = _free_name(new, params, counter)
        new.add_submodule(name, mod)
        with graph.inserting_before(node):
            call = graph.call_module(name, tuple(inputs))
        call.meta = dict(node.meta)
        node.replace_all_uses_with(call)
        graph.erase_node(node)
    if not counter:
        return gm
    graph.eliminate_dead_code()
    # the parameters now live in the lifted modules only
    used = {n.target for n in graph.nodes if n.op == "get_attr"}
    for pname, _ in list(new.named_parameters(remove_duplicate=False)) + list(new.named_buffers(remove_duplicate=False)):
        mod_path, _, leaf = pname.rpartition(".")
        owner = new.get_submodule(mod_path) if mod_path else new
        if any(owner is m for m in lifted) or pname in used:
            continue
        owner._parameters.pop(leaf, None)
        owner._buffers.pop(leaf, None)
    new.delete_all_unused_submodules()
    new.recompile()
    new.train(False)
    try:
        with torch.inference_mode():
            same = torch.allclose(logits_of(gm(*args)), logits_of(new(*args)), rtol=1e-4, atol=1e-5)
    except Exception:
        same = False
    return new if same else gm


def _free_name(gm: nn.Module, params: dict, counter: int) -> str:
    """The lifted module takes its parameters' owner's place ("features.0") when that owner is a
    bare container holding nothing else; otherwise a fresh top-level name."""
    targets = [t for t in params.values() if t is not None]
    owner_path = targets[0].rpartition(".")[0]
    if owner_path and all(t.rpartition(".")[0] == owner_path for t in targets):
        owner = gm.get_submodule(owner_path)
        held = set(owner._parameters) | set(owner._buffers)
        used = {t.rpartition(".")[2] for t in targets}
        if type(owner) is nn.Module and not owner._modules and held - used <= {"num_batches_tracked"}:
            parent_path, _, leaf = owner_path.rpartition(".")
            parent = gm.get_submodule(parent_path) if parent_path else gm
            delattr(parent, leaf)
            return owner_path
    return f"lifted_{counter}"
