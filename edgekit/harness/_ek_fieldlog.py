"""A bounded rolling log of a model's field inputs and outputs, on the device (stdlib + numpy).

    log = FieldLog("/var/lib/app/field", max_mb=16)
    log.log({"x": x}, {"logits": y})        # one record per inference (batch of any size)
    log.close()

Records are JSON lines: {"t": unix seconds, "inputs": {name: nested list}, "outputs": {...}}, floats
rounded to 6 decimals. They go to segment files field-000001.jsonl, field-000002.jsonl, ... in the
folder; a segment is closed at max_mb / segments and the oldest segments are deleted while the
folder holds more than max_mb, so the log never outgrows its budget and always keeps the newest
records. A crash mid-write leaves at most one truncated last line, which readers skip.
`edgekit drift BUNDLE DIR` reads the folder (or one segment file).

run.py logs its validation-set inputs and outputs here with --log-field DIR [--log-max-mb N].
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import numpy as np

SEGMENT_RE = re.compile(r"^field-(\d{6,})\.jsonl$")
DEFAULT_MAX_MB = 16.0
DEFAULT_SEGMENTS = 4


def _plain(a) -> object:
    a = np.asarray(a)
    if a.dtype.kind == "f":
        return np.round(a.astype(np.float64), 6).tolist()
    if a.dtype.kind in "iub":
        return a.astype(np.int64).tolist()
    return a.tolist()


def segments(directory: Path) -> list[Path]:
    """The folder's segment files, oldest first."""
    d = Path(directory)
    found = [(int(m.group(1)), p) for p in d.iterdir() if (m := SEGMENT_RE.match(p.name))] if d.is_dir() else []
    return [p for _, p in sorted(found)]


class FieldLog:
    def __init__(self, directory, max_mb: float = DEFAULT_MAX_MB, segments_kept: int = DEFAULT_SEGMENTS):
        if not max_mb > 0:
            raise ValueError(f"max_mb = {max_mb!r}; expected a number > 0")
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.max_bytes = int(max_mb * 2 ** 20)
        self.segment_bytes = max(self.max_bytes // max(int(segments_kept), 1), 1024)
        self.records = 0
        self.dropped = 0            # records larger than a whole segment: never written
        existing = segments(self.dir)
        self._seq = int(SEGMENT_RE.match(existing[-1].name).group(1)) if existing else 0
        self._file = None
        self._size = 0
        self._open_next()

    def _open_next(self) -> None:
        if self._file is not None:
            self._file.close()
        self._seq += 1
        path = self.dir / f"field-{self._seq:06d}.jsonl"
        self._file = open(path, "a", encoding="utf-8")
        self._size = path.stat().st_size

    def _prune(self) -> None:
        files = segments(self.dir)
        sizes = {p: p.stat().st_size for p in files}
        total = sum(sizes.values())
        for p in files[:-1]:            # never the segment being written
            if total <= self.max_bytes:
                break
            total -= sizes[p]
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass

    def log(self, inputs: dict, outputs: dict, t: float | None = None) -> None:
        rec = {"t": round(time.time() if t is None else t, 3),
               "inputs": {k: _plain(v) for k, v in inputs.items()},
               "outputs": {k: _plain(v) for k, v in outputs.items()}}
        line = json.dumps(rec, separators=(",", ":")) + "\n"
        n = len(line.encode("utf-8"))
        if n > self.segment_bytes:
            self.dropped += 1
            return
        if self._size + n > self.segment_bytes and self._size > 0:
            self._open_next()
            self._prune()
        self._file.write(line)
        self._file.flush()
        self._size += n
        self.records += 1

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self._prune()

    def describe(self) -> dict:
        return {"dir": str(self.dir), "max_mb": round(self.max_bytes / 2 ** 20, 6), "records": self.records,
                "dropped": self.dropped, "files": [p.name for p in segments(self.dir)]}

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
