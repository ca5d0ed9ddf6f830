"""Build every benchmarked artifact with edgekit (and ORT's quantize_dynamic for the baseline).

Per model: x86-avx2 fp32, x86-avx2 int8 (edgekit's default for the profile: static QDQ, U8S8,
reduce_range), two ISA-study profiles written next to the bundles (copies of targets/x86-avx2.toml
with [quantization] changed), and onnxruntime.quantization.quantize_dynamic(fp32 model.onnx) with
all defaults.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
import time
import warnings
from pathlib import Path

import numpy as np

from edgekit.backends.onnxruntime import resolved_quantization
from edgekit.convert import convert
from edgekit.targets import available, load_target

BASE_TARGET = "x86-avx2"
# variant key -> (profile name, [quantization] overrides). Study profiles leave out [budget]
# and set accuracy_aware = false: edgekit's accuracy control would otherwise keep layers in float
# (or fall back to fp32) exactly where the saturating case loses accuracy, hiding what is measured.
ISA_PROFILES = {
    "u8s8-full": ("x86-avx2-u8s8-full", {"reduce_range": False, "activation_type": "uint8",
                                         "weight_type": "int8", "accuracy_aware": False}),  # (a) saturates
    "u8u8": ("x86-avx2-u8u8", {"reduce_range": False, "activation_type": "uint8",
                               "weight_type": "uint8", "accuracy_aware": False}),          # (c) U8U8
}
# (b) U8S8 + reduce_range is x86-avx2's own [quantization]: the edgekit int8 bundle itself.
EXPECTED_DEFAULT = {"reduce_range": True, "activation_type": "uint8", "weight_type": "int8"}

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)[:, None, None]
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)[:, None, None]


def write_profile(name: str, overrides: dict, folder: Path, top: dict | None = None) -> Path:
    """Copy targets/x86-avx2.toml with a new name, changed top-level and [quantization] keys and
    no [budget] (edgekit refuses a conversion whose size estimate breaks model_size_mb: fp32
    ResNet-18, 44.6 MiB, is over x86-avx2's 25 MiB, and the baseline must still be built)."""
    text = available()[BASE_TARGET].read_text(encoding="utf-8")
    for key, value in {"name": name, **(top or {})}.items():
        text, n = re.subn(rf"(?m)^{key} = .*$", f"{key} = {json.dumps(value)}", text, count=1)
        assert n == 1, f"{key} not found in {BASE_TARGET}.toml"
    text = re.sub(r"(?ms)^\[budget\].*?(?=^\[|\Z)", "", text)
    head, sep, quant = text.partition("[quantization]")
    body, sep2, rest = quant.partition("\n[")
    for key, value in overrides.items():
        line = f"{key} = {json.dumps(value)}   # benchmarks/bench_convert.py override"
        body, n = re.subn(rf"(?m)^{key}\s*=.*$", line, body)
        if n == 0:
            body = body.rstrip("\n") + "\n" + line + "\n"
    path = folder / f"{name}.toml"
    path.write_text(head + sep + body + sep2 + rest, encoding="utf-8")
    prof = load_target(path)
    assert prof.budget.model_size_mb is None and prof.budget.max_accuracy_drop is None, path
    check_profile(path, {k: v for k, v in overrides.items() if k != "accuracy_aware"})
    return path


def check_profile(spec, want: dict) -> dict:
    """The int8 settings edgekit will use for a profile; raises if they are not the intended ones
    (a benchmark of the wrong configuration is worse than none)."""
    q = resolved_quantization(load_target(spec), transformer=False)
    wrong = {k: (q[k], v) for k, v in want.items() if q[k] != v}
    if wrong:
        raise RuntimeError(f"{spec}: resolved quantization differs from the intended one: {wrong}")
    return q


def resnet_data(folder: Path, n_cal: int = 32, n_val: int = 16, seed: int = 0) -> dict[str, Path]:
    """Seeded random 'images' (uniform [0, 1] pixels, ImageNet-normalised) and random labels:
    with random weights only latency, size and fp32-vs-int8 agreement mean anything."""
    rng = np.random.default_rng(seed)

    def images(n):
        return ((rng.random((n, 3, 224, 224), dtype=np.float32) - IMAGENET_MEAN) / IMAGENET_STD).astype(np.float32)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"calibration": folder / "calibration.npz", "validation": folder / "validation.npz"}
    np.savez(paths["calibration"], x=images(n_cal), labels=rng.integers(0, 1000, n_cal))
    np.savez(paths["validation"], x=images(n_val), labels=rng.integers(0, 1000, n_val))
    return paths


