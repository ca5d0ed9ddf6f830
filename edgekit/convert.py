"""The conversion pipeline, top to bottom:

    load source -> load + check data -> source accuracy (PyTorch) -> per target and precision:
    export -> parity -> quantize -> parity -> accuracy on the dev machine -> bundle (atomic)

The source is loaded (and, with a recipe, compressed) once; each target gets its own bundle.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from .accuracy import choose_calibration, control
from .backends import get_backend
from .budget import Estimate, check_estimate, check_size, estimate
from .bundle import BundleWriter, copy_harness, copy_server, save_npz, write_manifest
from .data import Dataset, check_consistent, load_data, split_holdout
from .errors import BackendError, DataError, EdgekitError
from .host import describe as describe_host, host_matches
from .results import BundleResult, ConversionFailed, raise_failures, versions as _versions  # noqa: F401 (re-exported)


from .parity import compare, run_all
from .source import ModelHandle, TensorSpec, load
from .targets import TargetProfile, load_targets
from .tasks import Task, get_task

SELFCHECK_SAMPLES = 32
# How far a device may stray from the dev machine's outputs of the *same* artifact. fp32 differs
# only by summation order and kernel choice; int8 may differ by a quantization step where the
# device's kernels round differently (no-VNNI vs VNNI vs ARM), so int8 is judged on top-1 too.
SELFCHECK_TOL = {"fp32": (1e-4, 1e-3, 1.0), "fp16": (1e-2, 1e-2, 0.95),
                 "int8": (5e-2, 5e-2, 0.9), "int8-dynamic": (5e-2, 5e-2, 0.9)}
# A float export must reproduce PyTorch: anything beyond this is a broken export, not rounding.
EXPORT_ATOL = 1e-3


@dataclasses.dataclass
class Prepared:
    """What every target shares: the loaded source, the data, and the source's own results."""
    handle: ModelHandle
    calibration: Dataset
    validation: Dataset                  # held out: the reported figures, the bundle's validation.npz
    samples: Dataset
    reference: list[np.ndarray]          # source outputs on the self-check samples
    source_accuracy: float = float("nan")  # filled by score_source(), after the cheap checks
    source_per_class: dict[str, float] = dataclasses.field(default_factory=dict)
    estimates: dict[str, Estimate] = dataclasses.field(default_factory=dict)  # by precision
    source_logits: np.ndarray | None = None  # the exported PyTorch model's outputs on the validation set
    source_quality: dict = dataclasses.field(default_factory=dict)  # the task's figures for the source
    tuning: Dataset | None = None        # what every choice (accuracy back-off) is judged on
    tuning_logits: np.ndarray | None = None
    tuning_quality: dict = dataclasses.field(default_factory=dict)

    @property
    def task(self) -> Task:
        """What the source is for (edgekit/tasks), as the handle says."""
        return get_task(self.handle.task)


def _bind_specs(handle: ModelHandle, data: Dataset) -> None:
    """Fill input shapes/dtypes the source could not tell (python factories) from the data."""
    for spec in handle.inputs:
        a = data.inputs[spec.name]
        if spec.dtype is None:
            spec.dtype = a.dtype.name
        if spec.shape is None:
            spec.shape = (None,) + tuple(a.shape[1:])


def prepare(source: str | ModelHandle, calibration: str, validation: str, *,
            sequence_length: int = 128, tokenizer: str | None = None, test: str | None = None) -> Prepared:
    """Load the source and the data files and check them against each other, before any export.
    The calibration samples run through the source first: once it takes them, a validation file
    that differs from them is the one named (and calibration fixes what the source does not say).
    With `test`, choices are tuned on the validation file and figures reported on the test file;
    without, the validation file is split (data.split_holdout)."""
    handle = source if isinstance(source, ModelHandle) else load(source)
    kw = {"sequence_length": sequence_length, "tokenizer_dir": tokenizer}
    calib = load_data(calibration, handle, role="calibration", **kw)
    runner = handle.runner()
    samples = calib.head(SELFCHECK_SAMPLES)
    reference = run_source(runner, samples)
    tuning, held, files = load_splits(validation, test, handle, calib, **kw)
    # The task refuses what its figures cannot be computed on: labels a classifier cannot emit (or
    # none), an embedding that is not N x D or holds NaN, too few items for recall@10.
    task = get_task(handle.task)
    task.check_outputs(handle, reference[0], samples)
    task.check(handle, reference, [*files, calib])  # whole files: their errors name file positions
    _bind_specs(handle, calib)
    return Prepared(handle, calib, held, samples, reference, tuning=tuning)


