"""Issue 3 builds: per runtime (ONNX Runtime, OpenVINO, LiteRT) edgekit fp32 + edgekit int8 (edgekit's
convert() with temporary profiles) and that runtime's own default recipe, plus one batch-1 runner per
variant with 2 threads. Used by benchmarks/runtimes.py.

Temporary profiles (written under the work folder, no [budget], convert(..., ignore_budgets=True)):
  rt-onnxruntime  x86_64 avx2+fma, onnxruntime, x86-avx2's [quantization] (static QDQ, per-channel,
                  MinMax, U8S8, reduce_range) and [quantization.transformer] (dynamic, per-tensor,
                  8-bit weights): the same int8 as the shipped x86-avx2 profile
  rt-openvino     x86_64 avx2+fma (no VNNI: this CPU), openvino, [quantization] derived by edgekit
                  (NNCF PTQ, overflow_fix first_layer_only on no-VNNI x86)
  rt-litert       aarch64 neon+dotprod, litert, static_shapes = true (as rpi5; the .tflite runs here too)
Default recipes (every default):
  ort-default     onnxruntime.quantization.quantize_dynamic(fp32 model.onnx, out)
  ov-default      nncf.quantize(ov fp32 model, nncf.Dataset(calibration samples))
  litert-default  litert_torch.convert(module, sample, quant_config=quant_recipes.full_dynamic_recipe())
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import bench_convert
import bench_timing
import numpy as np

from edgekit.convert import convert

RUNTIMES = ("onnxruntime", "openvino", "litert")
THREADS = 2
OV_CONFIG = {"INFERENCE_NUM_THREADS": THREADS, "PERFORMANCE_HINT": "LATENCY",
             "INFERENCE_PRECISION_HINT": "f32"}  # pinned as edgekit pins it: bf16 on BF16 hosts otherwise

_PROFILE_HEAD = {
    "onnxruntime": {"arch": "x86_64", "isa": ["avx2", "fma"], "static_shapes": False,
                    "quant": {"calibrate_method": "minmax", "per_channel": True, "reduce_range": True,
                              "activation_type": "uint8", "weight_type": "int8",
                              "transformer": {"mode": "dynamic", "per_channel": False, "reduce_range": False}}},
    "openvino": {"arch": "x86_64", "isa": ["avx2", "fma"], "static_shapes": False, "quant": None},
    "litert": {"arch": "aarch64", "isa": ["neon", "dotprod"], "static_shapes": True, "quant": None},
}


def write_profile(runtime: str, folder: Path, sequence_length: int = 64) -> Path:
    p = _PROFILE_HEAD[runtime]
    lines = [f'name = "rt-{runtime}"', f'description = "issue-3 benchmark profile ({runtime}, no budget)"',
             f'arch = "{p["arch"]}"', f"isa = {json.dumps(p['isa'])}", f'runtime = "{runtime}"',
             'device = "CPU"', 'precision = "int8"', f"threads = {THREADS}",
             f"static_shapes = {'true' if p['static_shapes'] else 'false'}",
             f"sequence_length = {sequence_length}", "calibration_samples = 32"]
    if p["quant"]:
        lines.append("\n[quantization]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in p["quant"].items() if k != "transformer"]
        if "transformer" in p["quant"]:
            lines.append("\n[quantization.transformer]")
            lines += [f"{k} = {json.dumps(v)}" for k, v in p["quant"]["transformer"].items()]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"rt-{runtime}.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def model_files(bundle: Path) -> list[Path]:
    manifest = json.loads((bundle / "manifest.json").read_text())
    main = bundle / manifest["model"]["file"]
    files = [main] + ([main.with_suffix(".bin")] if main.suffix == ".xml" else [])
    return [f for f in files if f.exists()]


def build_edgekit(source, calibration, validation, work: Path, log, sequence_length: int = 64) -> dict:
    """{(runtime, 'fp32'|'int8'): {...}} from one convert() call per runtime."""
    out = {}
    for rt in RUNTIMES:
        prof = write_profile(rt, work / "profiles", sequence_length)
        t0 = time.perf_counter()
        log(f"  edgekit convert {rt} fp32+int8 ...")
        results = convert(source, [str(prof)], str(calibration), str(validation), work / "bundles",
                          precisions=["fp32", "int8"], ignore_budgets=True, progress=False)
        dt = time.perf_counter() - t0
        for r in results:
            manifest = json.loads((r.path / "manifest.json").read_text())
            out[(rt, r.precision)] = {
                "files": model_files(r.path), "bundle": str(r.path), "precision": r.precision,
                "edgekit_accuracy": r.accuracy, "source_accuracy": r.source_accuracy,
                "accuracy_control": getattr(r, "accuracy_control", None),
                "quantization": manifest["conversion"].get("quantization"), "convert_seconds": dt,
                "input_order": manifest.get("model", {}).get("inputs")}
        log(f"    done in {dt:.0f} s: {[r.name for r in results]}")
    return out


def _calib_feeds(calibration, names: list[str], n: int | None = None) -> list[dict]:
    """Batch-1 feed dicts from the calibration data (edgekit's own loader: npz or JSONL)."""
    items = [calibration.sample(i) for i in range(len(calibration) if n is None else min(n, len(calibration)))]
    return [{k: np.ascontiguousarray(v[:1]) for k, v in it.items()} for it in items]


def build_defaults(handle, calibration, built: dict, work: Path, log) -> dict:
    """Each runtime's own default int8 recipe, from edgekit's fp32 artifacts / the torch source."""
    out = {}
    t0 = time.perf_counter()
    log("  ORT quantize_dynamic (defaults) ...")
    d = bench_convert.dynamic(built[("onnxruntime", "fp32")]["files"][0], work / "ort_default.onnx")
    out["onnxruntime"] = {"files": [work / "ort_default.onnx"], "quantize_seconds": time.perf_counter() - t0,
                          "recipe": d["quantization"]["tool"] + " (" + d["quantization"]["arguments"] + ")"}

    import nncf
    import openvino as ov
    t0 = time.perf_counter()
    log("  nncf.quantize (defaults) ...")
    core = ov.Core()
    model = core.read_model(str(built[("openvino", "fp32")]["files"][0]))
    names = [p.get_any_name() for p in model.inputs]
    feeds = _calib_feeds(calibration, handle.input_names)
    by = ({n: n for n in names} if set(names) == set(handle.input_names)
          else dict(zip(handle.input_names, names)))
    items = [{by[k]: v for k, v in f.items()} for f in feeds]
    with bench_convert.quiet():
        qmodel = nncf.quantize(model, nncf.Dataset(items))
    xml = work / "ov_default" / "model.xml"
    xml.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(qmodel, str(xml), compress_to_fp16=False)
    out["openvino"] = {"files": [xml, xml.with_suffix(".bin")], "quantize_seconds": time.perf_counter() - t0,
                       "recipe": f"nncf.quantize(model, nncf.Dataset({len(items)} calibration samples)), defaults "
                                 "(preset PERFORMANCE, subset_size 300, fast_bias_correction)"}

    import litert_torch
    import torch
    from litert_torch.generative.quantize import quant_recipes
    t0 = time.perf_counter()
    log("  litert_torch full_dynamic_recipe() (defaults) ...")
    args = tuple(torch.from_numpy(feeds[0][k]) for k in handle.input_names)
    tfl = work / "litert_default.tflite"
    with bench_convert.quiet():
        litert_torch.convert(handle.module, args,
                             quant_config=quant_recipes.full_dynamic_recipe()).export(str(tfl))
    out["litert"] = {"files": [tfl], "quantize_seconds": time.perf_counter() - t0,
                     "recipe": "litert_torch.convert(..., quant_config=quant_recipes.full_dynamic_recipe()) "
                               "(dynamic range, defaults)"}
    return out


def runner(runtime: str, files: list[Path], input_names: list[str]):
    """fn(feeds: {source input name: batch-1 array}) -> first output, at 2 threads."""
    path = files[0]
    if runtime == "onnxruntime":
        sess = bench_timing.session(path, threads=THREADS)
        onames = [o.name for o in sess.get_outputs()][:1]
        snames = [i.name for i in sess.get_inputs()]
        by = {n: n for n in input_names} if set(snames) == set(input_names) else dict(zip(input_names, snames))
        run = sess.run
        return lambda feeds: run(onames, {by[k]: v for k, v in feeds.items()})[0]
    if runtime == "openvino":
        import openvino as ov
        compiled = ov.Core().compile_model(str(path), "CPU", OV_CONFIG)
        req = compiled.create_infer_request()
        pnames = [p.get_any_name() for p in compiled.inputs]
        by = {n: n for n in input_names} if set(pnames) == set(input_names) else dict(zip(input_names, pnames))
        out0 = compiled.outputs[0]
        return lambda feeds: req.infer({by[k]: v for k, v in feeds.items()})[out0]
    from edgekit.backends.litert import open_interpreter
    run = open_interpreter(path, THREADS, list(input_names))
    return lambda feeds: run(feeds)[0]


def size_bytes(files: list[Path]) -> int:
    return sum(Path(f).stat().st_size for f in files)
