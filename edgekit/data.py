"""Calibration and validation data: files -> named numpy inputs (N samples on axis 0) + labels.

Formats (documented in calibration/README.md):
- ``.npz``: one array per model input, named like the input, plus optional ``labels`` (int, N);
- an image folder: one sub-folder per class (sorted names -> label 0, 1, ...), images resized to
  the model's input height and width, scaled to [0, 1], grey or RGB by the input's channels;
- ``.jsonl``: one ``{"text": str, "label": int}`` per line, tokenized with the Hugging Face model
  directory's tokenizer, padded/truncated to the sequence length.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from .errors import DataError, MissingExtraError
from .hashing import sha256_path
from .source import ModelHandle

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")


@dataclasses.dataclass
class Dataset:
    inputs: dict[str, np.ndarray]
    labels: np.ndarray | None
    path: str
    sha256: str
    format: str
    classes: list[str] | None = None  # image folders: the class folder of each label id
    role: str = "data"                # what the user gave it as: calibration, validation, training
    split: str | None = None          # "tuning" / "held-out" when cut from one file (split_holdout)
    rows: np.ndarray | None = None    # which samples of the file these are (None: all, in file order)

    def __len__(self) -> int:
        return len(next(iter(self.inputs.values())))

    def sample(self, i: int) -> dict[str, np.ndarray]:
        """Sample i as a batch of one (every runtime here is measured at batch 1)."""
        return {k: v[i:i + 1] for k, v in self.inputs.items()}

    def head(self, n: int) -> "Dataset":
        return self.take(np.arange(min(n, len(self))))

    def take(self, index: np.ndarray, split: str | None = None) -> "Dataset":
        """Samples `index` of this set; `rows` keeps where they stand in the file, so the same
        samples can be read again (after a vocab stage, with another tokenizer)."""
        index = np.asarray(index, dtype=np.int64)
        return dataclasses.replace(self, inputs={k: v[index] for k, v in self.inputs.items()},
                                   labels=None if self.labels is None else self.labels[index],
                                   split=split or self.split,
                                   rows=index if self.rows is None else self.rows[index])

    def describe(self) -> dict:
        return {"path": self.path, "sha256": self.sha256, "format": self.format, "n": len(self),
                "labelled": self.labels is not None, **({"split": self.split} if self.split else {})}


def split_holdout(data: Dataset) -> tuple[Dataset, Dataset]:
    """Cut one validation file into a tuning part (every choice a conversion makes: accuracy back-off,
    recipe stages) and a held-out part no choice sees (the reported drop, the bundle's validation set
    the device and the gate measure). Deterministic and stratified by systematic sampling: samples
    ordered by class (file order within a class; unlabelled data: file order), then even positions
    tune and odd ones are held out. Each class gets floor or ceil of half its samples in each part
    and the parity carries over from class to class, so a file of N keeps ceil(N/2) for tuning even
    when most classes occur once (an ImageNet-style file of 16 images with 16 labels: 8 and 8, where
    halving each class alone held out nothing)."""
    n = len(data)
    if n < 2:
        raise DataError(f"{data.path}: {n} {data.role} sample(s) cannot be cut into a tuning part and a "
                        "held-out part; give at least 2, or a separate held-out file (--test)")
    order = np.arange(n) if data.labels is None else np.argsort(data.labels, kind="stable")
    held = np.zeros(n, dtype=bool)
    held[order[1::2]] = True
    return data.take(np.flatnonzero(~held), "tuning"), data.take(np.flatnonzero(held), "held-out")


def _load_npz(path: Path, names: list[str]) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as exc:
        raise DataError(f"{path}: not a readable .npz file ({type(exc).__name__}: {exc})") from exc
    labels = arrays.pop("labels", None)
    missing = [n for n in names if n not in arrays]
    if missing:
        raise DataError(f"{path}: no array named {missing[0]!r}; the model's inputs are "
                        f"{', '.join(names)} (found: {', '.join(arrays) or 'nothing'})")
    extra = [k for k in arrays if k not in names]
    if extra:
        raise DataError(f"{path}: array {extra[0]!r} is not a model input; the model's inputs are "
                        f"{', '.join(names)} (plus optional 'labels')")
    return arrays, labels


def _load_images(path: Path, handle: ModelHandle):
    try:
        from PIL import Image
    except ImportError as exc:
        raise MissingExtraError("pillow", "all", "image-folder datasets") from exc
    if len(handle.inputs) != 1 or handle.inputs[0].shape is None or len(handle.inputs[0].shape) != 4:
        raise DataError(f"{path}: an image folder needs a model with one NCHW input of known shape "
                        "(a .pt2 or .onnx source); save the data as .npz instead")
    _, c, h, w = handle.inputs[0].shape
    if c not in (1, 3) or not h or not w:
        raise DataError(f"{path}: the model's input shape {handle.inputs[0].shape} is not NCHW with 1 or 3 channels")
    classes = sorted(d.name for d in path.iterdir() if d.is_dir())
    if not classes:
        raise DataError(f"{path}: no class sub-folders; expected one folder per class holding images")
    xs, ys = [], []
    for label, cls in enumerate(classes):
        for f in sorted((path / cls).iterdir()):
            if f.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            try:
                img = Image.open(f).convert("L" if c == 1 else "RGB").resize((w, h), Image.BILINEAR)
            except Exception as exc:
                raise DataError(f"{f}: not a readable image ({exc})") from exc
            a = np.asarray(img, dtype=np.float32) / 255.0
            xs.append(a[None] if c == 1 else a.transpose(2, 0, 1))
            ys.append(label)
    if not xs:
        raise DataError(f"{path}: no images ({', '.join(IMAGE_SUFFIXES)}) in the class folders")
    return {handle.inputs[0].name: np.stack(xs)}, np.asarray(ys, dtype=np.int64), classes


# Training lines without a label (jsonl) or with label -1 (npz): the teacher labels them, so
# distillation learns from the unlabelled text a user has besides the labelled set (distill.kd_loss).
UNLABELLED = -1


def _load_jsonl(path: Path, handle: ModelHandle, sequence_length: int, tokenizer_dir: Path | None,
                role: str = "data"):
    tok_dir = tokenizer_dir or handle.hf_dir
    if tok_dir is None:
        raise DataError(f"{path}: JSONL text needs a tokenizer: use a Hugging Face model directory "
                        "as the source, or pass --tokenizer DIR")
    try:
        from transformers import AutoTokenizer
    except ImportError as exc:
        raise MissingExtraError("transformers", "hf", "JSONL text datasets") from exc
    texts, labels = [], []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from exc
            if not isinstance(rec, dict) or not isinstance(rec.get("text"), str):
                raise DataError(f"{path}:{lineno}: expected an object with a string 'text' (and int 'label')")
            if "label" in rec and (not isinstance(rec["label"], int) or isinstance(rec["label"], bool)):
                raise DataError(f"{path}:{lineno}: label = {rec['label']!r} must be an integer class id")
            texts.append(rec["text"])
            labels.append(rec.get("label"))
    if not texts:
        return {n.name: np.zeros((0, sequence_length), np.int64) for n in handle.inputs}, None
    tok = AutoTokenizer.from_pretrained(str(tok_dir), local_files_only=True)
    enc = tok(texts, padding="max_length", truncation=True, max_length=sequence_length, return_tensors="np")
    inputs = {n: np.asarray(enc[n], dtype=np.int64) for n in handle.input_names if n in enc}
    missing = [n for n in handle.input_names if n not in inputs]
    if missing:
        raise DataError(f"{path}: the tokenizer in {tok_dir} does not produce model input {missing[0]!r}")
    has = [lab is not None for lab in labels]
    if any(has) and not all(has):
        if role == "training":  # the teacher labels the rest
            return inputs, np.asarray([UNLABELLED if lab is None else lab for lab in labels], dtype=np.int64)
        raise DataError(f"{path}:{has.index(False) + 1}: some lines have a 'label' and this one does not "
                        f"(only training data may mix labelled and unlabelled lines)")
    return inputs, (np.asarray(labels, dtype=np.int64) if all(has) else None)


def load_data(path: str | Path, handle: ModelHandle, *, sequence_length: int = 128,
              tokenizer_dir: str | Path | None = None, role: str = "data") -> Dataset:
    """Read a dataset and check it against the model's inputs (names, per-sample shapes, dtypes,
    NaN/Inf); every problem is a DataError naming the file."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: {role} data not found")
    classes = None
    if p.is_dir():
        inputs, labels, classes = _load_images(p, handle)
        fmt = "image-folder"
    elif p.suffix == ".npz":
        inputs, labels = _load_npz(p, handle.input_names)
        fmt = "npz"
    elif p.suffix == ".jsonl":
        inputs, labels = _load_jsonl(p, handle, sequence_length,
                                     Path(tokenizer_dir) if tokenizer_dir else None, role)
        fmt = "jsonl"
    else:
        raise DataError(f"{p}: unsupported {role} data; expected .npz, .jsonl or an image folder")
    _check(p, inputs, labels, handle, role)
    return Dataset(inputs, labels, str(p), sha256_path(p), fmt, classes, role)


