"""Run a recipe's stages on a PyTorch model, measuring after each one.

``run_recipe(handle, recipe, train, validation)`` returns the compressed ModelHandle and one row
per stage (row 0 = the source model): parameters, MACs at batch 1, fp32 file size (and the same
file zlib-compressed: the only figure unstructured sparsity changes), PyTorch latency at batch 1
on one thread (median), validation accuracy and its drop against the source, per-class accuracy
and the largest per-class drop, the stage's hyperparameters, what was built or removed, and the
training history. Drops are fractions (0.03 = 3 points), always against the source model.

A stage over its ``max_accuracy_drop`` / ``max_class_accuracy_drop`` raises BudgetError (with
``.stages`` holding the rows so far), or, with ``on_fail = "keep_last_good"``, is discarded and
the pipeline ends with the model from before that stage (later stages are marked skipped).
"""

from __future__ import annotations

import copy
import dataclasses
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..data import UNLABELLED, Dataset, load_data
from ..errors import BudgetError, ConfigError, DataError
from ..source import ModelHandle
from .cache import StageCache, chain
from .recipe import Recipe, Stage, load_recipe


def run_recipe(handle: ModelHandle, recipe: Recipe | str | Path, train: Dataset, validation: Dataset,
               progress: bool = True, *, latency_runs: int = 50,
               cache: StageCache | None = None) -> tuple[ModelHandle, list[dict[str, Any]]]:
    """Run every stage of `recipe` on `handle`'s PyTorch module (the handle itself is not changed);
    returns (handle of the compressed model, stage rows). With `cache`, a stage already run on the
    same parent, data and settings is loaded instead of trained (its row says cache: hit)."""
    import torch

    from ..hashing import sha256_state_dict
    from ..parity import accuracy, per_class_accuracy
    from . import _torch as T

    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe)
    if handle.module is None:
        raise ConfigError(f"{recipe.path}: {handle.spec} is an ONNX model; distillation and pruning need a "
                          "PyTorch source (path/file.py:factory, a .pt2 program or a Hugging Face directory)")
    names = handle.input_names
    T.check_inputs(train, names, "training")
    T.check_inputs(validation, names, "validation")
    if validation.labels is None:
        raise DataError(f"{validation.path}: the validation set has no labels; a compression recipe "
                        "measures accuracy after every stage")
    id2label = {str(k): str(v) for k, v in (handle.metadata.get("id2label") or {}).items()}

    with T.threads(recipe.threads), _Bars(progress) as bars:
        ex1 = T.batch(validation, names, slice(0, 1))
        ex2 = T.batch(train, names, slice(0, min(2, len(train))))
        try:
            with torch.inference_mode():
                n_classes = int(T.logits_of(handle.module(*ex2)).shape[-1])
        except Exception as exc:
            shapes = ", ".join(f"{n}: {'x'.join(map(str, a.shape[1:]))} {a.dtype}" for n, a in
                               ((n, train.inputs[n]) for n in names))
            raise DataError(f"{train.path}: the model cannot take the training inputs ({shapes}): "
                            f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}") from exc
        for data, role in ((train, "training"), (validation, "validation")):
            lab = data.labels
            if lab is not None and role == "training":
                lab = lab[lab != UNLABELLED]  # unlabelled training samples: the teacher labels them
            if lab is not None and len(lab) and (lab.min() < 0 or lab.max() >= n_classes):
                raise DataError(f"{data.path}: {role} labels range {int(lab.min())}-{int(lab.max())}; "
                                f"the model has {n_classes} outputs (classes 0-{n_classes - 1})"
                                + ("; -1 marks an unlabelled training sample" if role == "training" else ""))
        source = T.lift_graph_module(handle.module, ex2)

        def measure(model) -> dict[str, Any]:
            logits = T.predict(model, validation, names)
            size, packed = T.sizes(model)
            return {"params": T.count_params(model), "macs": T.count_macs(model, ex1),
                    "size_mb": size / 1e6, "compressed_mb": packed / 1e6, "sparsity": T.sparsity(model),
                    "latency_ms": T.latency_ms(model, ex1, runs=latency_runs),
                    "accuracy": accuracy(logits, validation.labels),
                    "per_class_accuracy": per_class_accuracy(logits, validation.labels)}

        t0 = time.perf_counter()
        # stage cache (compress/cache.py): keys chain the source, the data and every stage so far
        key = chain(handle.sha256, {"train": [train.sha256, len(train)], "threads": recipe.threads,
                                    "validation": [validation.sha256, validation.split, len(validation)]})
        hit = cache.get(key) if cache else None
        base = hit["base"] if hit else measure(source)
        if cache and not hit:
            cache.put(key, {"base": base})
        rows = [_row(0, "source", "source", "source", base, base, id2label, seconds=time.perf_counter() - t0)]
        current, kept, vocab_dir = source, [], None
        n = len(recipe.stages)
        for stage in recipe.stages:
            where = f"{recipe.path}: stage {stage.index}"
            t0 = time.perf_counter()
            key = chain(key, stage.hyperparameters())
            hit = cache.get(key) if cache else None
            table = tok_dir = None
            if hit:
                model, row, table, tok_dir = hit["model"], {**hit["row"], "stage": stage.index}, \
                    hit.get("table"), hit.get("tokenizer")
                cache.hits += 1
                cache.seconds_saved += float(row.get("seconds", 0.0))
                row["cache"] = "hit"
            else:
                bar = bars.stage(f"stage {stage.index}/{n} {stage.label}")
                ctx = _Ctx(names, train, validation, handle.is_transformer, n_classes, ex2, where, recipe.path, bar)
                if stage.kind == "distill":
                    model, info = _distill(stage, current, ctx)
                elif stage.kind == "vocab":
                    model, info, table, tok_dir = _vocab(stage, current, ctx, vocab_dir or handle.hf_dir,
                                                         handle.metadata.get("tokenizer_dir"))
                else:
                    model, info = _prune(stage, current, ctx)
            if table is not None:
                # the stages after a vocab stage, and its own measurement, read the new ids
                train, validation = (_retokenize(d, handle, tok_dir, table) for d in (train, validation))
                ex1, ex2 = T.batch(validation, names, slice(0, 1)), T.batch(train, names, slice(0, min(2, len(train))))
            if not hit:
                m = measure(model)
                row = _row(stage.index, stage.label, stage.kind, "kept", m, base, id2label,
                           seconds=time.perf_counter() - t0, stage=stage, info=info)
                if cache:
                    cache.misses += 1
                    cache.seconds_spent += row["seconds"]
                    cache.put(key, {"row": row}, model, table, tok_dir)
            over = _over_budget(stage, row, base, id2label)
            if over:
                row["status"] = "over budget"
                rows.append(row)
                msg = (f"{where} ({stage.label}): {'; '.join(over)}")
                if recipe.on_fail == "stop":
                    err = BudgetError(f"{msg}; stopped (on_fail = 'stop'): relax the budget, change the stage, "
                                      "or set on_fail = 'keep_last_good' to keep the model from before it")
                    err.stages = rows
                    raise err
                row["status"] = "over budget: discarded"
                row["note"] = msg
                for rest in recipe.stages[stage.index:]:
                    rows.append({"stage": rest.index, "name": rest.label, "kind": rest.kind, "status": "skipped",
                                 "hyperparameters": rest.hyperparameters()})
                break
            rows.append(row)
            current = model
            kept.append(stage.label)
            if stage.kind == "vocab":
                vocab_dir = tok_dir

    if not kept:
        return handle, rows
    T.set_train(current, False)
    out = ModelHandle(handle.kind, handle.spec, sha256_state_dict(current),
                      [dataclasses.replace(s) for s in handle.inputs], list(handle.outputs), module=current,
                      task=handle.task, is_transformer=handle.is_transformer)
    out.metadata = {**handle.metadata,
                    "compressed": {"source_sha256": handle.sha256, "recipe": recipe.path, "stages": kept}}
    if vocab_dir is not None:  # a pruned vocabulary: the renumbered tokenizer goes with the model
        out.metadata["tokenizer_dir"] = str(vocab_dir)
    elif handle.hf_dir is not None:
        # The compressed network no longer matches the directory's config.json (fewer layers, heads,
        # FFN neurons): it is exported from the module, and the directory serves for its tokenizer.
        out.metadata["tokenizer_dir"] = str(handle.hf_dir)
    return out, rows


