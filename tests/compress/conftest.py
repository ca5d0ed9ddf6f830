"""Fixtures for the compression tests: the digits CNN (edgekit.demo, a few epochs) and a tiny random
BERT saved as a real Hugging Face directory (config, safetensors, a 100-word tokenizer) so that it
is loaded by edgekit.source exactly like a user's model."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _one_thread():
    import torch
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


@pytest.fixture(scope="session")
def digits():
    """(trained digits CNN, its validation accuracy, train Dataset, validation Dataset)."""
    from edgekit.data import Dataset
    from edgekit.demo import digits_data, train_digits
    model, acc = train_digits(epochs=6)
    xt, yt, xv, yv = digits_data()
    train = Dataset({"x": xt}, yt, "train.npz", "0", "npz")
    val = Dataset({"x": xv}, yv, "val.npz", "0", "npz")
    return model, acc, train, val


@pytest.fixture
def digits_handle(digits):
    import copy

    from edgekit.source import ModelHandle, TensorSpec
    model = copy.deepcopy(digits[0]).eval()
    return ModelHandle("python", "tests:digits_cnn", "0", [TensorSpec("x")], ["logits"], module=model)


def _write_tiny_bert(path):
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast
    torch.manual_seed(0)
    cfg = BertConfig(hidden_size=32, num_hidden_layers=4, num_attention_heads=4, intermediate_size=64,
                     vocab_size=100, num_labels=3, max_position_embeddings=64)
    model = BertForSequenceClassification(cfg).eval()
    model.save_pretrained(path, safe_serialization=True)
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(95)]
    (path / "vocab.txt").write_text("\n".join(words) + "\n")
    BertTokenizerFast(vocab_file=str(path / "vocab.txt")).save_pretrained(path)


def bert_data(n: int, seq: int = 16, seed: int = 0):
    """Token ids with a rule the labels follow (which third of the vocabulary dominates)."""
    from edgekit.data import Dataset
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, 100, size=(n, seq)).astype(np.int64)
    ids[:, 0] = 2
    labels = np.stack([((ids >= lo) & (ids < lo + 32)).sum(1) for lo in (5, 37, 69)], 1).argmax(1)
    mask = np.ones_like(ids)
    mask[: n // 2, seq - 4:] = 0
    ids[mask == 0] = 0
    return Dataset({"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)},
                   labels.astype(np.int64), f"bert{seed}.npz", "0", "npz")


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-bert")
    _write_tiny_bert(path)
    return path


@pytest.fixture
def tiny_bert(tiny_bert_dir):
    """(handle loaded by edgekit.source.load, train Dataset, validation Dataset)."""
    from edgekit.source import load
    return load(str(tiny_bert_dir)), bert_data(64, seed=1), bert_data(48, seed=2)
