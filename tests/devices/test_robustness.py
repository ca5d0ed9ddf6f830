"""The harness's robustness suite (edgekit/harness/_ek_robust.py) on real bundles: odd inputs never
take the harness down, a segfaulting case is reported and the rest still run, agreement with the
dev machine's fp32 outputs and accuracy under input noise land in the report."""

from __future__ import annotations

import sys

import numpy as np

from edgekit.bench import bench

QUICK = {"runs": 5, "warmup": 1, "min_seconds": 0.0, "warmup_seconds": 0.0, "trials": 1}


def test_robustness_section_on_int8_and_fp32(digits_bundles, tmp_path):
    for precision in ("int8", "fp32"):
        rep = bench(digits_bundles[precision].path, tmp_path / f"{precision}.json", **QUICK)
        rob = rep["robustness"]
        cases = {c["name"]: c for c in rob["cases"]}
        assert list(cases) == ["zeros", "large", "float_max", "nan", "inf"]  # an image model: no text cases
        assert rob["crashed"] == [] and rob["passed"] is True, rob
        for name in ("zeros", "large"):
            assert cases[name]["status"] == "ok" and cases[name]["finite"] is True
        for c in cases.values():
            assert c["status"] in ("ok", "nonfinite", "error")
        agree = rob["reference_agreement"]
        # convert stores the fp32 PyTorch outputs with the validation set: agreement over all of it
        assert agree["on"] == "validation" and agree["n"] == rep["accuracy"]["n"]
        assert agree["top1_agreement"] >= 0.95
        noise = rob["noise"]
        assert noise["skipped"] is False and noise["n"] == rep["accuracy"]["n"] and noise["inputs"] == ["x"]
        assert abs(noise["clean_accuracy"] - rep["accuracy"]["value"]) < 1e-12
        assert [lv["sigma_rel"] for lv in noise["levels"]] == [0.01, 0.05]
        for lv in noise["levels"]:
            assert 0.0 <= lv["agreement_with_clean"] <= 1.0 and lv["accuracy"] > 0.8  # small noise, small effect
    # fp32 carries NaN through a float convolution: reported, not a failure of the suite
    assert cases["nan"]["status"] == "nonfinite" and cases["nan"]["finite"] is False


def test_a_segfault_in_one_case_is_reported_and_the_others_still_run(digits_bundles, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEKIT_HARNESS_FAULT", "robust:large")
    rep = bench(digits_bundles["int8"].path, tmp_path / "r.json", **QUICK)
    rob = rep["robustness"]
    cases = {c["name"]: c for c in rob["cases"]}
    assert rob["crashed"] == ["large"] and cases["large"]["status"] == "crashed"
    assert "SIGSEGV" in cases["large"]["error"]
    assert {"zeros", "float_max", "nan", "inf"} <= set(cases) and rob["passed"] is False
    assert rob["noise"]["skipped"] is False  # the data checks ran in the fresh child
    assert rep["status"] == "ok" and rep["self_check"]["passed"]  # the harness itself carried on


def test_text_cases_for_token_inputs():
    sys.path.insert(0, str(__import__("edgekit").__path__[0] + "/harness"))
    try:
        import _ek_robust
    finally:
        sys.path.pop(0)
    ids = np.array([[101, 7, 8, 9, 102, 0, 0, 0]], dtype=np.int64)
    mask = np.array([[1, 1, 1, 1, 1, 0, 0, 0]], dtype=np.int64)
    cases = {n: f for n, _, f in _ek_robust.cases({}, {"input_ids": ids, "attention_mask": mask,
                                                      "token_type_ids": np.zeros_like(ids)})}
    assert set(cases) == {"zeros", "text_empty", "text_max_length"}
    assert cases["text_empty"]["input_ids"].tolist() == [[101, 102, 0, 0, 0, 0, 0, 0]]
    assert cases["text_empty"]["attention_mask"].tolist() == [[1, 1, 0, 0, 0, 0, 0, 0]]
    full = cases["text_max_length"]
    assert full["input_ids"][0, 0] == 101 and full["input_ids"][0, -1] == 102
    assert set(full["input_ids"][0, 1:-1].tolist()) <= {7, 8, 9} and full["attention_mask"].all()