# ---------------------------------------------------------------------------------------------
# stages


@dataclasses.dataclass
class _Ctx:
    names: list[str]
    train: Dataset
    validation: Dataset
    is_transformer: bool
    n_classes: int
    args: tuple
    where: str
    recipe_path: str
    bar: Callable


def _epochs_bar(ctx: _Ctx, stage: Stage, epochs: int) -> Callable:
    epochs += stage.qat_epochs  # quantization-aware epochs follow the float ones (distill._qat)
    if epochs == 0:
        return None
    steps = (len(ctx.train) + stage.batch_size - 1) // stage.batch_size
    return ctx.bar(steps * epochs)


def _distill(stage: Stage, teacher, ctx: _Ctx):
    from . import _torch as T
    from . import distill, prune

    def width(model, ratio):
        return prune.structured(model, ctx.args, ratio=ratio, importance="magnitude", round_to=8,
                                head=T.find_head(model, ctx.args, ctx.n_classes), is_transformer=False,
                                where=ctx.where)

    student, built = distill.build_student(stage, teacher, is_transformer=ctx.is_transformer, args=ctx.args,
                                           recipe_path=ctx.recipe_path, where=ctx.where, prune_width=width)
    pairs = _pairs(stage, student, teacher, built.get("layers"), ctx)
    student, trained = distill.train(student, teacher, names=ctx.names, train_data=ctx.train,
                                     validation=ctx.validation, stage=stage, epochs=stage.epochs,
                                     is_transformer=ctx.is_transformer, pairs=pairs,
                                     progress=_epochs_bar(ctx, stage, stage.epochs))
    return student, {"structure": built, "training": trained}


