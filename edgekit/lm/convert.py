"""Conversion of a causal LM, top to bottom:

    check data and profiles -> load source (GGUF dequantized) -> memory estimate at the profile's
    context (refuse, naming the longest context that fits) -> source figures (PyTorch) ->
    ONNX export with KV cache (once) -> per target: compress (int4 / int8) -> run the artifact here
    through the device's own generation code -> budgets -> bundle (atomic)

Every refusal that needs no model is made before the model is loaded; every one that needs the
model but no export, before the export.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from ..backends import get_backend
from ..bundle import BundleWriter, copy_harness, copy_server, save_npz, write_manifest
from ..errors import BackendError, BudgetError, ConfigError, EdgekitError
from ..host import describe as describe_host
from ..progress import steps
from ..results import BundleResult, ConversionFailed, raise_failures, versions
from ..targets import TargetProfile
from ..trust.provenance import source_commit
from . import memory
from .export import calibration_items, export_onnx, export_openvino, kv_names, quantize_onnx
from .reference import source_greedy, source_reference
from .source import load_lm
from .text import load_text, windows

# Packages a generative manifest records beyond the runtime's (tokenizer, exporter, compressor).
LM_PACKAGES = ("transformers", "optimum", "optimum-onnx", "tokenizers", "gguf", "nncf")

VALIDATION_WINDOWS = 16   # x prompt_length tokens of validation text scored for perplexity (2,032 at 128)
CALIBRATION_WINDOWS = 32  # windows of calibration text for data-aware int4 (NNCF AWQ)
PROMPTS = 4               # bundled prompts for the tokenizer and greedy self-checks
GREEDY_TOKENS = 16        # greedy tokens per prompt recorded on the dev machine
MIN_GREEDY_PREFIX = 4     # the device must reproduce at least these first greedy tokens
SPEED_TOKENS = 24         # decode steps timed here, fp32 export vs compressed artifact
SLOWER_MARGIN = 0.9       # compressed decode below 90% of fp32's on this machine: flagged, the gate fails it


def harness_module(name: str):
    """A device-side harness module (harness/_ek_*.py), imported as the device imports it: the dev
    machine runs each artifact through the very code the device will."""
    d = str(Path(__file__).resolve().parent.parent / "harness")
    if d not in sys.path:
        sys.path.insert(0, d)
    import importlib
    return importlib.import_module(name)


def runtime_of(target: TargetProfile) -> str:
    rt = target.generation.runtime or target.runtime
    if rt == "litert":
        raise ConfigError(f"{target.path or target.name}: runtime 'litert' cannot take a Hugging Face causal LM "
                          "with a KV cache (litert-torch converts only models re-authored with "
                          "litert_torch.generative); set generation.runtime = 'onnxruntime' in the profile")
    return rt


def context_of(target: TargetProfile, dims: dict) -> int:
    return int(target.budget.context_length or min(2048, dims["max_positions"]))


def _intermediate(config) -> int:
    return int(getattr(config, "intermediate_size", None) or getattr(config, "n_inner", None)
               or 4 * (getattr(config, "hidden_size", None) or config.n_embd))


def _heads(config) -> int:
    return int(getattr(config, "num_attention_heads", None) or config.n_head)


BITS = {"int4": 4.5, "int8": 8.5, "fp32": 32.0}  # bits per weight with block scales (block 32: +0.125 B)


def weight_bytes_estimate(src, target: TargetProfile) -> int:
    """Bytes of the compressed weights before export: body at generation.weights, the embedding
    table and the LM head (a tied head is stored again for its MatMul) at their own precisions."""
    d = src.dims()
    emb = d["vocab_size"] * d["hidden"]
    body = src.parameters() - emb * (1 if src.describe()["tie_word_embeddings"] else 2)
    table, head = target.generation_weights
    return int((body * BITS[target.generation.weights] + emb * (BITS[table] + BITS[head])) / 8)


def check_memory(target: TargetProfile, src, weights_bytes: int, context: int, label: str) -> memory.LMEstimate:
    dims = src.dims()
    rt = runtime_of(target)
    chunk = target.generation.prompt_length
    est = memory.estimate(weights_bytes, dims, context, chunk, _heads(src.config), _intermediate(src.config), rt)
    budget = target.budget.peak_memory_mb
    if budget is not None and est.total_mb > budget:
        longest = memory.longest_context(weights_bytes, dims, budget, chunk, _heads(src.config),
                                         _intermediate(src.config), rt, context)
        fits = (f"the longest context that fits is {longest} tokens (budget.context_length = {longest})"
                if longest >= target.generation.prompt_length + 1 else
                "no context fits: the weights alone do not (a smaller model, or int4 weights)")
        raise BudgetError(f"{target.name}: {label} needs {est.total_mb:.0f} MiB at context {context} "
                          f"(weights {est.weights_mb:.0f} + KV cache {est.kv_mb:.0f} + activations "
                          f"{est.activations_mb:.0f} + runtime {est.runtime_mb:.0f}) > peak_memory_mb "
                          f"{budget:g}; {fits}")
    return est


def _prompts(val, tokenizer) -> list[dict]:
    """The first PROMPTS validation texts, cut to their first sentence or 24 tokens (ids the dev
    tokenizer gives: the device must give the same)."""
    out = []
    for t in val.texts[:PROMPTS]:
        text = t.split(". ")[0].strip()
        ids = tokenizer(text)["input_ids"]
        if len(ids) > 24:
            text = tokenizer.decode(ids[:24], skip_special_tokens=True)
        out.append({"text": text, "ids": list(tokenizer(text)["input_ids"])})
    return out


def _manifest_model(art_files: list[Path], runtime: str, pairs, dims: dict, precision: str) -> dict:
    main = art_files[0]
    if runtime == "onnxruntime":
        inputs = [{"name": "input_ids", "dtype": "int64", "shape": [1, None]},
                  {"name": "attention_mask", "dtype": "int64", "shape": [1, None]},
                  {"name": "position_ids", "dtype": "int64", "shape": [1, None]}]
        inputs += [{"name": p, "dtype": "float32", "shape": [1, dims["kv_heads"], None, dims["head_dim"]]}
                   for p, _ in pairs]
        outputs = [{"name": "logits", "dtype": "float32", "shape": [1, None, dims["vocab_size"]]}]
        outputs += [{"name": o, "dtype": "float32"} for _, o in pairs]
    else:
        inputs = [{"name": n, "dtype": "int64", "shape": [1, None]} for n in ("input_ids", "attention_mask",
                                                                              "position_ids")]
        outputs = [{"name": "logits", "dtype": "float32", "shape": [1, None, dims["vocab_size"]]}]
    return {"file": main.name, "files": [f.name for f in art_files],
            "format": "onnx" if runtime == "onnxruntime" else "openvino-ir", "runtime": runtime,
            "precision": precision, "task": "text-generation", "inputs": inputs, "outputs": outputs,
            "size_bytes": sum(f.stat().st_size for f in art_files)}


def _open_lm(G, bundle: Path, manifest: dict, threads: int):
    lm = G.LanguageModel(bundle, manifest, threads)
    lm.import_runtime()
    lm.load()
    return lm


def _decode_speed(lm, prompt: list[int]) -> float:
    """Median decode tokens/s of a loaded model on this machine (a short, rough measurement: the
    device's figure is the harness's; this one only catches int4 slower than fp32)."""
    rates = []
    for _ in range(3):
        out = lm.generate(prompt, max_new_tokens=SPEED_TOKENS, ignore_eos=True)
        rates.append(len(out["decode_ms"]) * 1000.0 / sum(out["decode_ms"]))
    return round(float(np.median(rates)), 3)


def refuse_options(**given) -> None:
    """Options of the single-call pipeline that mean nothing for a causal LM: refused, not ignored."""
    why = {"precisions": "--precision (a generative bundle's weights come from the profile's [generation] table)",
           "recipe": "--recipe (distillation and pruning recipes take classifiers)",
           "sequence_length": "--sequence-length (the context is the profile's budget.context_length)",
           "tokenizer": "--tokenizer (the model's own tokenizer goes into the bundle)",
           "test": "--test (a generative conversion tunes nothing on its validation text, so that text is "
                   "already held out: give the held-out text as --validation)"}
    for key, value in given.items():
        if value:
            raise ConfigError(f"{why[key]} does not apply to a text-generation source")


def convert_lm(source: str, profiles: list[TargetProfile], calibration: str, validation: str, out: str | Path, *,
               license: str = "unknown", provenance: str = "unknown", label: str | None = None,
               ignore_budgets: bool = False, progress: bool = True) -> list:
    profiles = [t.for_generation() for t in profiles]  # [generation.budget] over [budget]
    for t in profiles:  # cheap refusals first: profile, runtime, data
        get_backend(runtime_of(t)).available()
    calib = load_text(calibration, "calibration")
    val = load_text(validation, "validation")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".edgekit-lm-", dir=out))
    results, failures = [], []
    try:
        src = load_lm(source, work)
        dims = src.dims()
        for t in profiles:
            need = t.generation.prompt_length + t.generation.new_tokens
            ctx = context_of(t, dims)
            if ctx > dims["max_positions"]:
                raise ConfigError(f"{t.path or t.name}: budget.context_length = {ctx} exceeds the model's "
                                  f"{dims['max_positions']} positions ({source})")
            if need > ctx:
                raise ConfigError(f"{t.path or t.name}: generation.prompt_length {t.generation.prompt_length} + "
                                  f"new_tokens {t.generation.new_tokens} = {need} tokens exceed the context "
                                  f"{ctx} (budget.context_length)")
        lengths = {t.generation.prompt_length for t in profiles}
        vwin = {n: windows(src.tokenizer, val, n, VALIDATION_WINDOWS) for n in lengths}
        cwin = {n: windows(src.tokenizer, calib, n, CALIBRATION_WINDOWS) for n in lengths}
        feasible = []
        for t in profiles:
            try:
                if not ignore_budgets:
                    check_memory(t, src, weight_bytes_estimate(src, t), context_of(t, dims),
                                 f"{t.generation.weights} weights")
                feasible.append(t)
            except EdgekitError as exc:
                if len(profiles) == 1:
                    raise
                failures.append(f"{t.name}: {exc}")
        if not feasible:
            raise ConversionFailed("; ".join(failures))
        with steps(2 + len(feasible), "converting", enabled=progress) as advance:
            advance("source figures (PyTorch)")
            refs = {n: source_reference(src.model, w) for n, w in vwin.items()}
            prompts = _prompts(val, src.tokenizer)
            for p in prompts:
                p["source_greedy"] = source_greedy(src.model, p["ids"], GREEDY_TOKENS)
            advance("ONNX export with KV cache")
            fp32 = export_onnx(src.hf_dir, work / "onnx")
            pairs = kv_names(fp32)
            for t in feasible:
                advance(f"{t.name} ({runtime_of(t)}, {t.generation.weights})")
                try:
                    results.append(_one(t, src, dims, fp32, pairs, refs[t.generation.prompt_length],
                                        cwin[t.generation.prompt_length], prompts, calib, val, out,
                                        license=license, provenance=provenance, label=label,
                                        ignore_budgets=ignore_budgets))
                except EdgekitError as exc:
                    if len(profiles) == 1:
                        raise
                    failures.append(f"{t.name}: {exc}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    raise_failures(failures, len(profiles), results, out)
    return results


def _one(t: TargetProfile, src, dims, fp32: Path, pairs, ref: dict, cwin: np.ndarray, prompts: list[dict], calib,
         val, out: Path, *, license, provenance, label, ignore_budgets):
    G = harness_module("_ek_generate")
    gen = t.generation
    rt = runtime_of(t)
    name = t.name
    ctx = context_of(t, dims)
    with BundleWriter(out / name) as tmp:
        items = calibration_items(cwin, pairs, dims) if gen.method == "awq" else None
        if rt == "onnxruntime":
            path, details = quantize_onnx(fp32, gen, *t.generation_weights, dims["vocab_size"], tmp, items)
            files = [path]
            kv = {"kv": "explicit", "past": [list(p) for p in pairs]}
        else:
            path, details = export_openvino(fp32, gen, t.generation_weights[0], pairs, items, tmp)
            files = [path, path.with_suffix(".bin")]
            kv = {"kv": "stateful"}
        precision = gen.weights
        model = _manifest_model(files, rt, pairs, dims, precision)
        (tmp / "tokenizer.json").write_bytes((src.hf_dir / "tokenizer.json").read_bytes())
        save_npz(tmp / "lm_validation.npz", {k: (v.astype(np.float16) if k == "top_logp" else v)
                                             for k, v in ref.items()})
        ref16 = dict(ref, top_logp=ref["top_logp"].astype(np.float16).astype(np.float32))
        generation = {**kv, "tokenizer": "tokenizer.json", **{k: dims[k] for k in ("layers", "kv_heads", "head_dim",
                                                                                   "vocab_size")},
                      "kv_dtype": "float32", "context_length": ctx, "prefill_chunk": gen.prompt_length,
                      "prompt_length": gen.prompt_length, "new_tokens": gen.new_tokens,
                      "eos_token_ids": src.describe()["eos_token_ids"], "bos_token_id": src.tokenizer.bos_token_id,
                      "prompts": "prompts.json", "validation": "lm_validation.npz",
                      "min_greedy_prefix": MIN_GREEDY_PREFIX,
                      "kv_bytes_per_token": memory.kv_bytes_per_token(dims)}
        manifest = {"bundle": {"name": name, "label": label}, "model": model, "target": t.to_dict(),
                    "runtime_settings": {"threads": t.threads, "device": t.device,
                                         "inference_precision": t.compute_precision,
                                         # ORT's arena keeps a block of every KV size it handed out
                                         **({"cpu_mem_arena": False} if rt == "onnxruntime" else {})},
                    "generation": generation}
        threads = t.threads
        prompt = [int(i) for i in np.resize(ref["windows"].reshape(-1), min(32, gen.prompt_length))]
        try:
            lm = _open_lm(G, tmp, manifest, threads)
            for p in prompts:  # the device reproduces these (self-check); the tokenizer must agree already here
                if lm.encode(p["text"]) != p["ids"]:
                    raise BackendError(f"{src.spec}: tokenizer.json (tokenizers) and the transformers tokenizer "
                                       f"disagree on {p['text']!r}; the device would see other token ids")
                p["greedy"] = lm.generate(p["ids"], max_new_tokens=GREEDY_TOKENS, ignore_eos=True)["token_ids"]
            quality = G.sequence_quality(lm, ref16["windows"], ref16["nll"], ref16["top_idx"], ref16["top_logp"])
            info = lm.info()
            speed = {"tokens": SPEED_TOKENS, "threads": threads, "artifact_tokens_per_s": _decode_speed(lm, prompt)}
            lm.close()
        except G.BundleError as exc:
            raise BackendError(f"{name}: the artifact does not run here: {exc}") from exc
        if rt == "onnxruntime" and precision != "fp32":  # the fp32 export is an ONNX model: same loop, same runtime
            fm = dict(manifest, model=_manifest_model([fp32], rt, pairs, dims, "fp32"))
            ref_lm = _open_lm(G, fp32.parent, fm, threads)
            speed["fp32_tokens_per_s"] = _decode_speed(ref_lm, prompt)
            ref_lm.close()
        slower = None
        # Flagged when decisively slower (SLOWER_MARGIN): 3 x 24 steps here move by a few percent run to run.
        if "fp32_tokens_per_s" in speed and speed["artifact_tokens_per_s"] < SLOWER_MARGIN * speed["fp32_tokens_per_s"]:
            slower = (f"{speed['artifact_tokens_per_s']:.1f} vs {speed['fp32_tokens_per_s']:.1f} tokens/s fp32 on the "
                      "dev machine")
        generation["slower_than_fp32"] = slower
        generation["dev_speed"] = speed
        size = model["size_bytes"]
        est = memory.estimate(size, dims, ctx, gen.prompt_length, _heads(src.config), _intermediate(src.config), rt)
        if not ignore_budgets:
            _check_budgets(t, size, quality, ctx, src)
        (tmp / "prompts.json").write_text(json.dumps(prompts, indent=1) + "\n", encoding="utf-8")
        copy_harness(tmp / "harness")
        copy_server(tmp / "server")
        (tmp / "README.txt").write_text(
            f"edgekit text-generation bundle {name} for target {t.name} ({t.description})\n\n"
            f"Model: {model['file']} ({rt}, {precision} weights, context {ctx} tokens), tokenizer.json.\n\n"
            f"On the device (Python 3.9+, numpy, tokenizers, {rt}):\n"
            "    python3 harness/run.py --out report.json\nThen gate: edgekit gate report.json\n", encoding="utf-8")
        d = src.describe()
        manifest.update({
            "host": describe_host(t, "f32"),
            "conversion": {"precision": precision, "weights": details, "estimate": est.to_dict(),
                           "budgets_checked_at_conversion": not ignore_budgets, "runtime": info,
                           "quality": quality, "speed": speed,
                           "accuracy": {"metric": "token_agreement", "n": quality["tokens"],
                                        "value": quality["token_agreement"]}},
            "source": {**d, "accuracy": 1.0, "quality": {"perplexity": quality["source_perplexity"]}},
            "data": {"calibration": calib.describe(), "validation": val.describe()},
            "provenance": {"license": license if license != "unknown" else (src.license or "unknown"),
                           "provenance": provenance or "unknown", **source_commit(src.spec)},
            "versions": versions(rt, LM_PACKAGES),
            "selfcheck": {"file": "prompts.json", "n": len(prompts), "min_greedy_prefix": MIN_GREEDY_PREFIX},
            "validation": {"file": "lm_validation.npz", "n": int(ref["windows"].shape[0]), "metric": "perplexity",
                           "labelled": False},
        })
        write_manifest(tmp, manifest)
    return BundleResult(name, out / name, t.name, precision, size / 2**20, quality["token_agreement"], 1.0, [],
                        f"ppl {quality['source_perplexity']:.2f} -> {quality['perplexity']:.2f} "
                        f"(+{100 * quality['perplexity_increase']:.1f}%)", "token_agreement")


def _check_budgets(t: TargetProfile, size: int, quality: dict, ctx: int, src) -> None:
    b = t.budget
    if b.model_size_mb is not None and size / 2**20 > b.model_size_mb:
        raise BudgetError(f"model_size {size / 2**20:.2f} MB > budget {b.model_size_mb:g} MB for {t.name} "
                          f"({t.generation.weights} weights, embeddings/LM head {'/'.join(t.generation_weights)}): "
                          "int4 weights, int4 embeddings or a smaller model")
    check_memory(t, src, size, ctx, "the artifact")
    if b.max_perplexity_increase is not None and quality["perplexity_increase"] > b.max_perplexity_increase:
        raise BudgetError(f"{t.name}: perplexity {quality['source_perplexity']:.3f} -> {quality['perplexity']:.3f} "
                          f"(+{100 * quality['perplexity_increase']:.2f}%) on the validation text > "
                          f"max_perplexity_increase {100 * b.max_perplexity_increase:g}%: try generation.method, "
                          "a smaller block_size or int8 weights")
    if b.min_token_agreement is not None and quality["token_agreement"] < b.min_token_agreement:
        raise BudgetError(f"{t.name}: top-1 next-token agreement {quality['token_agreement']:.4f} < "
                          f"min_token_agreement {b.min_token_agreement:g}")
