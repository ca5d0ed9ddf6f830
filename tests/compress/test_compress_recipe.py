"""Recipe loading and validation: every key typed and checked, errors name file, stage and key."""

from __future__ import annotations

import pytest

from ektest import REPO
from edgekit.compress import load_recipe, recipe_from_dict
from edgekit.errors import ConfigError

PRUNE = {"kind": "prune", "method": "structured", "ratio": 0.3}
DISTILL = {"kind": "distill", "student": "layers:0,2,4"}


def write(tmp_path, text: str):
    f = tmp_path / "r.toml"
    f.write_text(text)
    return f


def error(raw: dict) -> str:
    with pytest.raises(ConfigError) as e:
        recipe_from_dict(raw, "my.toml")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("my.toml"), msg
    return msg


def test_shipped_recipes_load():
    for f in sorted((REPO / "examples" / "recipes").glob("*.toml")):
        r = load_recipe(f)
        assert r.stages and r.path == str(f)
    digits = load_recipe(REPO / "examples" / "recipes" / "digits_prune50.toml")
    assert [(s.kind, s.method, s.ratio, s.round_to) for s in digits.stages] == [("prune", "structured", 0.5, 8)]
    minilm = load_recipe(REPO / "examples" / "recipes" / "minilm_distill_prune.toml")
    assert minilm.on_fail == "keep_last_good"
    assert [s.kind for s in minilm.stages] == ["distill", "prune"]
    assert minilm.stages[0].student == "layers:0,2,4"


def test_the_issue_example_and_defaults(tmp_path):
    r = load_recipe(write(tmp_path, """
[[stage]]
kind = "distill"
student = "layers:0,2,4"
epochs = 3
temperature = 4.0
alpha = 0.5
max_accuracy_drop = 0.03
[[stage]]
kind = "prune"
method = "structured"
ratio = 0.3
finetune_epochs = 1
"""))
    d, p = r.stages
    assert (d.index, d.epochs, d.temperature, d.alpha, d.max_accuracy_drop) == (1, 3, 4.0, 0.5, 0.03)
    assert (p.index, p.ratio, p.importance, p.round_to, p.structures) == (2, 0.3, "magnitude", 8, ("heads", "ffn"))
    assert r.on_fail == "stop"
    assert p.hyperparameters()["ratio"] == 0.3 and d.hyperparameters()["student"] == "layers:0,2,4"


def test_unknown_stage_kind():
    msg = error({"stage": [DISTILL, {"kind": "quantize"}]})
    assert "stage 2" in msg and "kind = 'quantize'" in msg and "distill, prune" in msg


def test_unknown_key_names_stage_and_key(tmp_path):
    f = write(tmp_path, '[[stage]]\nkind = "prune"\nmethod = "structured"\nratio = 0.3\nfinetune_epoch = 2\n')
    with pytest.raises(ConfigError) as e:
        load_recipe(f)
    msg = str(e.value)
    assert str(f) in msg and "stage 1" in msg and "'finetune_epoch'" in msg and "finetune_epochs" in msg
    # a distill-only key in a prune stage is unknown there too
    assert "'student'" in error({"stage": [dict(PRUNE, student="layers:0")]})
    assert "'colour'" in error({"colour": "red", "stage": [PRUNE]})


@pytest.mark.parametrize("ratio", [0, 0.0, 1, 1.0, 1.5, -0.2])
def test_ratio_outside_open_interval(ratio):
    msg = error({"stage": [dict(PRUNE, ratio=ratio)]})
    assert f"ratio = {ratio!r}" in msg and "between 0 and 1" in msg


@pytest.mark.parametrize("student", ["width:0", "width:1", "width:1.5", "width:x"])
def test_width_outside_open_interval(student):
    assert f"student = {student!r}" in error({"stage": [dict(DISTILL, student=student)]})


@pytest.mark.parametrize("student", ["layers:", "layers:a,b", "layers:2,1", "layers:1,1", "nonsense", "f.py:"])
def test_bad_student_specs(student):
    assert f"student = {student!r}" in error({"stage": [dict(DISTILL, student=student)]})


@pytest.mark.parametrize("key,value,needle", [
    ("ratio", "0.3", "has type str"),
    ("ratio", True, "not a boolean"),
    ("finetune_epochs", 1.5, "has type float"),
    ("finetune_epochs", -1, ">= 0"),
    ("batch_size", 0, ">= 1"),
    ("temperature", 0, "> 0"),
    ("alpha", 1.5, "between 0 and 1"),
    ("importance", "random", "expected one of magnitude, taylor"),
    ("method", "lottery", "expected one of structured, magnitude"),
    ("structures", ["heads", "mlp"], "structures entry = 'mlp'"),
    ("max_accuracy_drop", -0.1, ">= 0"),
])
def test_typed_and_checked(key, value, needle):
    msg = error({"stage": [dict(PRUNE, **{key: value})]})
    assert "stage 1" in msg and key in msg and needle in msg


def test_top_level_and_missing():
    assert "on_fail = 'continue'" in error({"on_fail": "continue", "stage": [PRUNE]})
    assert "no stages" in error({})
    assert "missing required key 'ratio'" in error({"stage": [{"kind": "prune", "method": "structured"}]})
    assert "missing required key 'kind'" in error({"stage": [{"method": "structured"}]})
    assert "importance applies to method = 'structured'" in error(
        {"stage": [dict(PRUNE, method="magnitude", importance="taylor")]})


def test_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="recipe file not found"):
        load_recipe(tmp_path / "absent.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_recipe(write(tmp_path, "[[stage]\n"))
