"""Compression stages on the digits CNN (edgekit.demo): structured and magnitude pruning, width and
user-architecture students, budgets, bad inputs, a torch.export (.pt2) source."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from edgekit.compress import recipe_from_dict, render_stage_table, run_recipe
from edgekit.errors import BudgetError, ConfigError, DataError

ROW_KEYS = {"stage", "name", "kind", "status", "params", "macs", "size_mb", "compressed_mb", "latency_ms",
            "speedup", "accuracy", "accuracy_drop", "per_class_accuracy", "per_class_drop", "max_class_drop",
            "max_class_drop_class", "seconds"}


def recipe(*stages, **top):
    return recipe_from_dict({**top, "stage": list(stages)}, "mem.toml")


def run(handle, train, val, *stages, **top):
    return run_recipe(handle, recipe(*stages, **top), train, val, progress=False, latency_runs=5)


def test_structured_prune_halves_channels_and_records_everything(digits, digits_handle):
    _, acc, train, val = digits
    before = [p.clone() for p in digits_handle.module.parameters()]
    h2, rows = run(digits_handle, train, val, {"kind": "prune", "method": "structured", "ratio": 0.5,
                                               "finetune_epochs": 2, "batch_size": 64})
    assert [r["stage"] for r in rows] == [0, 1]
    for r in rows:
        assert ROW_KEYS <= set(r)
    src, pr = rows
    assert src["accuracy"] == pytest.approx(acc)
    widths = pr["structure"]["widths"]
    assert widths == {"features.0": [16, 8], "features.2": [32, 16], "head.1": [64, 32]}
    assert all(new % 8 == 0 for _, new in widths.values())
    assert pr["params"] < src["params"] / 3 and pr["macs"] < src["macs"] / 3
    assert pr["size_mb"] < src["size_mb"] / 3
    assert pr["hyperparameters"]["ratio"] == 0.5 and pr["hyperparameters"]["learning_rate"] == 1e-3
    assert pr["training"]["epochs_run"] <= 2 and len(pr["training"]["validation_accuracy_by_epoch"]) >= 2
    assert pr["accuracy_drop"] == pytest.approx(src["accuracy"] - pr["accuracy"], abs=1e-6)
    assert pr["max_class_drop"] >= pr["accuracy_drop"] - 1e-9  # the worst class is at least the average
    # the classifier head is never pruned; the source model is untouched
    assert h2.module.head[3].out_features == 10
    assert all(torch.equal(a, b) for a, b in zip(before, digits_handle.module.parameters()))
    assert h2.metadata["compressed"]["stages"] == ["prune structured 0.5"]
    out = h2.module(torch.from_numpy(val.inputs["x"][:3]))
    assert out.shape == (3, 10)
    table = render_stage_table(rows)
    assert table.row_count == 2
    assert json.loads(json.dumps(rows)) == json.loads(json.dumps(rows, default=repr))  # manifest-ready


def test_same_recipe_same_result(digits, digits_handle):
    _, _, train, val = digits
    stage = {"kind": "prune", "method": "structured", "ratio": 0.5, "finetune_epochs": 1,
             "importance": "taylor", "seed": 3}
    a, ra = run(digits_handle, train, val, stage)
    b, rb = run(digits_handle, train, val, stage)
    assert a.sha256 == b.sha256 and ra[1]["accuracy"] == rb[1]["accuracy"]
    assert ra[1]["structure"]["importance"] == "taylor"


def test_magnitude_is_size_only(digits, digits_handle):
    _, _, train, val = digits
    h2, (src, mag) = run(digits_handle, train, val, {"kind": "prune", "method": "magnitude", "ratio": 0.8,
                                                     "finetune_epochs": 1})
    assert mag["params"] == src["params"] and mag["macs"] == src["macs"]
    assert mag["size_mb"] == pytest.approx(src["size_mb"], rel=0.02)     # same tensors, same file
    assert mag["compressed_mb"] < 0.6 * src["compressed_mb"]              # zeros compress
    assert 0.7 < mag["sparsity"] < 0.8                                   # the head is left dense
    assert "size only" in mag["note"] and "not" in mag["structure"]["note"]
    assert not any(n.endswith("_orig") for n in h2.module.state_dict())  # pruning made permanent
    w = h2.module.features[0].weight
    assert float((w == 0).float().mean()) == pytest.approx(0.8, abs=0.02)


def test_width_student(digits, digits_handle):
    _, _, train, val = digits
    h2, (src, st) = run(digits_handle, train, val, {"kind": "distill", "student": "width:0.5", "epochs": 1})
    assert st["structure"]["width"] == 0.5 and st["structure"]["widths"]["features.0"] == [16, 8]
    assert st["params"] < src["params"] / 3


def test_user_student_and_one_that_cannot_take_the_inputs(digits, digits_handle, tmp_path):
    _, _, train, val = digits
    (tmp_path / "students.py").write_text(
        "import torch\n"
        "def small():\n"
        "    torch.manual_seed(0)\n"
        "    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))\n"
        "def rgb():\n"
        "    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.Linear(144, 10))\n"
        "def five():\n"
        "    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 5))\n")
    rec = tmp_path / "r.toml"
    rec.write_text('[[stage]]\nkind = "distill"\nstudent = "students.py:small"\nepochs = 3\nlearning_rate = 0.005\n')
    h2, rows = run_recipe(digits_handle, rec, train, val, progress=False, latency_runs=5)  # path beside the recipe
    assert rows[1]["structure"]["student"] == "user architecture"
    assert rows[1]["accuracy"] > 0.5
    rec.write_text('[[stage]]\nkind = "distill"\nstudent = "students.py:rgb"\n')
    with pytest.raises(ConfigError) as e:
        run_recipe(digits_handle, rec, train, val, progress=False)
    msg = str(e.value)
    assert "stage 1" in msg and "'students.py:rgb' cannot take the teacher's inputs (2x1x8x8 float32)" in msg
    rec.write_text('[[stage]]\nkind = "distill"\nstudent = "students.py:five"\n')
    with pytest.raises(ConfigError, match="returns shape 2x5 .* the teacher returns 2x10"):
        run_recipe(digits_handle, rec, train, val, progress=False)
    rec.write_text('[[stage]]\nkind = "distill"\nstudent = "nowhere.py:small"\n')
    with pytest.raises(ConfigError, match="file 'nowhere.py' not found"):
        run_recipe(digits_handle, rec, train, val, progress=False)


def test_layers_student_needs_a_transformer(digits, digits_handle):
    _, _, train, val = digits
    with pytest.raises(ConfigError, match="needs a BERT-family Hugging Face model"):
        run(digits_handle, train, val, {"kind": "distill", "student": "layers:0"})


def test_training_data_without_the_model_input(digits, digits_handle):
    _, _, train, val = digits
    bad = dataclasses.replace(train, inputs={"image": train.inputs["x"]})
    with pytest.raises(DataError) as e:
        run(digits_handle, bad, val, {"kind": "prune", "method": "structured", "ratio": 0.5})
    assert str(e.value).startswith("train.npz: ") and "no input 'x'" in str(e.value)
    wrong = dataclasses.replace(train, inputs={"x": train.inputs["x"][:, :, :4]})
    with pytest.raises(DataError, match="cannot take the training inputs"):
        run(digits_handle, wrong, val, {"kind": "prune", "method": "structured", "ratio": 0.5})
    unlabelled_val = dataclasses.replace(val, labels=None)
    with pytest.raises(DataError, match="validation set has no labels"):
        run(digits_handle, train, unlabelled_val, {"kind": "prune", "method": "structured", "ratio": 0.5})


def test_unlabelled_training_data_is_pure_distillation(digits, digits_handle):
    _, _, train, val = digits
    unlabelled = dataclasses.replace(train, labels=None)
    stage = {"kind": "prune", "method": "structured", "ratio": 0.5, "finetune_epochs": 1, "alpha": 0.5}
    _, rows = run_recipe(digits_handle, recipe(stage), unlabelled, val, progress=True, latency_runs=5)
    assert rows[1]["training"]["labels"] is False and rows[1]["training"]["epochs_run"] == 1


def test_partly_labelled_training_data_mixes_both_losses(digits, digits_handle):
    """Samples labelled -1 (jsonl lines without a label) learn from the teacher only."""
    import torch

    from edgekit.compress.distill import kd_loss
    s, t = torch.randn(4, 10), torch.randn(4, 10)
    lab = torch.tensor([3, -1, 7, -1])
    want = 0.5 * kd_loss(s, t, None, 4.0, 0.5) + 0.5 * torch.nn.functional.cross_entropy(s[[0, 2]], lab[[0, 2]])
    torch.testing.assert_close(kd_loss(s, t, lab, 4.0, 0.5), want)
    torch.testing.assert_close(kd_loss(s, t, torch.full((4,), -1), 4.0, 0.5), kd_loss(s, t, None, 4.0, 0.5))
    _, _, train, val = digits
    labels = train.labels.copy()
    labels[1::2] = -1
    half = dataclasses.replace(train, labels=labels)
    stage = {"kind": "prune", "method": "structured", "ratio": 0.5, "finetune_epochs": 1, "importance": "taylor"}
    _, rows = run_recipe(digits_handle, recipe(stage), half, val, progress=False, latency_runs=5)
    t = rows[1]["training"]
    assert t["labels"] is True and t["labelled_samples"] == int((labels >= 0).sum()) < len(labels)
    assert t["epochs_run"] == 1 and np.isfinite(rows[1]["accuracy"])


def test_budget_stops_or_keeps_last_good(digits, digits_handle):
    _, _, train, val = digits
    harsh = {"kind": "prune", "method": "structured", "ratio": 0.9, "finetune_epochs": 0,
             "max_accuracy_drop": 0.0}
    mild = {"kind": "prune", "method": "magnitude", "ratio": 0.1, "finetune_epochs": 0}
    with pytest.raises(BudgetError) as e:
        run(digits_handle, train, val, mild, harsh, mild)
    msg = str(e.value)
    assert "mem.toml: stage 2 (prune structured 0.9)" in msg and "max_accuracy_drop = 0" in msg
    assert "keep_last_good" in msg and "\n" not in msg
    assert [r["status"] for r in e.value.stages] == ["source", "kept", "over budget"]
    h2, rows = run(digits_handle, train, val, mild, harsh, mild, on_fail="keep_last_good")
    assert [r["status"] for r in rows] == ["source", "kept", "over budget: discarded", "skipped"]
    assert h2.metadata["compressed"]["stages"] == ["prune magnitude 0.1"]
    assert render_stage_table(rows).row_count == 4
    # nothing kept: the source handle itself comes back
    h3, rows = run(digits_handle, train, val, harsh, on_fail="keep_last_good")
    assert h3 is digits_handle
    per_class = {"kind": "prune", "method": "structured", "ratio": 0.9, "finetune_epochs": 0,
                 "max_class_accuracy_drop": 0.0}
    with pytest.raises(BudgetError, match=r"class '\d' accuracy drops .* max_class_accuracy_drop = 0"):
        run(digits_handle, train, val, per_class)


@pytest.mark.slow
def test_pt2_source_is_lifted_pruned_and_exports(digits, tmp_path):
    """A torch.export program has no nn.Conv2d modules; they are rebuilt so torch-pruning can work."""
    from edgekit.backends.onnxruntime import export_onnx
    from edgekit.source import load
    from edgekit.targets import load_target
    model, _, train, val = digits
    ep = torch.export.export(model, (torch.from_numpy(train.inputs["x"][:2]),),
                             dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(ep, str(tmp_path / "m.pt2"))
    handle = load(str(tmp_path / "m.pt2"))
    h2, rows = run(handle, train, val, {"kind": "prune", "method": "structured", "ratio": 0.5, "finetune_epochs": 1})
    assert rows[0]["macs"] == 337536                     # counted on the lifted graph too
    assert rows[1]["structure"]["widths"]["features.0"] == [16, 8]
    x = val.inputs["x"][:4]
    onnx_path, _ = export_onnx(h2, load_target("x86-avx2"), tmp_path, {"x": x})
    import onnxruntime as ort
    got = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    with torch.inference_mode():
        ref = h2.module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)
