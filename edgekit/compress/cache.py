"""Stage results cached by content hash, so recipes that share a prefix (the same distilled student,
then pruned or not) train it once: `edgekit search` runs many recipes on one source.

The key of stage k chains the key of stage k-1 (the source's: its sha256, the data's sha256s and the
recipe's thread count) with stage k's hyperparameters, so a hit means the same model trained the same
way on the same data. An entry holds the model after the stage (torch.save of the whole module:
pruned and distilled networks change shape, so a state dict alone cannot rebuild them), the stage's
row of figures, the data remap table and tokenizer of a vocab stage. The files are this cache's own,
written by this code: loading them unpickles (weights_only=False), so a cache folder must not come
from anyone else.
"""

from __future__ import annotations

import hashlib
import pickle
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any


def chain(parent: str, what: Any) -> str:
    blob = json.dumps(what, sort_keys=True, default=str).encode()
    return hashlib.sha256(parent.encode() + b"\0" + blob).hexdigest()


class StageCache:
    # Models torch.save cannot pickle (a torch.export program's lifted GraphModule holds local
    # closures): kept in memory for this process instead, by key.
    _memory: dict[str, Any] = {}

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.hits = 0
        self.misses = 0
        self.seconds_saved = 0.0   # the cached stages' own training + measuring time
        self.seconds_spent = 0.0

    def _dir(self, key: str) -> Path:
        return self.root / key[:2] / key

    def get(self, key: str) -> dict | None:
        d = self._dir(key)
        if not (d / "row.json").is_file():
            return None
        import numpy as np
        import torch
        entry = json.loads((d / "row.json").read_text(encoding="utf-8"))
        if (d / "model.pt").is_file():
            entry["model"] = torch.load(d / "model.pt", weights_only=False)
        elif entry.get("model_in") == "memory":
            if key not in self._memory:
                return None  # another process's: not here
            import copy
            entry["model"] = copy.deepcopy(self._memory[key])
        else:
            entry["model"] = None
        if (d / "table.npy").is_file():
            entry["table"] = np.load(d / "table.npy")
        if (d / "tokenizer").is_dir():
            entry["tokenizer"] = str(d / "tokenizer")
        return entry

    def put(self, key: str, row: dict, model=None, table=None, tokenizer: str | Path | None = None) -> None:
        """Written into a temporary folder, then renamed: a crash leaves no half entry, and two
        search workers that finish the same stage keep the first one."""
        import numpy as np
        import torch
        d = self._dir(key)
        if d.exists():
            return
        d.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=d.parent))
        try:
            if model is not None:
                try:
                    torch.save(model, tmp / "model.pt")
                except (AttributeError, TypeError, RuntimeError, pickle.PicklingError):
                    (tmp / "model.pt").unlink(missing_ok=True)
                    import copy
                    self._memory[key] = copy.deepcopy(model)
                    row = {**row, "model_in": "memory"}
            if table is not None:
                np.save(tmp / "table.npy", table)
            if tokenizer is not None:
                shutil.copytree(tokenizer, tmp / "tokenizer")
            (tmp / "row.json").write_text(json.dumps(row, default=str), encoding="utf-8")
            os.rename(tmp, d)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            if not d.exists():
                raise
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    def stats(self) -> dict:
        total = self.seconds_saved + self.seconds_spent
        return {"hits": self.hits, "misses": self.misses, "seconds_saved": round(self.seconds_saved, 2),
                "seconds_spent": round(self.seconds_spent, 2),
                "share_served": round(self.seconds_saved / total, 4) if total else 0.0}