def load_splits(validation: str, test: str | None, handle: ModelHandle, fixed_by: Dataset | None,
                **kw) -> tuple[Dataset, Dataset, list[Dataset]]:
    """(tuning, held-out, the files as read): the validation file and the test file, or the
    validation file's two halves (split_holdout). Each is checked against `fixed_by`."""
    val = load_data(validation, handle, role="validation", **kw)
    if fixed_by is not None:
        check_consistent(val, fixed_by, handle)
    if test is None:
        return (*split_holdout(val), [val])
    held = load_data(test, handle, role="validation", **kw)
    check_consistent(held, fixed_by or val, handle)
    return dataclasses.replace(val, split="tuning"), dataclasses.replace(held, split="held-out"), [val, held]


def run_source(runner, data: Dataset) -> list[np.ndarray]:
    """The source's outputs on `data`; a failure is the data's (the source loaded), named by file."""
    try:
        return run_all(runner, data)
    except Exception as exc:
        shapes = ", ".join(f"{k}: {'x'.join(map(str, v.shape[1:]))} {v.dtype}" for k, v in data.inputs.items())
        msg = str(exc).strip().splitlines()
        raise DataError(f"{data.path}: the source model cannot take these {data.role} inputs ({shapes}): "
                        f"{type(exc).__name__}: {msg[0][:200] if msg else ''}") from exc


def score_source(prep: Prepared) -> None:
    """The source model's figures on the validation set: the baseline every drop is measured from
    (classification: top-1; feature extraction: the source's embeddings every artifact's are
    compared with, and its k-NN top-1 where there are labels)."""
    runner = prep.handle.runner()
    logits = run_source(runner, prep.validation)[0]
    prep.task.check_outputs(prep.handle, logits, prep.validation)
    prep.source_logits = logits
    prep.source_quality = prep.task.source_quality(logits, prep.validation.labels)
    prep.source_accuracy = prep.task.source_score(prep.source_quality)
    prep.source_per_class = prep.source_quality.get("per_class", {})
    prep.tuning_logits = run_source(runner, prep.tuning)[0]
    prep.tuning_quality = prep.task.source_quality(prep.tuning_logits, prep.tuning.labels)


def bundle_name(target: TargetProfile, precision: str, base_precision: str) -> str:
    return target.name if precision == base_precision else f"{target.name}-{precision}"