@contextlib.contextmanager
def quiet():
    """quantize_dynamic logs advice ("consider pre-processing") and warnings; keep the bar clean."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        root.setLevel(level)


def dynamic(fp32_model: Path, out: Path) -> dict:
    from onnxruntime.quantization import quantize_dynamic
    t0 = time.perf_counter()
    with quiet():
        quantize_dynamic(str(fp32_model), str(out))  # every default: QInt8 weights, per-tensor, no reduce_range
    return {"path": out, "quantize_seconds": time.perf_counter() - t0,
            "quantization": {"mode": "dynamic", "tool": "onnxruntime.quantization.quantize_dynamic",
                             "arguments": "defaults (weight_type=QInt8, per_channel=False, reduce_range=False, "
                                          "all supported op types)"}}


def _convert(source, jobs: dict, calibration: Path, validation: Path, out: Path, pause) -> dict[str, dict]:
    with pause():
        results = convert(source, [str(t) for t in jobs.values()], str(calibration), str(validation),
                          out, progress=True)
    built = {}
    for (key, target), r in zip(jobs.items(), results):
        manifest = json.loads((r.path / "manifest.json").read_text())
        assert manifest["model"]["precision"] == ("fp32" if key == "fp32" else "int8"), (key, r.name)
        built[key] = {"path": r.path / manifest["model"]["file"], "bundle": str(r.path),
                      "quantization": manifest["conversion"].get("quantization"),
                      "edgekit": {"name": r.name, "target": r.target, "profile": str(target),
                                  "source": manifest["source"]["path"], "precision": r.precision,
                                  "size_mb": r.size_mb, "accuracy": r.accuracy,
                                  "source_accuracy": r.source_accuracy, "parity": r.parity,
                                  "accuracy_control": getattr(r, "accuracy_control", None),
                                  "exporter": manifest["conversion"].get("exporter")}}
    return built


def build(source, calibration: Path, validation: Path, work: Path, tick, pause) -> dict[str, dict]:
    """Every variant of one model: {key: {"path", "bundle", "quantization", "edgekit": {...}}}.
    `pause()` hides the caller's progress bar while edgekit's convert shows its own.

    1. edgekit convert from the model's source: x86-avx2 at fp32 (budget left out; bundle
       x86-avx2-fp32, the name `--target x86-avx2 --precision fp32` gets) and the shipped x86-avx2
       profile exactly as users get it (int8).
    2. edgekit convert of the ISA-study profiles from that fp32 bundle's model.onnx: the graph edgekit
       quantizes internally anyway (export -> ORT basic optimisation), so the int8 files are the same
       bytes a conversion from the source would give (checked: x86-avx2 int8 of both models came out
       byte-identical either way) while two torch exports per model are saved.
    """
    profiles = work / "profiles"
    profiles.mkdir(parents=True, exist_ok=True)
    check_profile(BASE_TARGET, EXPECTED_DEFAULT)
    times = {}
    tick("edgekit convert fp32 + int8")
    t0 = time.perf_counter()
    out = _convert(source, {"fp32": write_profile(f"{BASE_TARGET}-fp32", {}, profiles, top={"precision": "fp32"}),
                            "int8": BASE_TARGET}, calibration, validation, work / "bundles", pause)
    times["edgekit_convert_source"] = time.perf_counter() - t0
    tick("edgekit convert ISA-study profiles")
    t0 = time.perf_counter()
    isa = {key: write_profile(name, over, profiles) for key, (name, over) in ISA_PROFILES.items()}
    out.update(_convert(str(out["fp32"]["path"]), isa, calibration, validation, work / "bundles", pause))
    times["edgekit_convert_isa"] = time.perf_counter() - t0
    tick("quantize_dynamic")
    out["int8-dyn"] = dynamic(out["fp32"]["path"], work / "model_dynamic.onnx")
    times["quantize_dynamic"] = out["int8-dyn"]["quantize_seconds"]
    out["_times"] = times
    return out
