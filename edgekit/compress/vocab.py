"""Vocabulary pruning: keep the word-embedding rows of the tokens the user's training text uses.

A distilled MiniLM-L6 student holds 11.7 of its 15.1 MB (int8) in the 30,522 x 384 word-embedding
table, and a domain's text uses a few thousand of those tokens. This stage keeps the tokens that
occur in the training text (tokenized in full, not only the first `sequence_length` tokens the model
trains on) plus every special and added token, renumbers them 0..K-1 in their old order, slices the
embedding table to those rows and writes a tokenizer with the same renumbered vocabulary.

WordPiece is greedy longest-match-first, so a word whose pieces were all kept tokenizes exactly as
before; a word that needed a dropped piece is split into shorter kept pieces, and becomes [UNK]
only where none matches (a character the training text never used). `check` measures both: the
share of sentences whose ids changed at all (against the old ids remapped), the token count before
and after (re-split words make sentences longer), and the [UNK]s the old tokenizer did not produce.
On the MiniLM example 74% of the held-out sentences change, by re-splitting alone (no new [UNK]),
and the student's held-out top-1 is unchanged (README, "Transformer int8").
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from ..errors import ConfigError

# Files of a Hugging Face tokenizer directory that do not hold ids: copied as they are.
_COPY = ("tokenizer_config.json", "special_tokens_map.json")


def _texts(path: str) -> list[str] | None:
    if not str(path).endswith(".jsonl"):
        return None
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                out.append(json.loads(line)["text"])
    return out


def _tokenizer(tok_dir: Path):
    from tokenizers import Tokenizer
    return Tokenizer.from_file(str(tok_dir / "tokenizer.json"))


def kept_ids(tok_dir: Path, train, min_count: int = 1) -> np.ndarray:
    """Old ids to keep, sorted: every token seen >= min_count times in the training text, plus the
    tokenizer's special / added tokens (padding, [CLS], [SEP], [UNK], [MASK])."""
    tok = _tokenizer(tok_dir)
    texts = _texts(train.path)
    if texts is not None:
        tok.no_truncation()
        tok.no_padding()
        ids = np.concatenate([np.asarray(e.ids, np.int64) for e in tok.encode_batch(texts)])
    else:  # .npz token ids: what the file holds
        ids = np.asarray(train.inputs["input_ids"]).ravel()
    counts = np.bincount(ids, minlength=tok.get_vocab_size())
    keep = set(np.flatnonzero(counts >= min_count).tolist())
    spec = json.loads((tok_dir / "tokenizer.json").read_text(encoding="utf-8"))
    keep |= {int(t["id"]) for t in spec.get("added_tokens", [])}
    return np.asarray(sorted(keep), np.int64)


def write_tokenizer(tok_dir: Path, keep: np.ndarray, out: Path) -> dict[int, int]:
    """A copy of the tokenizer with only `keep`, renumbered; returns {old id: new id}."""
    spec = json.loads((tok_dir / "tokenizer.json").read_text(encoding="utf-8"))
    model = spec.get("model", {})
    if model.get("type") != "WordPiece" or not isinstance(model.get("vocab"), dict):
        raise ConfigError(f"{tok_dir / 'tokenizer.json'}: vocabulary pruning handles WordPiece tokenizers "
                          f"(BERT family); this one is {model.get('type')!r}")
    new = {int(o): i for i, o in enumerate(keep)}
    by_id = {v: k for k, v in model["vocab"].items()}
    model["vocab"] = {by_id[o]: new[o] for o in keep.tolist()}
    for t in spec.get("added_tokens", []):
        t["id"] = new[int(t["id"])]
    post = spec.get("post_processor") or {}
    for name, sp in (post.get("special_tokens") or {}).items():
        sp["ids"] = [new[int(i)] for i in sp["ids"]]
    for key in ("cls", "sep"):  # BertProcessing: ["[CLS]", 101]
        if isinstance(post.get(key), list):
            post[key][1] = new[int(post[key][1])]
    if spec.get("padding") and "pad_id" in spec["padding"]:
        spec["padding"]["pad_id"] = new[int(spec["padding"]["pad_id"])]
    out.mkdir(parents=True, exist_ok=True)
    (out / "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
    order = sorted(model["vocab"], key=model["vocab"].get)
    (out / "vocab.txt").write_text("\n".join(order) + "\n", encoding="utf-8")
    for name in _COPY:
        if (tok_dir / name).is_file():
            shutil.copyfile(tok_dir / name, out / name)
    if (tok_dir / "config.json").is_file():  # AutoTokenizer reads model_type from it
        cfg = json.loads((tok_dir / "config.json").read_text(encoding="utf-8"))
        cfg["vocab_size"] = len(keep)
        (out / "config.json").write_text(json.dumps(cfg, indent=1), encoding="utf-8")
    return new


def remap_table(new: dict[int, int], old_size: int, unk_new: int) -> np.ndarray:
    table = np.full(old_size, unk_new, np.int64)
    for o, n in new.items():
        table[o] = n
    return table


def slice_embedding(model, old_size: int, keep: np.ndarray) -> str:
    """Replace the word-embedding table (the nn.Embedding with `old_size` rows) by its `keep` rows."""
    import torch
    found = [(n, m) for n, m in model.named_modules()
             if isinstance(m, torch.nn.Embedding) and m.num_embeddings == old_size]
    if len(found) != 1:
        raise ConfigError(f"vocabulary pruning: expected one embedding table with {old_size} rows (the "
                          f"tokenizer's vocabulary), found {len(found)}")
    name, emb = found[0]
    idx = torch.as_tensor(keep)
    small = torch.nn.Embedding(len(keep), emb.embedding_dim, padding_idx=None)
    with torch.no_grad():
        small.weight.copy_(emb.weight[idx])
    parent, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, attr, small)
    cfg = getattr(getattr(model, "inner", None), "config", None)
    if cfg is not None and hasattr(cfg, "vocab_size"):
        cfg.vocab_size = len(keep)
    return name