def convert_one(prep: Prepared, target: TargetProfile, out: Path, *, name: str,
                license: str = "unknown", provenance: str = "unknown", label: str | None = None,
                extra_manifest: dict | None = None, check_budgets: bool = True) -> BundleResult:
    backend = get_backend(target.runtime)
    backend.available()
    with BundleWriter(out / name) as tmp:
        work = tmp / ".work"
        work.mkdir()
        fp = backend.export(prep.handle, target, work, prep.samples.inputs)
        parity = [compare("export", run_all(backend.open(fp, 1), prep.samples), prep.reference)]
        if parity[0].max_abs_diff > EXPORT_ATOL * max(1.0, float(np.abs(prep.reference[0]).max())):
            raise BackendError(f"{prep.handle.spec}: the {target.runtime} export differs from PyTorch by "
                               f"{parity[0].max_abs_diff:.3g} (max abs) on the calibration samples; "
                               f"expected <= {EXPORT_ATOL} (a broken export)")
        # This machine's int8 kernels are the target's only when its CPU is the target's class: an
        # ARM or VNNI target is judged on the runtime's reference arithmetic instead (host_matches).
        ref_arith = target.runtime == "onnxruntime" and not host_matches(target)

        def opener(a, threads):
            return backend.open(a, threads, reference=True) if ref_arith else backend.open(a, threads)

        task, labels = prep.task, prep.validation.labels

        tuned: dict[int, dict] = {}  # id(artifact) -> its quality on the tuning split

        outputs: dict[int, np.ndarray] = {}  # id(artifact) -> its first output on the tuning split

        def evaluate(a) -> float:  # the task's margin on the tuning split: top-1, or how far inside the embedding floors
            outputs[id(a)] = run_all(opener(a, 1), prep.tuning)[0]
            tuned[id(a)] = task.quality(outputs[id(a)], prep.tuning_logits, prep.tuning.labels)
            return task.margin(tuned[id(a)], target)

        def fidelity(a) -> float:  # relative squared error of those outputs against the source's
            src = np.asarray(prep.tuning_logits, np.float64)
            return float(np.mean((outputs[id(a)] - src) ** 2) / max(np.mean(src ** 2), 1e-30))
        calibration_choice = None
        if target.int8_for(prep.handle.is_transformer).calibrate_method == "auto":
            target, art, tried = choose_calibration(backend, fp, prep.handle, target, prep.calibration, work,
                                                    evaluate, fidelity)
            calibration_choice = {"chosen": target.int8_for(prep.handle.is_transformer).calibrate_method,
                                  "tried": tried, "judged_on": "tuning",
                                  **({} if tried else {"note": "this precision/mode calibrates nothing"})}
        else:
            art = None
        if art is None:
            art = backend.quantize(fp, prep.handle, target, prep.calibration, work)
        outcome = control(backend, fp, art, evaluate(art), task.source_margin(prep.tuning_quality, target),
                          prep.handle, target, prep.calibration, prep.tuning, work, evaluate,
                          task.max_drop(target))
        art = outcome.artifact
        if check_budgets:
            why = "" if outcome.result == "within budget" else (
                f" (after accuracy control: {outcome.result}; int8 alone lost "
                f"{outcome.attempts[0]['drop']:.4f} of the task's {task.metric} score, > the allowed "
                f"{task.max_drop(target):g})")
            check_size(target, art.size_bytes, why)
        runner = opener(art, 1)
        expected = run_all(runner, prep.samples)
        if art is not fp:
            parity.append(compare("quantize", expected, prep.reference))
        logits = run_all(runner, prep.validation)[0]
        quality = task.quality(logits, prep.source_logits, labels)
        acc = task.score(quality)
        # the shipped artifact's figures on the tuning split too (from accuracy control): what `edgekit search` judges on
        tq = tuned[id(art)]
        tuning_figures = {"n": len(prep.tuning), "value": task.score(tq),
                          "margin": task.margin(tq, target), "source_margin": task.source_margin(prep.tuning_quality, target),
                          **({"per_class": tq["per_class"], "source_per_class": prep.tuning_quality.get("per_class", {})}
                             if "per_class" in tq else {})}

        # Move the model files into the bundle under stable names (model.onnx, model.xml/.bin, ...).
        model_files = []
        for f in art.files:
            dest = tmp / ("model" + "".join(f.suffixes[-1:]))
            shutil.move(str(f), dest)
            model_files.append(dest)
        shutil.rmtree(work)
        main_file = tmp / ("model" + art.path.suffix)

        names = prep.handle.outputs
        save_npz(tmp / "samples.npz", {
            **{f"input.{k}": v for k, v in prep.samples.inputs.items()},
            **{f"expected.{n}": a for n, a in zip(names, expected)},
            **{f"reference.{n}": a for n, a in zip(names, prep.reference)},
        })
        # reference.<output>: the float PyTorch outputs, so the device measures top-1 agreement of
        # the exact artifact with fp32 on the whole validation set (robustness suite).
        save_npz(tmp / "validation.npz", {**{f"input.{k}": v for k, v in prep.validation.inputs.items()},
                                          **({} if labels is None else {"labels": labels.astype(np.int64)}),
                                          f"reference.{names[0]}": prep.source_logits})
        copy_harness(tmp / "harness")
        copy_server(tmp / "server")
        tokenizer_section = _copy_tokenizer(prep, tmp)
        # Drift reference (docs/TRUST.md): inputs of calibration + validation, the artifact's outputs
        # on validation. A hashed file of its own keeps manifest.json readable.
        from .trust.drift import reference_stats
        from .trust.provenance import source_commit
        drift_ref = reference_stats([prep.calibration, prep.validation], {names[0]: logits})
        (tmp / "drift_reference.json").write_text(json.dumps(drift_ref, separators=(",", ":")) + "\n",
                                                  encoding="utf-8")
        (tmp / "README.txt").write_text(_readme(name, target, main_file.name), encoding="utf-8")

        atol, rtol, top1 = SELFCHECK_TOL[art.precision]
        size = sum(f.stat().st_size for f in model_files)
        manifest: dict[str, Any] = {
            "bundle": {"name": name, "label": label},
            "model": {"file": main_file.name, "files": [f.name for f in model_files],
                      "format": backend.model_format, "runtime": target.runtime,
                      "precision": art.precision, "task": prep.handle.task, "size_bytes": size,
                      "inputs": [_io_spec(s, target) for s in prep.handle.inputs],
                      "outputs": [{"name": n, "shape": [1 if target.static_shapes else None, *a.shape[1:]],
                                   "dtype": a.dtype.name}
                                  for n, a in zip(names, expected)]},
            "target": target.to_dict(),
            # The harness pins inference_precision as the parity check here did (host.py).
            "runtime_settings": {"threads": target.threads, "device": target.device,
                                 "inference_precision": target.compute_precision},
            "host": describe_host(target, getattr(runner, "inference_precision", "f32")),
            "conversion": {"precision": art.precision, **art.details,
                           "parity": [p.to_dict() for p in parity],
                           "accuracy_control": {**outcome.to_dict(), "judged_on": prep.tuning.describe()},
                           **({"calibration_choice": calibration_choice} if calibration_choice else {}),
                           "tuning_accuracy": tuning_figures,
                           "estimate": estimate_for(prep, target).to_dict(),
                           "budgets_checked_at_conversion": check_budgets,
                           # the task's figures: top-1 (+ per class), or embedding geometry
                           "accuracy": {"metric": task.metric, "n": len(prep.validation), "value": acc,
                                        "data": prep.validation.split or "held-out",
                                        "measured_with": "this machine's kernels" if not ref_arith else
                                        "reference arithmetic (QDQ in float): this machine lacks the target's "
                                        "CPU features, whose int8 kernels differ from its own",
                                        **{k: v for k, v in quality.items() if k not in ("metric", "value")}}},
            "source": {**prep.handle.describe(), "accuracy": prep.source_accuracy,
                       "per_class_accuracy": prep.source_per_class, "quality": prep.source_quality},
            # tuning: what accuracy control chose on; validation: held out, what the figures above, the
            # bundle's validation.npz and so the gate measure.
            "data": {"calibration": prep.calibration.describe(), "tuning": prep.tuning.describe(),
                     "validation": prep.validation.describe()},
            "provenance": {"license": license or "unknown", "provenance": provenance or "unknown",
                           **source_commit(prep.handle.spec)},
            "drift": {"file": "drift_reference.json", "schema": drift_ref["schema"],
                      "features": len(drift_ref["features"])},
            "versions": _versions(target.runtime),
            "selfcheck": {"file": "samples.npz", "n": len(prep.samples), "atol": atol, "rtol": rtol,
                          "min_top1_agreement": top1},
            "validation": {"file": "validation.npz", "n": len(prep.validation), "metric": task.metric,
                           "labelled": labels is not None},
            **({"tokenizer": tokenizer_section} if tokenizer_section else {}),
            **(extra_manifest or {}),
        }
        write_manifest(tmp, manifest)
    return BundleResult(name, out / name, target.name, art.precision, size / 2**20, acc,
                        prep.source_accuracy, [p.to_dict() for p in parity], outcome.result, task.metric)