def _check(p: Path, inputs: dict[str, np.ndarray], labels, handle: ModelHandle, role: str) -> None:
    n = None
    for spec in handle.inputs:
        a = inputs[spec.name]
        if a.ndim == 0 or len(a) == 0:
            raise DataError(f"{p}: {role} set is empty (array {spec.name!r} has no samples)")
        if n is not None and len(a) != n:
            raise DataError(f"{p}: array {spec.name!r} has {len(a)} samples, other inputs have {n}")
        n = len(a)
        if spec.dtype and a.dtype.name != spec.dtype:
            raise DataError(f"{p}: array {spec.name!r} has dtype {a.dtype.name}; the model expects "
                            f"{spec.dtype} (convert with .astype(np.{spec.dtype}))")
        if spec.shape is not None:
            want = spec.shape[1:]
            got = a.shape[1:]
            if len(want) != len(got) or any(w is not None and w != g for w, g in zip(want, got)):
                shown = "x".join("?" if w is None else str(w) for w in want)
                raise DataError(f"{p}: array {spec.name!r} has samples of shape {'x'.join(map(str, got))}; "
                                f"the model expects {shown} (N samples on axis 0)")
        # Token ids past the embedding table fail deep inside PyTorch or a runtime (or index
        # garbage on a device): refuse them here, naming the file.
        limit = handle.id_limits.get(spec.name)
        if limit is not None and a.dtype.kind in "iu" and a.size:
            out = (a < 0) | (a >= limit)
            if out.any():
                first = tuple(np.argwhere(out)[0])
                raise DataError(f"{p}: array {spec.name!r} holds id {int(a[first])} (sample {first[0]}); the "
                                f"model's embedding takes 0..{limit - 1} (tokenized for another model?)")
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            bad = int(np.argwhere(~np.isfinite(a))[0][0])
            raise DataError(f"{p}: array {spec.name!r} holds NaN or Inf (first at sample {bad}); "
                            f"{role} data must be finite")
    if labels is not None:
        if labels.ndim != 1 or len(labels) != n:
            raise DataError(f"{p}: 'labels' must be 1-D with one entry per sample ({n}), got shape {labels.shape}")
        if labels.dtype.kind not in "iu":
            raise DataError(f"{p}: 'labels' has dtype {labels.dtype.name}; expected integer class ids")