def slice_positions(model, seq: int) -> dict:
    """Keep the first `seq` rows of the learned position table (BERT family: an nn.Embedding named
    *position_embeddings, with the position_ids / token_type_ids buffers beside it). Exact for every
    input the bundle takes: its tokenizer pads and truncates to `seq` tokens, so rows past it are never
    read. A MiniLM position table is 512 x 384, 0.19 MB in int8 and 0.79 MB in fp32."""
    import torch
    found = [(n, m) for n, m in model.named_modules()
             if n.endswith("position_embeddings") and isinstance(m, torch.nn.Embedding)]
    if len(found) != 1:
        raise ConfigError(f"vocabulary pruning: positions = true needs one learned position table "
                          f"(an nn.Embedding named *position_embeddings), found {len(found)}")
    name, emb = found[0]
    rows = emb.num_embeddings
    if seq >= rows:
        return {"table": name, "rows_before": rows, "rows": rows, "note": "already no longer than the sequence"}
    small = torch.nn.Embedding(seq, emb.embedding_dim)
    with torch.no_grad():
        small.weight.copy_(emb.weight[:seq])
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, small)
    for buf in ("position_ids", "token_type_ids"):  # HF BertEmbeddings: (1, max_position_embeddings)
        b = getattr(parent, buf, None)
        if isinstance(b, torch.Tensor) and b.ndim == 2 and b.shape[1] == rows:
            parent.register_buffer(buf, b[:, :seq].clone(), persistent=False)
    cfg = getattr(getattr(model, "inner", None), "config", None)
    if cfg is not None and hasattr(cfg, "max_position_embeddings"):
        cfg.max_position_embeddings = seq
    return {"table": name, "rows_before": rows, "rows": seq,
            "note": f"inputs longer than {seq} tokens are refused by the model; the bundle's tokenizer truncates at {seq}"}


def check(old_dir: Path, new_dir: Path, path: str, table: np.ndarray, seq: int) -> dict:
    """How the remapped tokenizer reads the sentences of `path` (the validation file), against the
    old tokenizer's ids remapped: identical, or changed (a word with a dropped piece became [UNK])."""
    texts = _texts(path)
    if texts is None:
        return {"checked": 0, "note": "token ids given (.npz): no text to re-tokenize"}
    old, new = _tokenizer(old_dir), _tokenizer(new_dir)
    for t in (old, new):
        t.enable_truncation(seq)
        t.no_padding()
    unk_old, unk_new = old.token_to_id("[UNK]"), new.token_to_id("[UNK]")
    same = tokens_old = tokens = new_unks = 0
    for a, b in zip(old.encode_batch(texts), new.encode_batch(texts)):
        mapped = table[np.asarray(a.ids, np.int64)]
        same += int(len(mapped) == len(b.ids) and np.array_equal(mapped, b.ids))
        tokens_old += len(a.ids)
        tokens += len(b.ids)
        # a changed sentence may differ by one rare word: the token share says how much text was lost
        new_unks += max(0, b.ids.count(unk_new) - a.ids.count(unk_old)) if unk_new is not None else 0
    n = len(texts)
    return {"checked": n, "same_ids": same, "share_changed": (n - same) / n if n else 0.0,
            "tokens_before": tokens_old, "tokens": tokens, "new_unk_tokens": new_unks,
            "share_tokens_unk": new_unks / tokens if tokens else 0.0, "file": str(path)}