def _copy_tokenizer(prep: Prepared, tmp: Path) -> dict | None:
    """Text models from a Hugging Face directory: its tokenizer.json goes into the bundle, so the model
    server (server/) can take text (BYTES) and tokenize it as the dev machine did (padding to the
    calibration data's length, truncation)."""
    hf = prep.handle.hf_dir or prep.handle.metadata.get("tokenizer_dir")
    ids = prep.calibration.inputs.get("input_ids")
    if hf is None or ids is None or not (Path(hf) / "tokenizer.json").is_file():
        return None
    shutil.copyfile(Path(hf) / "tokenizer.json", tmp / "tokenizer.json")
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(str(tmp / "tokenizer.json"))
    pad = next((t for t in ("[PAD]", "<pad>", "<|pad|>") if tok.token_to_id(t) is not None), None)
    return {"file": "tokenizer.json", "max_length": int(ids.shape[1]),
            "pad_token": pad or "[PAD]", "pad_id": int(tok.token_to_id(pad)) if pad else 0}


def compress(handle: ModelHandle, recipe: str, train: str | None, validation: str, seq: int,
             tokenizer: str | None, progress: bool, test: str | None = None, cache=None):
    """Run a recipe's stages on the source; returns (compressed handle, manifest section, tokenizer)."""
    from .compress import load_recipe, render_stage_table, run_recipe
    from .errors import BudgetError, ConfigError
    from .progress import console
    rec = load_recipe(recipe)  # validated before any long work
    if not train:
        raise ConfigError(f"{recipe}: a recipe needs --train DATA (the data its stages train on)")
    for st in rec.stages:  # refused before any training, not after the stages before it
        if st.kind == "vocab" and not (handle.is_transformer and (tokenizer or handle.hf_dir)):
            raise ConfigError(f"{recipe}: stage {st.index} (vocab): vocabulary pruning needs a text transformer "
                              "with a Hugging Face tokenizer (a HF model directory, or --tokenizer DIR)")
    tr = load_data(train, handle, sequence_length=seq, tokenizer_dir=tokenizer, role="training")
    if handle.task != "classification":
        raise ConfigError(f"{recipe}: compression recipes distil and fine-tune on labels and logits, so "
                          f"they take classifiers only; this source is a {handle.task} model")
    outputs = run_source(handle.runner(), tr.head(2))  # the stages train on it: it must run first
    # The stages are judged on the tuning split only: the held-out one stays unseen until the bundle.
    va, _, files = load_splits(validation, test, handle, tr, sequence_length=seq, tokenizer_dir=tokenizer)
    # before any training: a stage would learn, and be scored on, them
    get_task(handle.task).check(handle, outputs, [tr, *files])
    try:
        compressed, stages = run_recipe(handle, rec, tr, va, progress=progress, cache=cache)
    except BudgetError as exc:
        if getattr(exc, "stages", None):
            console().print(render_stage_table(exc.stages))
        raise
    if progress:
        console().print(render_stage_table(stages))
    # a vocab stage renumbered the tokens: its tokenizer, not the source's, reads the data from here on
    tok = (compressed.metadata.get("tokenizer_dir") if any(s.kind == "vocab" for s in rec.stages) else None) \
        or tokenizer or (str(handle.hf_dir) if handle.hf_dir else None)
    return compressed, {"recipe": rec.to_dict(), "train": tr.describe(), "stages": stages}, tok


