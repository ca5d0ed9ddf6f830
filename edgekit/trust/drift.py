"""Drift monitoring: reference statistics at convert time, PSI and KS against field data later.

At convert time `reference_stats(datasets, outputs)` summarises what the model was calibrated and
validated on, for the manifest (key "drift"; or a hashed file the manifest names, see docs/TRUST.md):

* features: per-sample scalars derived from each input (and output):
  - float inputs with at most 64 elements per sample: every element (``x[0,3,4]``);
  - every float input: its per-sample mean and std (``x:mean``, ``x:std``); larger inputs in NCHW
    (C <= 16) or NHWC (C <= 4) layout also a per-channel mean (``x:c0:mean``);
  - integer inputs (token ids, masks): the count of non-zero entries and the mean (``ids:nonzero``);
  - outputs: the same rules, plus for a classifier's (N, C) logits the top-1 class distribution and
    the top softmax probability (``logits:confidence``).
* per feature: n, mean, std, 101 quantiles (0%, 1%, ..., 100%), and the fraction of reference
  samples in each of 10 bins cut at the reference deciles (ties merge bins).

`drift(bundle, field)` derives the same features from field data and tests each one:
* PSI = sum((a - e) * ln(a / e)) over the bins (fractions floored at 1e-4);
* KS: D = sup |F_field - F_ref|, F_ref the reference CDF from its 101 quantiles (resolution 1%),
  p-value from scipy's Kolmogorov distribution with n = n_field * n_ref / (n_field + n_ref), as
  scipy's two-sample test does asymptotically. For the class distribution: a chi-square test.
* a feature drifted when PSI > psi threshold AND p < p threshold: a shift both large (PSI) and not
  noise (p). Thresholds: the profile's optional ``[drift] psi``/``ks_p`` (in the manifest's target),
  else 0.2 and 0.01; the CLI can override them.
Field data: the harness's --log-field folder (JSONL segments) or one segment, or data in a
calibration format (.npz with the input names, optionally "output.<name>" arrays; an image folder;
JSONL text with a tokenizer). Fewer than 20 samples, or a missing input, is a DataError (exit 2).
Exit code: 1 when any feature drifted, else 0.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from ..bundle import read_manifest
from ..errors import BundleError, DataError

# The per-sample features, binning and PSI live device-side (harness/_ek_drift.py): the model server
# in every bundle exports live input drift with the very same code.
from ..harness._ek_drift import MAX_ELEMENT_FEATURES, PSI_FLOOR, _bins, features_of, psi  # noqa: E402,F401

SCHEMA = "edgekit.drift-reference/1"
N_BINS = 10
N_QUANTILES = 101
DEFAULT_PSI = 0.2
DEFAULT_KS_P = 0.01
MIN_FIELD_SAMPLES = 20


def _r(x: float) -> float:
    """Round to 7 significant digits: a compact manifest, and the same value when read back."""
    return float(f"{float(x):.7g}")


# ---------------------------------------------------------------- features

def _is_classifier(a: np.ndarray) -> bool:
    return a.ndim == 2 and a.shape[1] >= 2 and a.dtype.kind == "f"


def _softmax_top(a: np.ndarray) -> np.ndarray:
    z = a.astype(np.float64) - a.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).max(axis=1)


def output_features(name: str, a: np.ndarray) -> dict[str, np.ndarray]:
    a = np.asarray(a)
    if _is_classifier(a):
        return {f"{name}:confidence": _softmax_top(a), **features_of(name, a)}
    return features_of(name, a)


# ---------------------------------------------------------------- reference

def _continuous_reference(v: np.ndarray) -> dict[str, Any]:
    q = np.array([_r(x) for x in np.quantile(v, np.linspace(0, 1, N_QUANTILES))])
    edges = np.unique(q[[round(k * (N_QUANTILES - 1) / N_BINS) for k in range(1, N_BINS)]])
    counts = np.bincount(_bins(v, edges), minlength=len(edges) + 1)
    return {"n": int(v.size), "mean": _r(v.mean()), "std": _r(v.std()), "edges": edges.tolist(),
            "expected": [_r(c / v.size) for c in counts], "quantiles": q.tolist()}


def _as_inputs(datasets: Any) -> dict[str, np.ndarray]:
    """Dataset | {name: array} | a sequence of those -> {name: array}, concatenated on axis 0."""
    if datasets is None:
        return {}
    items = [datasets] if isinstance(datasets, Mapping) or hasattr(datasets, "inputs") else list(datasets)
    merged: dict[str, list[np.ndarray]] = {}
    for d in items:
        arrays = d.inputs if hasattr(d, "inputs") else d
        for k, v in arrays.items():
            merged.setdefault(k, []).append(np.asarray(v))
    return {k: np.concatenate(v, axis=0) for k, v in merged.items()}


def _as_outputs(outputs: Any, names: Iterable[str] | None = None) -> dict[str, np.ndarray]:
    if outputs is None:
        return {}
    if isinstance(outputs, Mapping):
        return {k: np.asarray(v) for k, v in outputs.items()}
    if isinstance(outputs, np.ndarray):
        outputs = [outputs]
    names = list(names or [])
    return {(names[i] if i < len(names) else f"output{i}"): np.asarray(v) for i, v in enumerate(outputs)}


def reference_stats(dataset: Any, outputs: Any = None, output_names: Iterable[str] | None = None) -> dict[str, Any]:
    """Reference statistics for the manifest (JSON-ready, deterministic). `dataset`: an
    edgekit.data.Dataset, a {input name: array} mapping, or a list of those (calibration and
    validation: concatenated); `outputs`: the artifact's outputs on (some of) that data, as
    {name: array}, one array, or a list named by `output_names`."""
    inputs = _as_inputs(dataset)
    if not inputs:
        raise DataError("reference_stats: no input arrays")
    outs = _as_outputs(outputs, output_names)
    ref: dict[str, Any] = {"schema": SCHEMA, "bins": N_BINS, "quantiles": N_QUANTILES, "inputs": {}, "outputs": {},
                           "features": {}, "classes": {}}
    for name in sorted(inputs):
        a = inputs[name]
        ref["inputs"][name] = {"shape": list(a.shape[1:]), "dtype": a.dtype.name, "n": int(a.shape[0])}
        for fname, v in features_of(name, a).items():
            ref["features"][fname] = {"source": "input", **_continuous_reference(v)}
    for name in sorted(outs):
        a = outs[name]
        ref["outputs"][name] = {"shape": list(a.shape[1:]), "dtype": a.dtype.name, "n": int(a.shape[0])}
        for fname, v in output_features(name, a).items():
            ref["features"][fname] = {"source": "output", **_continuous_reference(v)}
        if _is_classifier(a):
            counts = np.bincount(a.argmax(axis=1), minlength=a.shape[1])
            ref["classes"][name] = {"n": int(a.shape[0]), "expected": [_r(c / a.shape[0]) for c in counts]}
    return ref


# ---------------------------------------------------------------- tests

def ks_against_quantiles(values: np.ndarray, quantiles: list[float], n_ref: int) -> tuple[float, float]:
    """(D, p): field sample vs the reference CDF reconstructed from its quantiles (right-continuous
    step function, levels k / (len - 1)); asymptotic two-sample p-value with the true n_ref."""
    from scipy.stats import kstwo

    v = np.sort(np.asarray(values, dtype=np.float64))
    q = np.asarray(quantiles, dtype=np.float64)
    levels = len(q) - 1
    points = np.union1d(v, q)
    f_field = np.searchsorted(v, points, side="right") / v.size
    f_ref = np.clip((np.searchsorted(q, points, side="right") - 1) / levels, 0.0, 1.0)
    d = float(np.max(np.abs(f_field - f_ref)))
    en = v.size * n_ref / (v.size + n_ref)
    p = float(kstwo.sf(d, max(int(round(en)), 1))) if d > 0 else 1.0
    return d, min(max(p, 0.0), 1.0)


@dataclass
class FeatureDrift:
    name: str
    source: str             # input | output | class
    n_field: int
    psi: float
    statistic: float        # KS D, or chi-square for "class"
    p_value: float
    test: str               # "ks" | "chi2"
    drifted: bool

    def to_dict(self) -> dict[str, Any]:
        return {"feature": self.name, "source": self.source, "n_field": self.n_field, "psi": self.psi,
                "test": self.test, "statistic": self.statistic, "p_value": self.p_value, "drifted": self.drifted}


@dataclass
class DriftResult:
    bundle: str
    field: str
    n_field: int
    psi_threshold: float
    p_threshold: float
    features: list[FeatureDrift]
    notes: list[str] = field(default_factory=list)

    @property
    def drifted(self) -> list[FeatureDrift]:
        return [f for f in self.features if f.drifted]

    @property
    def exit_code(self) -> int:
        return 1 if self.drifted else 0

    @property
    def verdict(self) -> str:
        return "drift" if self.drifted else "no drift"

    def to_dict(self) -> dict[str, Any]:
        return {"bundle": self.bundle, "field": self.field, "n_field": self.n_field, "verdict": self.verdict,
                "thresholds": {"psi": self.psi_threshold, "p": self.p_threshold},
                "drifted": [f.name for f in self.drifted], "notes": self.notes,
                "features": [f.to_dict() for f in self.features]}


# ---------------------------------------------------------------- field data

def _field_records(files: list[Path]) -> tuple[dict[str, list], dict[str, list]]:
    inputs: dict[str, list] = {}
    outputs: dict[str, list] = {}
    count = 0
    for fi, path in enumerate(files):
        lines = path.read_text(encoding="utf-8").splitlines()
        for lineno, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                if fi == len(files) - 1 and lineno == len(lines):
                    continue  # a device stopped mid-write: the last line of the newest segment
                raise DataError(f"{path}:{lineno}: not a JSON line of a field log") from exc
            if not isinstance(rec, dict) or not isinstance(rec.get("inputs"), dict):
                raise DataError(f"{path}:{lineno}: a field log record needs an 'inputs' object "
                                "(as harness --log-field writes)")
            for key, target in (("inputs", inputs), ("outputs", outputs)):
                for name, value in (rec.get(key) or {}).items():
                    target.setdefault(name, []).append((count, value))
            count += 1
    if count == 0:
        raise DataError(f"{files[0].parent if len(files) > 1 else files[0]}: the field log holds no records")
    return inputs, outputs


def _stack(name: str, items: list, where: str) -> np.ndarray:
    try:
        arrays = [np.asarray(v) for _, v in items]
        if any(a.ndim == 0 for a in arrays):
            raise ValueError("scalar")
        return np.concatenate([a.reshape((-1,) + a.shape[1:]) for a in arrays], axis=0)
    except ValueError as exc:
        raise DataError(f"{where}: '{name}' records have different shapes; cannot compare them") from exc


def _read_field_log(paths: list[Path], where: str) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    ins, outs = _field_records(paths)
    n = max(len(v) for v in ins.values()) if ins else 0
    for name, items in ins.items():
        if len(items) != n:
            raise DataError(f"{where}: input '{name}' is missing from {n - len(items)} of {n} records")
    return ({k: _stack(k, v, where) for k, v in ins.items()},
            {k: _stack(k, v, where) for k, v in outs.items() if len(v) == n})


def _handle(manifest: dict[str, Any], bundle: Path):
    from ..source import ModelHandle, TensorSpec
    model = manifest.get("model") or {}
    specs = [TensorSpec(i["name"], tuple(i["shape"]) if i.get("shape") is not None else None, i.get("dtype"))
             for i in model.get("inputs") or []]
    return ModelHandle("bundle", str(bundle), (manifest.get("source") or {}).get("sha256") or "", specs,
                       [o["name"] for o in model.get("outputs") or []])


def load_field(path: str | Path, manifest: dict[str, Any], bundle: Path, tokenizer: str | None = None
               ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(inputs, outputs) of field data in any supported form; outputs may be empty."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: no such field log or data")
    if p.is_dir():
        segs = sorted(p.glob("field-*.jsonl"))
        if segs:
            return _read_field_log(sorted(segs, key=lambda s: s.name), str(p))
        from ..data import load_data
        return load_data(p, _handle(manifest, bundle), role="field").inputs, {}
    if p.suffix == ".jsonl":
        with open(p, encoding="utf-8") as f:
            first = next((ln for ln in f if ln.strip()), "")
        try:
            head = json.loads(first) if first else None
        except json.JSONDecodeError:
            head = None
        if isinstance(head, dict) and "text" in head and "inputs" not in head:
            from ..data import load_data
            seq = (manifest.get("target") or {}).get("sequence_length") or 128
            return load_data(p, _handle(manifest, bundle), sequence_length=seq, tokenizer_dir=tokenizer,
                             role="field").inputs, {}
        return _read_field_log([p], str(p))
    if p.suffix == ".npz":
        try:
            with np.load(p, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except Exception as exc:
            raise DataError(f"{p}: not a readable .npz file ({type(exc).__name__})") from exc
        outs = {k[len("output."):]: v for k, v in arrays.items() if k.startswith("output.")}
        ins = {k[len("input."):] if k.startswith("input.") else k: v for k, v in arrays.items()
               if not k.startswith("output.") and k not in ("labels",) and not k.startswith(("expected.", "reference."))}
        return ins, outs
    raise DataError(f"{p}: unsupported field data; expected the harness's --log-field folder or a .jsonl segment, "
                    ".npz, .jsonl text or an image folder")


def _reference(manifest: dict[str, Any], bundle: Path) -> dict[str, Any]:
    ref = manifest.get("drift")
    if isinstance(ref, dict) and isinstance(ref.get("file"), str):
        path = bundle / ref["file"]
        if ref["file"] not in (manifest.get("files") or {}):
            raise BundleError(f"{bundle}: drift reference {ref['file']} is not listed in the manifest")
        from ..hashing import sha256_file
        if not path.is_file() or sha256_file(path) != manifest["files"][ref["file"]]:
            raise BundleError(f"{path}: missing or altered (sha256 differs from the manifest)")
        ref = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(ref, dict) or ref.get("schema") != SCHEMA:
        raise BundleError(f"{bundle}: the manifest has no drift reference statistics (key 'drift'); "
                          "convert the model with an edgekit that records them")
    return ref


def _threshold(value: float | None, target: dict[str, Any], key: str, default: float, what: str) -> float:
    if value is None:
        value = ((target.get("drift") or {}) if isinstance(target.get("drift"), dict) else {}).get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        from ..errors import ConfigError
        raise ConfigError(f"drift {what} threshold = {value!r}; expected a number > 0")
    return float(value)


def drift(bundle: str | Path, field_data: str | Path | Mapping[str, Any], *, psi_threshold: float | None = None,
          ks_p_threshold: float | None = None, tokenizer: str | None = None,
          field_outputs: Mapping[str, Any] | None = None) -> DriftResult:
    """Compare field data with the bundle's reference statistics (see the module docstring).
    `field_data`: a path, or {input name: array} (with `field_outputs` optionally)."""
    b = Path(bundle)
    manifest = read_manifest(b)
    ref = _reference(manifest, b)
    target = manifest.get("target") or {}
    psi_t = _threshold(psi_threshold, target, "psi", DEFAULT_PSI, "PSI")
    p_t = _threshold(ks_p_threshold, target, "ks_p", DEFAULT_KS_P, "p-value")
    if isinstance(field_data, Mapping):
        where = "field data"
        ins = {k: np.asarray(v) for k, v in field_data.items()}
        outs = {k: np.asarray(v) for k, v in (field_outputs or {}).items()}
    else:
        where = str(field_data)
        ins, outs = load_field(field_data, manifest, b, tokenizer)
    notes: list[str] = []
    missing = [name for name in ref["inputs"] if name not in ins]
    if missing:
        raise DataError(f"{where}: no input {', '.join(repr(m) for m in missing)} (the bundle's reference has "
                        f"{', '.join(ref['inputs'])}; found {', '.join(ins) or 'nothing'}): cannot check drift")
    n = None
    for name, spec in ref["inputs"].items():
        a = ins[name]
        if list(a.shape[1:]) != list(spec["shape"]):
            raise DataError(f"{where}: input '{name}' has samples of shape {'x'.join(map(str, a.shape[1:])) or 'scalar'}; "
                            f"the reference has {'x'.join(map(str, spec['shape']))}: features missing or extra")
        if n is not None and a.shape[0] != n:
            raise DataError(f"{where}: input '{name}' has {a.shape[0]} samples, other inputs {n}")
        n = a.shape[0]
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            raise DataError(f"{where}: input '{name}' holds NaN or Inf")
    if n < MIN_FIELD_SAMPLES:
        raise DataError(f"{where}: {n} field samples; drift needs at least {MIN_FIELD_SAMPLES}")
    extra = [k for k in ins if k not in ref["inputs"]]
    if extra:
        notes.append(f"ignored inputs not in the reference: {', '.join(extra)}")
    values: dict[str, np.ndarray] = {}
    for name in ref["inputs"]:
        values.update(features_of(name, ins[name]))
    checked_outputs = []
    for name, spec in ref["outputs"].items():
        a = outs.get(name)
        if a is None:
            notes.append(f"output '{name}' not in the field data: output drift not checked")
            continue
        if list(a.shape[1:]) != list(spec["shape"]):
            raise DataError(f"{where}: output '{name}' has samples of shape {'x'.join(map(str, a.shape[1:]))}; "
                            f"the reference has {'x'.join(map(str, spec['shape']))}")
        values.update(output_features(name, a))
        checked_outputs.append(name)

    results: list[FeatureDrift] = []
    for fname, fref in ref["features"].items():
        if fname not in values:
            if fref["source"] == "input":
                raise DataError(f"{where}: feature '{fname}' cannot be computed from the field data")
            continue
        v = values[fname]
        edges = np.asarray(fref["edges"], dtype=np.float64)
        actual = np.bincount(_bins(v, edges), minlength=len(edges) + 1) / v.size
        p_psi = psi(actual, fref["expected"])
        d, p = ks_against_quantiles(v, fref["quantiles"], fref["n"])
        results.append(FeatureDrift(fname, fref["source"], int(v.size), _r(p_psi), _r(d), p, "ks",
                                    p_psi > psi_t and p < p_t))
    for name in checked_outputs:
        cref = ref["classes"].get(name)
        if not cref:
            continue
        from scipy.stats import chisquare
        a = outs[name]
        counts = np.bincount(a.argmax(axis=1), minlength=len(cref["expected"])).astype(np.float64)
        exp = np.maximum(np.asarray(cref["expected"], dtype=np.float64), PSI_FLOOR)
        exp = exp / exp.sum() * counts.sum()
        stat, p = chisquare(counts, exp)
        p_psi = psi(counts / counts.sum(), cref["expected"])
        results.append(FeatureDrift(f"{name}:class", "class", int(counts.sum()), _r(p_psi), _r(float(stat)),
                                    float(p), "chi2", p_psi > psi_t and float(p) < p_t))
    return DriftResult(str(b), where, int(n), psi_t, p_t, results, notes)


def render(result: DriftResult, limit: int = 20):
    """Rich output: verdict, then the drifted features and the largest PSI, at most `limit` rows."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    style = "bold red" if result.drifted else "green"
    head = Text(f"drift: {result.verdict.upper()} - {len(result.drifted)} of {len(result.features)} features "
                f"drifted (PSI > {result.psi_threshold:g} and p < {result.p_threshold:g}) on {result.n_field} "
                f"field samples from {result.field}", style=style)
    rows = sorted(result.features, key=lambda f: (not f.drifted, -f.psi))[:limit]
    t = Table(title=f"features (largest PSI first; {min(limit, len(rows))} of {len(result.features)})",
              title_justify="left")
    for col in ("feature", "source", "PSI", "test", "statistic", "p", "drifted"):
        t.add_column(col, justify="right" if col in ("PSI", "statistic", "p") else "left")
    for f in rows:
        t.add_row(f.name, f.source, f"{f.psi:.3f}", f.test, f"{f.statistic:.3g}", f"{f.p_value:.2g}",
                  "[bold red]DRIFT[/bold red]" if f.drifted else "no")
    parts: list[Any] = [head, t]
    parts += [Text(f"note: {n}", style="yellow") for n in result.notes]
    return Group(*parts)
