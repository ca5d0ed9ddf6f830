"""Accuracy-aware quantization and conversion-time budget checks, on the real digits CNN."""

import pytest

from edgekit.bundle import read_manifest
from edgekit.cli import main
from edgekit.convert import convert
from edgekit.errors import BudgetError

from ektest import REPO


def _profile(tmp_path, name, quant, budget):
    text = (REPO / "targets" / "x86-avx2.toml").read_text()
    head, _, _ = text.partition("[quantization]")
    f = tmp_path / f"{name}.toml"
    f.write_text(head.replace('name = "x86-avx2"', f'name = "{name}"') + quant + "\n[budget]\n" + budget)
    return f


def test_int8_over_budget_backs_off_layer_by_layer(digits_example, tmp_path):
    # Full 8-bit weights on this no-VNNI CPU saturate (FIELD_NOTES trap 1) and cost accuracy;
    # a zero-drop budget forces the back-off to keep layers in float (or fall back to fp32).
    prof = _profile(tmp_path, "strict", '[quantization]\nreduce_range = false\n', "max_accuracy_drop = 0.0\n")
    r = convert(str(digits_example["model"]), [str(prof)], str(digits_example["calibration"]),
                str(digits_example["validation"]), tmp_path / "out", progress=False)[0]
    control = read_manifest(r.path)["conversion"]["accuracy_control"]
    first = control["attempts"][0]
    assert r.accuracy_drop <= 0.0 + 1e-12
    if first["drop"] > 0:  # saturation cost accuracy here: the back-off must have run
        assert len(control["attempts"]) >= 2
        assert control["result"] != "within budget"
        tried = control["attempts"][1]["layers_in_float"]
        assert tried and all(isinstance(n, str) for n in tried)
    else:
        assert control["result"] == "within budget"


def test_accuracy_aware_can_be_turned_off(digits_example, tmp_path):
    prof = _profile(tmp_path, "plain", '[quantization]\nreduce_range = false\naccuracy_aware = false\n',
                    "max_accuracy_drop = 0.0\n")
    r = convert(str(digits_example["model"]), [str(prof)], str(digits_example["calibration"]),
                str(digits_example["validation"]), tmp_path / "out", progress=False)[0]
    control = read_manifest(r.path)["conversion"]["accuracy_control"]
    # no layer-wise search; either within budget, or the float fallback, said so
    assert all(a["layers_in_float"] in ([], ["*"]) for a in control["attempts"])


def test_too_large_for_the_budget_is_refused_before_export(digits_example, tmp_path, capsys):
    prof = _profile(tmp_path, "tiny-mcu", "", "model_size_mb = 0.01\n")
    code = main(["convert", str(digits_example["model"]), "--target", str(prof), "--precision", "fp32",
                 "--calibration", str(digits_example["calibration"]), "--validation",
                 str(digits_example["validation"]), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "model_size 0.1 MB (estimated: 0.0M params at fp32) > budget 0.01 MB for tiny-mcu: try int8 or pruning" in err
    assert not (tmp_path / "out").exists()


def test_memory_estimate_against_device_memory(digits_example, tmp_path):
    prof = _profile(tmp_path, "small-ram", "", "peak_memory_mb = 0.01\n")
    with pytest.raises(BudgetError, match="memory .* MB \\(estimated: weights \\+ batch-1 activations\\) > budget 0.01 MB"):
        convert(str(digits_example["model"]), [str(prof)], str(digits_example["calibration"]),
                str(digits_example["validation"]), tmp_path / "out", progress=False)


def test_ignore_budgets_converts_a_baseline_and_says_so(digits_example, tmp_path):
    prof = _profile(tmp_path, "tiny-mcu", "", "model_size_mb = 0.01\n")
    r = convert(str(digits_example["model"]), [str(prof)], str(digits_example["calibration"]),
                str(digits_example["validation"]), tmp_path / "out", precisions=["fp32"],
                ignore_budgets=True, progress=False)[0]
    assert read_manifest(r.path)["conversion"]["budgets_checked_at_conversion"] is False


def test_one_target_over_budget_does_not_cost_the_others(digits_example, tmp_path):
    from edgekit.convert import ConversionFailed
    prof = _profile(tmp_path, "tiny-mcu", "", "model_size_mb = 0.01\n")
    with pytest.raises(ConversionFailed, match="1 of 2 bundles failed .*tiny-mcu: model_size") as e:
        convert(str(digits_example["model"]), [str(prof), "x86-avx2"], str(digits_example["calibration"]),
                str(digits_example["validation"]), tmp_path / "out", progress=False, ignore_budgets=False)
    assert [r.name for r in e.value.results] == ["x86-avx2"]
    assert (tmp_path / "out" / "x86-avx2" / "manifest.json").is_file()
    assert not (tmp_path / "out" / "tiny-mcu").exists()


def test_auto_calibration_measures_each_method_on_the_tuning_split(digits_example, tmp_path):
    prof = _profile(tmp_path, "auto", '[quantization]\ncalibrate_method = "auto"\n', "max_accuracy_drop = 0.05\n")
    r = convert(str(digits_example["model"]), [str(prof)], str(digits_example["calibration"]),
                str(digits_example["validation"]), tmp_path / "out", progress=False)[0]
    m = read_manifest(r.path)
    choice = m["conversion"]["calibration_choice"]
    assert [t["calibrate_method"] for t in choice["tried"]] == ["minmax", "percentile", "entropy"]
    assert all(t["output_error"] > 0 for t in choice["tried"])  # int8 outputs differ from the source's
    best = max(choice["tried"], key=lambda t: (t["score"], -t["output_error"]))  # ties: the outputs' error
    assert choice["chosen"] == best["calibrate_method"] and choice["judged_on"] == "tuning"
    assert m["target"]["quantization"]["calibrate_method"] == best["calibrate_method"]  # resolved, recorded
    assert m["conversion"]["accuracy_control"]["attempts"][0]["accuracy"] == best["score"]