def estimate_for(prep: Prepared, target: TargetProfile) -> Estimate:
    """Size and memory estimate before export (ONNX sources: from their initializers); one forward
    pass per precision at most, shared by every target."""
    if target.precision not in prep.estimates:
        if prep.handle.module is not None:
            est = estimate(prep.handle.module, prep.samples.inputs, prep.handle.input_names, target.precision)
        else:
            import onnx
            from .budget import BYTES_PER_WEIGHT, MB
            model = onnx.load(str(prep.handle.onnx_path), load_external_data=False)
            params = sum(int(np.prod(t.dims)) for t in model.graph.initializer)
            est = Estimate(params, params * BYTES_PER_WEIGHT[target.precision] / MB, 0.0)
        prep.estimates[target.precision] = est
    return prep.estimates[target.precision]


def _io_spec(spec: TensorSpec, target: TargetProfile) -> dict:
    shape = list(spec.shape) if spec.shape is not None else None
    if shape and target.static_shapes:
        shape[0] = 1
    return {"name": spec.name, "shape": shape, "dtype": spec.dtype}


def _readme(name: str, target: TargetProfile, model: str) -> str:
    extra = {"onnxruntime": "onnxruntime", "openvino": "openvino", "litert": "ai-edge-litert (or tflite-runtime)"}
    return (f"edgekit bundle {name} for target {target.name} ({target.description})\n\n"
            f"Model: {model} ({target.runtime}, {target.precision}). manifest.json lists every file's sha256.\n\n"
            f"On the device (Python 3.9+, numpy, {extra[target.runtime]}):\n"
            f"    python3 harness/run.py --out report.json\n"
            f"Then gate on the dev machine or in CI:\n"
            f"    edgekit gate report.json\n")


