"""Compression stages on a tiny random BERT loaded from a real Hugging Face directory: layer-subset
students, head and FFN pruning (checked exactly against head masking), hidden-state loss, export."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from edgekit.compress import recipe_from_dict, run_recipe
from edgekit.errors import ConfigError, DataError


def run(handle, train, val, *stages, **top):
    return run_recipe(handle, recipe_from_dict({**top, "stage": list(stages)}, "mem.toml"), train, val,
                      progress=False, latency_runs=3)


def args_of(handle, data, n=4):
    return tuple(torch.from_numpy(data.inputs[k][:n]) for k in handle.input_names)


def test_layer_subset_student_copies_the_chosen_layers(tiny_bert):
    handle, train, val = tiny_bert
    teacher = handle.module.inner
    h2, (src, st) = run(handle, train, val, {"kind": "distill", "student": "layers:0,2", "epochs": 0})
    student = h2.module.inner
    assert st["structure"] == {"student": "layer subset", "layers": [0, 2]}
    assert len(student.bert.encoder.layer) == 2 and student.config.num_hidden_layers == 2
    for k, i in enumerate([0, 2]):
        for a, b in zip(student.bert.encoder.layer[k].state_dict().values(),
                        teacher.bert.encoder.layer[i].state_dict().values()):
            assert torch.equal(a, b)
    for part in ("embeddings", "pooler"):
        for a, b in zip(getattr(student.bert, part).state_dict().values(), getattr(teacher.bert, part).state_dict().values()):
            assert torch.equal(a, b)
    assert torch.equal(student.classifier.weight, teacher.classifier.weight)
    assert len(teacher.bert.encoder.layer) == 4          # the teacher is untouched
    assert st["params"] < src["params"] and st["macs"] < 0.6 * src["macs"]
    assert h2.metadata["tokenizer_dir"] == str(handle.hf_dir) and h2.hf_dir is None
    assert h2.module(*args_of(h2, val)).shape == (4, 3)


def test_layer_index_the_teacher_does_not_have(tiny_bert):
    handle, train, val = tiny_bert
    with pytest.raises(ConfigError) as e:
        run(handle, train, val, {"kind": "distill", "student": "layers:0,2,4"})
    msg = str(e.value)
    assert msg.startswith("mem.toml: stage 1: student = 'layers:0,2,4'")
    assert "no layer 4" in msg and "4 layers, indices 0-3" in msg


def test_distillation_with_hidden_state_loss_trains(tiny_bert):
    handle, train, val = tiny_bert
    _, (_, st) = run(handle, train, val, {"kind": "distill", "student": "layers:1,3", "epochs": 2,
                                          "hidden_loss_weight": 1.0, "learning_rate": 1e-3, "patience": 5})
    t = st["training"]
    assert t["hidden_pairs"] == [(0, 0), (1, 2), (2, 4)]
    assert t["epochs_run"] == 2 and len(t["validation_accuracy_by_epoch"]) == 3


def test_head_pruning_equals_masking_those_heads(tiny_bert):
    """Pruning heads (FFN left whole, no fine-tuning) must compute exactly what the unpruned model
    computes with the removed heads masked out."""
    handle, train, val = tiny_bert
    teacher = handle.module.inner
    h2, (_, pr) = run(handle, train, val, {"kind": "prune", "method": "structured", "ratio": 0.5,
                                           "structures": ["heads"], "finetune_epochs": 0})
    assert pr["structure"]["heads_per_layer"] == [2, 2, 2, 2]
    assert pr["structure"]["ffn_per_layer"] == [64, 64, 64, 64]
    mask = torch.zeros(4, 4)
    for li, (a, b) in enumerate(zip(teacher.bert.encoder.layer, h2.module.inner.bert.encoder.layer)):
        att = b.attention.self
        assert (att.num_attention_heads, att.attention_head_size, att.all_head_size) == (2, 8, 16)
        q0, q1 = a.attention.self.query.weight, att.query.weight
        for row in q1:
            mask[li, next(i for i in range(32) if torch.equal(q0[i], row)) // 8] = 1
    assert mask.sum() == 8
    x = args_of(handle, val, 8)
    with torch.inference_mode():
        ref = teacher(**dict(zip(handle.input_names, x)), head_mask=mask).logits
        got = h2.module(*x)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_heads_and_ffn_pruned_then_finetuned_and_exported(tiny_bert, tmp_path):
    from edgekit.backends.onnxruntime import export_onnx
    from edgekit.targets import load_target
    handle, train, val = tiny_bert
    h2, rows = run(handle, train, val,
                   {"kind": "distill", "student": "layers:0,2", "epochs": 1},
                   {"kind": "prune", "method": "structured", "ratio": 0.5, "finetune_epochs": 1,
                    "hidden_loss_weight": 0.5})
    pr = rows[2]["structure"]
    assert pr["heads_per_layer"] == [2, 2] and pr["ffn_per_layer"] == [32, 32]
    assert rows[2]["macs"] < rows[1]["macs"] < rows[0]["macs"]
    assert rows[2]["training"]["hidden_pairs"] == [(0, 0), (1, 1), (2, 2)]
    json.dumps(rows)  # the manifest stores them
    ex = {k: val.inputs[k][:4] for k in h2.input_names}
    path, _ = export_onnx(h2, load_target("x86-avx2"), tmp_path, ex)
    import onnxruntime as ort
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, ex)[0]
    with torch.inference_mode():
        ref = h2.module(*args_of(h2, val)).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)


def test_ratio_that_removes_every_head(tiny_bert):
    handle, train, val = tiny_bert
    with pytest.raises(ConfigError, match="would remove all 4 attention heads"):
        run(handle, train, val, {"kind": "prune", "method": "structured", "ratio": 0.8})


def test_training_data_without_attention_mask(tiny_bert):
    handle, train, val = tiny_bert
    bad = dataclasses.replace(train, inputs={k: v for k, v in train.inputs.items() if k != "attention_mask"})
    with pytest.raises(DataError) as e:
        run(handle, bad, val, {"kind": "distill", "student": "layers:0,2"})
    assert "no input 'attention_mask' that the model needs" in str(e.value)
    assert str(e.value).startswith(bad.path)


def test_width_student_is_for_cnns(tiny_bert):
    handle, train, val = tiny_bert
    with pytest.raises(ConfigError, match="width students are for CNNs"):
        run(handle, train, val, {"kind": "distill", "student": "width:0.5"})


def test_fake_quant_linear_matches_onnx_runtime_dynamic_int8(tmp_path):
    """distill.fake_quant computes an nn.Linear as quantize_dynamic's MatMulInteger model does."""
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from edgekit.compress.distill import fake_quant
    torch.manual_seed(0)
    lin = torch.nn.Linear(32, 16).eval()
    # Inputs whose uint8 codes stay <= 2 but one (255): without VNNI, ONNX Runtime's u8s8 kernel sums
    # pairs of products in 16 bits (VPMADDUBSW) and saturates above 32767; 255 * 127 + 2 * 127 fits,
    # so the kernel's result is the exact integer one on every x86 host.
    x = torch.rand(1, 8, 32) * 0.008
    x[0, 3, 5] = 1.0
    torch.onnx.export(lin, (x,), str(tmp_path / "l.onnx"), input_names=["x"], dynamo=False)
    quantize_dynamic(str(tmp_path / "l.onnx"), str(tmp_path / "q.onnx"), weight_type=QuantType.QInt8,
                     per_channel=False, reduce_range=False)
    want = ort.InferenceSession(str(tmp_path / "q.onnx"), providers=["CPUExecutionProvider"]).run(
        None, {"x": x.numpy()})[0]
    with torch.no_grad():
        fp = lin(x).numpy()
        with fake_quant(lin):
            got = lin(x).numpy()
        assert np.array_equal(lin(x).numpy(), fp)  # the module is itself again afterwards
    # the int8 kernel's rounding, not float's: fake quant within float32 rounding of the kernel
    assert np.abs(got - want).max() < 1e-3 * np.abs(fp - want).max()
    assert np.abs(got - want).max() < 1e-5