def _pairs(stage: Stage, student, teacher, layers, ctx: _Ctx):
    """Layer pairs for the hidden-state and attention losses; None (teacher logits cached once)
    when the stage uses neither."""
    from . import distill
    if stage.hidden_loss_weight > 0 or stage.attention_loss_weight > 0:
        return distill.hidden_pairs(student, teacher, layers, ctx.where)
    return None


def _prune(stage: Stage, teacher, ctx: _Ctx):
    import torch

    from . import _torch as T
    from . import distill, prune

    model = copy.deepcopy(teacher)
    head = T.find_head(model, ctx.args, ctx.n_classes)
    if stage.method == "structured":
        def gradients(m):  # Taylor importance: |w * dL/dw| over a few training batches
            T.set_train(m, False)
            bs = stage.batch_size
            for s in range(0, min(len(ctx.train), 4 * bs), bs):
                args = T.batch(ctx.train, ctx.names, slice(s, s + bs))
                out = T.logits_of(m(*args))
                labels = None if ctx.train.labels is None else np.asarray(ctx.train.labels[s:s + bs], dtype=np.int64)
                if labels is not None and (labels >= 0).all():
                    loss = torch.nn.functional.cross_entropy(out, torch.from_numpy(labels))
                else:  # unlabelled (some) samples: the distillation loss (kd_loss skips missing labels)
                    with torch.no_grad():
                        t = T.logits_of(teacher(*args))
                    loss = distill.kd_loss(out, t, None if labels is None else torch.from_numpy(labels),
                                           stage.temperature, 1.0)
                loss.backward()

        model, built = prune.structured(model, ctx.args, ratio=stage.ratio, importance=stage.importance,
                                        round_to=stage.round_to, structures=stage.structures, head=head,
                                        is_transformer=ctx.is_transformer, where=ctx.where, gradients=gradients)
        pairs = _pairs(stage, model, teacher, None, ctx)
        model, trained = distill.train(model, teacher, names=ctx.names, train_data=ctx.train,
                                       validation=ctx.validation, stage=stage, epochs=stage.finetune_epochs,
                                       is_transformer=ctx.is_transformer, pairs=pairs,
                                       progress=_epochs_bar(ctx, stage, stage.finetune_epochs))
        return model, {"structure": built, "training": trained}
    layers = prune.magnitude_masks(model, stage.ratio, head)
    if not layers:
        raise ConfigError(f"{ctx.where}: method = 'magnitude' found no Conv/Linear layer to prune besides the head")
    pairs = _pairs(stage, model, teacher, None, ctx)
    model, trained = distill.train(model, teacher, names=ctx.names, train_data=ctx.train,
                                   validation=ctx.validation, stage=stage, epochs=stage.finetune_epochs,
                                   is_transformer=ctx.is_transformer, pairs=pairs,
                                   progress=_epochs_bar(ctx, stage, stage.finetune_epochs))
    prune.make_permanent(layers)
    built = {"method": "magnitude (unstructured L1, per layer)", "ratio": stage.ratio, "layers": len(layers),
             "note": "size only: zeroed weights keep their shapes; the compressed file shrinks, "
                     "inference is not faster"}
    return model, {"structure": built, "training": trained}