def convert(source: str | ModelHandle, targets: Iterable[str | TargetProfile] | str, calibration: str,
            validation: str, out: str | Path, *, precisions: list[str] | None = None,
            targets_dir: str | None = None, license: str = "unknown", provenance: str = "unknown",
            sequence_length: int | None = None, tokenizer: str | None = None, label: str | None = None,
            ignore_budgets: bool = False, recipe: str | None = None, train: str | None = None,
            progress: bool = True, task: str | None = None, test: str | None = None,
            compressed: tuple | None = None, stage_cache: str | Path | None = None) -> list[BundleResult]:
    """Convert one source model for every target (and precision); returns one result per bundle.
    With a recipe, its stages (distillation, pruning) run once on the PyTorch model first.
    Choices are tuned on `validation` and figures reported on `test`; without `test`, on the two
    halves of `validation` (data.split_holdout). `compressed`: what compress() returned for this
    source, already run (edgekit search runs a recipe once and converts for several settings).
    `stage_cache`: a folder where recipe stages are cached by content hash (compress/cache.py)."""
    specs = [targets] if isinstance(targets, (str, TargetProfile)) else list(targets)
    profiles = load_targets(specs, targets_dir)
    if not isinstance(source, ModelHandle):
        from .lm.source import is_lm_source
        if task == "text-generation" or (task is None and is_lm_source(source)):
            # causal LMs: their own pipeline (KV cache, int4, tokenizer, perplexity; edgekit/lm/convert.py)
            from .lm.convert import convert_lm, refuse_options
            refuse_options(precisions=precisions, recipe=recipe, sequence_length=sequence_length, tokenizer=tokenizer,
                           test=test)
            return convert_lm(source, profiles, calibration, validation, out, license=license,
                              provenance=provenance, label=label, ignore_budgets=ignore_budgets, progress=progress)
    for t in profiles:  # fail on a missing runtime before any long work
        get_backend(t.runtime).available()
    seq = sequence_length or profiles[0].sequence_length
    handle = source if isinstance(source, ModelHandle) else load(source, task=task)
    compression, original, user_tokenizer = None, handle, tokenizer
    if compressed is not None:
        handle, compression, tokenizer = compressed
    elif recipe is not None:
        from .compress.cache import StageCache
        handle, compression, tokenizer = compress(handle, recipe, train, validation, seq, tokenizer, progress, test,
                                                  cache=StageCache(stage_cache) if stage_cache else None)
    prep = prepare(handle, calibration, validation, sequence_length=seq, tokenizer=tokenizer, test=test)
    jobs = [(t.with_precision(p), bundle_name(t, p, t.precision)) for t in profiles
            for p in (precisions or [t.precision])]
    failures: list[str] = []
    feasible = []
    for target, name in jobs:  # everything that can be refused is refused before any export
        try:
            if not ignore_budgets:
                check_estimate(target, estimate_for(prep, target))
            if target.static_shapes:  # every input pinned to the calibration shape at export
                check_consistent(prep.validation, prep.calibration, prep.handle,
                                 static=f"target {target.name} has static shapes, pinned to the calibration's")
            if target.precision == "int8" and len(prep.calibration) < target.calibration_samples:
                raise DataError(f"{calibration}: {len(prep.calibration)} calibration samples, fewer than the "
                                f"{target.calibration_samples} that profile {target.name} asks for "
                                "(calibration_samples)")
        except EdgekitError as exc:
            if len(jobs) == 1:
                raise
            failures.append(f"{name}: {exc}")  # one target's refusal must not cost the others theirs
            continue
        feasible.append((target, name))
    score_source(prep)
    if compression is not None:
        # Drops are measured against the model the user brought, not the compressed one, on both splits.
        # The same sentences, tokenized as the source reads them (a vocab stage renumbered the student's).
        runner, task_ = original.runner(), prep.task
        tune, held, _ = load_splits(validation, test, original, None, sequence_length=seq, tokenizer_dir=user_tokenizer)
        prep.source_quality = task_.source_quality(run_source(runner, held)[0], held.labels)
        prep.source_accuracy = task_.source_score(prep.source_quality)
        prep.source_per_class = prep.source_quality.get("per_class", {})
        prep.tuning_quality = task_.source_quality(run_source(runner, tune)[0], tune.labels)
    out = Path(out)
    results = []
    from .progress import steps
    with steps(len(feasible), "converting", enabled=progress) as advance:
        for target, name in feasible:
            advance(f"{name} ({target.runtime}, {target.precision})")
            try:
                results.append(convert_one(prep, target, out, name=name, license=license,
                                           provenance=provenance, label=label, check_budgets=not ignore_budgets,
                                           extra_manifest={"compression": compression} if compression else None))
            except EdgekitError as exc:
                if len(jobs) == 1:
                    raise
                # Its own bundle is never written; every failure is reported together at the end.
                failures.append(f"{name}: {exc}")
    raise_failures(failures, len(jobs), results, out)
    return results