def check_labels(data: Dataset, n_classes: int) -> None:
    """Refuse class ids the model cannot emit. Scored, such a label is an error no model can avoid
    (accuracy silently capped), and it usually means a file made for another model or label map."""
    if data.labels is None or not len(data.labels):
        return
    bad = (data.labels < 0) | (data.labels >= n_classes)
    if not bad.any():
        return
    values = [int(v) for v in np.unique(data.labels[bad])]
    shown = ", ".join(map(str, values[:5])) + (f", ... ({len(values)} values)" if len(values) > 5 else "")
    if data.classes is not None and len(values) == 1:
        shown += f" (class folder {data.classes[values[0]]!r})"
    where = np.flatnonzero(bad)
    raise DataError(f"{data.path}: {data.role} label{'s' if len(values) > 1 else ''} {shown} "
                    f"{'are' if len(values) > 1 else 'is'} outside the model's {n_classes} output classes "
                    f"(valid: 0..{n_classes - 1}; {len(where)} of {len(data)} samples, first at sample {int(where[0])})")


def check_consistent(data: Dataset, fixed_by: Dataset, handle: ModelHandle, static: str = "") -> None:
    """`data` against the file that fixes what the source does not declare (python factories: dtype
    and per-sample shape; HF directories: the sequence length). The export is traced from
    `fixed_by`'s samples, so the bundle takes exactly their dtype and shape: anything else in `data`
    would fail only after the export, or be measured on inputs the bundle never sees. `static`
    (a reason, e.g. a target with static shapes) checks every dimension, declared dynamic or not."""
    for spec in handle.inputs:
        a, ref = data.inputs[spec.name], fixed_by.inputs[spec.name]
        if spec.dtype is None and a.dtype != ref.dtype:
            raise DataError(f"{data.path}: array {spec.name!r} has dtype {a.dtype.name}, the {fixed_by.role} "
                            f"data ({fixed_by.path}) {ref.dtype.name}; the model is traced with the "
                            f"{fixed_by.role} data, so both must match (convert with .astype(np.{ref.dtype.name}))")
        if (spec.shape is None or static) and a.shape[1:] != ref.shape[1:]:
            why = static or f"the model is traced with the {fixed_by.role} data, so both must match"
            raise DataError(f"{data.path}: array {spec.name!r} has samples of shape {_dims(a.shape[1:])}, "
                            f"the {fixed_by.role} data ({fixed_by.path}) {_dims(ref.shape[1:])}; {why} "
                            "(N samples on axis 0)")


def _dims(shape) -> str:
    return "x".join(map(str, shape)) or "scalar"