# ---------------------------------------------------------------------------------------------
# rows, budgets, table


def _vocab(stage: Stage, model, ctx: _Ctx, tok_dir, fallback):
    """Vocabulary pruning (compress/vocab.py); the renumbered tokenizer lands in a fresh temporary
    folder that the handle names (metadata tokenizer_dir), read by convert and copied into bundles."""
    import tempfile

    from . import vocab
    tok_dir = Path(tok_dir or fallback or "")
    if not ctx.is_transformer or not (tok_dir / "tokenizer.json").is_file() or "input_ids" not in ctx.names:
        raise ConfigError(f"{ctx.where} (vocab): vocabulary pruning needs a text transformer with a Hugging Face "
                          "tokenizer (tokenizer.json) and an input_ids input")
    from tokenizers import Tokenizer
    old = Tokenizer.from_file(str(tok_dir / "tokenizer.json"))
    old_size, unk = old.get_vocab_size(), old.token_to_id("[UNK]")
    keep = vocab.kept_ids(tok_dir, ctx.train, stage.min_count)
    out = Path(tempfile.mkdtemp(prefix="edgekit-vocab-"))
    new = vocab.write_tokenizer(tok_dir, keep, out)
    table = vocab.remap_table(new, old_size, new.get(unk, 0) if unk is not None else 0)
    student = copy.deepcopy(model)
    name = vocab.slice_embedding(student, old_size, keep)
    seq = ctx.validation.inputs["input_ids"].shape[1]
    info = {"tokens_kept": int(len(keep)), "tokens_before": int(old_size), "embedding": name,
            "tokenizer": "renumbered copy (bundle tokenizer.json)",
            "validation_tokenization": vocab.check(tok_dir, out, ctx.validation.path, table, seq)}
    if stage.positions:
        info["positions"] = vocab.slice_positions(student, seq)
    return student, info, table, out


def _retokenize(data: Dataset, handle: ModelHandle, tok_dir, table: np.ndarray) -> Dataset:
    """The data as the bundle will read it after a vocab stage. Text is tokenized again with the
    renumbered tokenizer: WordPiece splits a word whose piece was dropped into shorter kept pieces
    (74% of the MiniLM example's held-out sentences change so), which old ids remapped cannot show.
    Token-id files (.npz) have no text: their ids are remapped, a dropped token read as [UNK]."""
    if data.format != "jsonl" or tok_dir is None:
        return dataclasses.replace(data, inputs={**data.inputs, "input_ids": table[data.inputs["input_ids"]]})
    new = load_data(data.path, handle, sequence_length=data.inputs["input_ids"].shape[1],
                    tokenizer_dir=tok_dir, role=data.role)
    if data.rows is not None:  # the same samples of the same file (a split_holdout half, a head);
        new = new.take(data.rows[data.rows < len(new)])  # rows a shorter file lacks fail the check below
    same = (new.labels is None) == (data.labels is None) and (
        data.labels is None or np.array_equal(new.labels, data.labels))
    if len(new) != len(data) or not same:
        raise DataError(f"{data.path}: changed while the recipe ran (re-read after the vocab stage, its lines "
                        "no longer match): keep the data files fixed during a conversion")
    return dataclasses.replace(new, split=data.split, rows=data.rows)


