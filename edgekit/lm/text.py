"""Text data for a causal LM: calibration text (data-aware int4) and validation text (perplexity).

    .txt     paragraphs separated by blank lines
    .jsonl   one JSON object per line with a "text" string (other keys, e.g. labels, are ignored)

Anything else (an .npz of tensors and labels, an image folder) is classification or feature-extraction
data, refused with a one-line error naming the file. Validation text is cut into fixed windows of
token ids on the dev machine; those ids travel in the bundle, so the device scores exactly the tokens
the source was scored on.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..hashing import sha256_file

FORMATS = ".txt (paragraphs separated by blank lines) or .jsonl (a 'text' string per line)"


@dataclasses.dataclass
class TextData:
    path: Path
    role: str
    texts: list[str]
    sha256: str

    def describe(self) -> dict:
        return {"path": str(self.path), "sha256": self.sha256, "n": len(self.texts), "format": self.path.suffix[1:]}


def load_text(path: str | Path, role: str) -> TextData:
    p = Path(path)
    if p.is_dir() or p.suffix.lower() in (".npz", ".npy"):
        raise DataError(f"{p}: {role} data for a text-generation model is text, {FORMATS}; this is "
                        f"{'a folder' if p.is_dir() else 'an ' + p.suffix + ' of tensors'} (classification data?)")
    if not p.is_file():
        raise DataError(f"{p}: no such {role} file")
    if p.suffix.lower() not in (".txt", ".jsonl"):
        raise DataError(f"{p}: unknown {role} format {p.suffix or '(none)'!r}; expected {FORMATS}")
    try:
        raw = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{p}: not UTF-8 text (byte {exc.start})") from exc
    if p.suffix.lower() == ".txt":
        texts = [t.strip() for t in raw.replace("\r\n", "\n").split("\n\n") if t.strip()]
    else:
        texts = []
        for i, line in enumerate(raw.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except ValueError as exc:
                raise DataError(f"{p}:{i}: not JSON ({exc.msg})") from exc
            if not isinstance(rec, dict) or not isinstance(rec.get("text"), str):
                raise DataError(f"{p}:{i}: expected an object with a 'text' string")
            if rec["text"].strip():
                texts.append(rec["text"].strip())
    if not texts:
        raise DataError(f"{p}: no text in this {role} file")
    return TextData(p, role, texts, sha256_file(p))


def token_stream(tokenizer, data: TextData) -> list[int]:
    """All texts as one token stream (BOS once, texts joined by a blank line), as llama.cpp's
    perplexity tool reads a corpus."""
    return list(tokenizer("\n\n".join(data.texts))["input_ids"])


def windows(tokenizer, data: TextData, length: int, max_windows: int) -> np.ndarray:
    """Up to max_windows consecutive windows of `length` tokens: [N, length] int64."""
    ids = token_stream(tokenizer, data)
    n = min(max_windows, len(ids) // length)
    if n < 1:
        raise DataError(f"{data.path}: {len(ids)} tokens of {data.role} text; at least {length} needed "
                        f"(one window of the profile's prompt_length)")
    return np.asarray(ids[: n * length], np.int64).reshape(n, length)