def test_qat_epochs_follow_the_float_ones(tiny_bert):
    handle, train, val = tiny_bert
    _, (_, st) = run(handle, train, val, {"kind": "distill", "student": "layers:1,3", "epochs": 1,
                                          "qat_epochs": 2, "learning_rate": 1e-3, "patience": 5})
    q = st["training"]["qat"]
    assert q["epochs"] == 2 and len(q["fake_quantized_validation_accuracy_by_epoch"]) == 3
    assert 0 <= q["best_epoch"] <= 2 and "MatMulInteger" in q["scheme"]
    assert st["training"]["epochs_run"] == 1


def test_attention_distillation_trains_and_matches_heads_or_their_mean(tiny_bert):
    import torch

    from edgekit.compress.distill import attention_kl
    t = torch.softmax(torch.randn(2, 4, 5, 5), -1)
    assert float(attention_kl([t], [t], [(0, 0), (1, 1)], None)) < 1e-6  # identical maps: no loss
    s3 = torch.softmax(torch.randn(2, 3, 5, 5), -1)  # a pruned student: 3 heads against 4
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    assert float(attention_kl([s3], [t], [(0, 0), (1, 1)], mask)) > 0
    handle, train, val = tiny_bert
    _, (_, st) = run(handle, train, val, {"kind": "distill", "student": "layers:1,3", "epochs": 1,
                                          "attention_loss_weight": 1.0, "learning_rate": 1e-3})
    assert st["training"]["epochs_run"] == 1 and st["training"]["hidden_pairs"] == [(0, 0), (1, 2), (2, 4)]