def _row(index: int, name: str, kind: str, status: str, m: dict, base: dict, id2label: dict,
         seconds: float, stage: Stage | None = None, info: dict | None = None) -> dict[str, Any]:
    drops = {c: base["per_class_accuracy"][c] - m["per_class_accuracy"].get(c, 0.0)
             for c in base["per_class_accuracy"]}
    worst = max(drops, key=lambda c: (drops[c], -int(c) if c.lstrip("-").isdigit() else 0)) if drops else None
    row = {"stage": index, "name": name, "kind": kind, "status": status,
           "params": m["params"], "macs": m["macs"], "size_mb": round(m["size_mb"], 6),
           "compressed_mb": round(m["compressed_mb"], 6), "sparsity": round(m["sparsity"], 6),
           "latency_ms": round(m["latency_ms"], 6),
           "speedup": round(base["latency_ms"] / m["latency_ms"], 4) if m["latency_ms"] > 0 else None,
           "accuracy": m["accuracy"], "accuracy_drop": round(base["accuracy"] - m["accuracy"], 6),
           "per_class_accuracy": m["per_class_accuracy"],
           "per_class_drop": {c: round(d, 6) for c, d in drops.items()},
           "max_class_drop": round(drops[worst], 6) if worst is not None else 0.0,
           "max_class_drop_class": id2label.get(worst, worst) if worst is not None else None,
           "seconds": round(seconds, 2)}
    if stage is not None:
        hp = stage.hyperparameters()
        if info and "training" in info:
            hp["learning_rate"] = info["training"].get("learning_rate", hp["learning_rate"])
        row["hyperparameters"] = hp
    if info:
        row.update(info)
    if kind == "prune" and stage is not None and stage.method == "magnitude":
        row["note"] = "size only (compressed file); not a speed-up"
    return row


def _over_budget(stage: Stage, row: dict, base: dict, id2label: dict) -> list[str]:
    over = []
    eps = 1e-9
    if stage.max_accuracy_drop is not None and row["accuracy_drop"] > stage.max_accuracy_drop + eps:
        over.append(f"validation accuracy {row['accuracy']:.4f} is {row['accuracy_drop']:.4f} below the "
                    f"source's {base['accuracy']:.4f}, over max_accuracy_drop = {stage.max_accuracy_drop:g}")
    if stage.max_class_accuracy_drop is not None and row["max_class_drop"] > stage.max_class_accuracy_drop + eps:
        over.append(f"class {row['max_class_drop_class']!r} accuracy drops {row['max_class_drop']:.4f}, over "
                    f"max_class_accuracy_drop = {stage.max_class_accuracy_drop:g}")
    return over


def _count(n: int | None) -> str:
    if n is None:
        return "-"
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= div:
            return f"{n / div:.2f}{unit}"
    return str(n)


def render_stage_table(stages: list[dict[str, Any]], title: str | None = None):
    """A rich Table of the stage rows (print it with a console from edgekit.progress.console())."""
    from rich.table import Table
    t = Table(title=title or "compression stages (validation accuracy; PyTorch latency at batch 1, 1 thread, median)")
    cols = ("#", "stage", "status", "params", "MACs", "size MB", "zlib MB", "latency ms", "speed-up",
            "accuracy", "drop", "worst class drop")
    for c in cols:
        t.add_column(c, justify="left" if c in ("stage", "status") else "right")
    for r in stages:
        if r.get("status") == "skipped":
            t.add_row(str(r["stage"]), r["name"], "[dim]skipped[/]", *["-"] * (len(cols) - 3))
            continue
        status = r["status"]
        if status.startswith("over budget"):
            status = f"[red]{status}[/]"
        elif status == "kept":
            status = "[green]kept[/]"
        size = f"{r['size_mb']:.3f}"
        if r.get("sparsity", 0) >= 0.01:
            size += f" ({r['sparsity']:.0%} zeros)"
        t.add_row(str(r["stage"]), r["name"], status, _count(r["params"]), _count(r["macs"]), size,
                  f"{r['compressed_mb']:.3f}", f"{r['latency_ms']:.3f}",
                  f"{r['speedup']:.2f}x" if r.get("speedup") else "-", f"{r['accuracy']:.4f}",
                  f"{r['accuracy_drop']:+.4f}" if r["stage"] else "-",
                  f"{r['max_class_drop']:+.4f} ({r['max_class_drop_class']})" if r["stage"] else "-")
    return t


# ---------------------------------------------------------------------------------------------
# progress


class _Bars:
    """One rich progress bar per training stage (stderr; transient when not a terminal)."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.progress = None

    def __enter__(self) -> "_Bars":
        if self.enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
            console = Console(stderr=True)
            self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TimeElapsedColumn(), console=console, transient=not console.is_terminal)
            self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.progress is not None:
            self.progress.stop()

    def stage(self, label: str) -> Callable[[int], Callable[[int, str], None]]:
        def make(total: int) -> Callable[[int, str], None]:
            if self.progress is None:
                return lambda advance, text: None
            task = self.progress.add_task(label, total=max(total, 1))

            def update(advance: int, text: str) -> None:
                self.progress.update(task, advance=advance, description=f"{label}: {text}")
            return update
        return make

