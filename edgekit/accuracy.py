"""Accuracy-aware quantization: never hand over an int8 model that broke the accuracy budget.

When the quantized artifact's top-1 drop on the validation set exceeds the profile's
`max_accuracy_drop`, the backend's `backoff` proposes artifacts with more and more of the most
sensitive layers kept in float (ONNX Runtime: per-layer SQNR ranking; OpenVINO: NNCF's
accuracy-control quantization); the first within budget wins. If none is, the float artifact is
shipped (fp16 where the backend offers it, else fp32) and the manifest and the CLI say so.
Every attempt is recorded with its accuracy and the layers it kept in float.

Before that, a profile with `calibrate_method = "auto"` has its static int8 calibrated with every
method the runtime offers and keeps the best on the tuning split (choose_calibration).
"""

from __future__ import annotations

import dataclasses

from .backends.base import Artifact
from .targets import CALIBRATE_METHODS


@dataclasses.dataclass
class Outcome:
    artifact: Artifact
    attempts: list[dict]
    result: str                    # "within budget" | "int8 with N layers in float" | "fell back to fp32"

    def to_dict(self) -> dict:
        return {"result": self.result, "attempts": self.attempts}


def control(backend, fp: Artifact, first: Artifact, first_acc: float, source_acc: float, handle, target,
            calibration, validation, workdir, evaluate, max_drop: float | None) -> Outcome:
    """`evaluate(artifact)` is the task's score (top-1, or mean cosine to the source's embeddings),
    `source_acc` the source's, `max_drop` how far below it an artifact may fall (the task reads it
    from the profile: max_accuracy_drop, or 1 - min_cosine_similarity); None: no back-off."""
    attempts = [{"precision": first.precision, "layers_in_float": [], "accuracy": first_acc,
                 "drop": source_acc - first_acc}]
    if max_drop is None or source_acc - first_acc <= max_drop or first is fp:
        return Outcome(first, attempts, "within budget")
    if target.int8_for(handle.is_transformer).accuracy_aware and hasattr(backend, "backoff"):
        for art, in_float in backend.backoff(fp, handle, target, calibration, validation, workdir,
                                                 evaluate, max_drop):
            acc = evaluate(art)
            attempts.append({"precision": art.precision, "layers_in_float": list(in_float),
                             "accuracy": acc, "drop": source_acc - acc})
            if source_acc - acc <= max_drop:
                how = art.details.get("backoff")
                return Outcome(art, attempts, f"{art.precision} with {how}" if how and not in_float else
                               f"{art.precision} with {len(in_float)} layer(s) in float")
    fallback = fp
    if "fp16" in getattr(backend, "precisions", ()):
        fallback = backend.quantize(fp, handle, dataclasses.replace(target, precision="fp16"), calibration, workdir)
    acc = evaluate(fallback)
    attempts.append({"precision": fallback.precision, "layers_in_float": ["*"], "accuracy": acc,
                     "drop": source_acc - acc})
    return Outcome(fallback, attempts, f"fell back to {fallback.precision}: no int8 variant within "
                                       f"the allowed drop {max_drop:g}")


def choose_calibration(backend, fp: Artifact, handle, target, calibration, workdir, evaluate, fidelity=None):
    """calibrate_method = "auto": quantize with each of the backend's calibration methods and keep the
    best: highest task score on the tuning split, ties broken by `fidelity(artifact)` (the outputs'
    error against the source's, lower is better), then by order. A top-1 score on a few hundred
    sentences ties often (the MiniLM example's 160 tuning sentences: min-max and percentile both at
    the source's 0.894) while the outputs' error still tells the ranges apart. Returns (the profile
    with that method, its artifact, what was tried). Dynamic int8 and float precisions calibrate
    nothing: "minmax" stands in."""
    if target.precision != "int8" or target.int8_for(handle.is_transformer).mode != "static":
        return target.with_calibration("minmax"), None, []
    best, best_key, tried = None, None, []
    for method in getattr(backend, "calibrate_methods", CALIBRATE_METHODS):
        t = target.with_calibration(method)
        d = workdir / f"calibration-{method}"
        d.mkdir(parents=True, exist_ok=True)
        art = backend.quantize(fp, handle, t, calibration, d)
        score = evaluate(art)
        err = fidelity(art) if fidelity is not None else 0.0
        tried.append({"calibrate_method": method, "score": score, "output_error": err})
        if best_key is None or (score, -err) > best_key:
            best, best_key = (t, art), (score, -err)
    return best[0], best[1], tried
