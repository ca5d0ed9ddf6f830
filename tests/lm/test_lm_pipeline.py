"""Causal LMs end to end on tiny models: convert (ONNX Runtime int4, OpenVINO stateful int4), the
device harness (generation protocol), the report and the gate, the generation API, and bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ektest import assert_one_line_error, run_cli
from lmtest import CALIB, FAST, VAL, profile, tiny_lm

from edgekit.convert import convert
from edgekit.gate import gate
from edgekit.report.load import load_report


@pytest.fixture(scope="module")
def llama(tmp_path_factory) -> Path:
    return tiny_lm(tmp_path_factory.mktemp("tiny-llama"), "llama")


@pytest.fixture(scope="module")
def ort_bundle(llama, tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("ort")
    (r,) = convert(str(llama), [str(profile(d / "tiny-gen.toml"))], str(CALIB), str(VAL), d / "out",
                   license="Apache-2.0", provenance="tests", progress=False)
    assert r.precision == "int4" and r.metric == "token_agreement"
    return r.path


def _harness(bundle: Path, *extra: str) -> dict:
    p = subprocess.run([sys.executable, str(bundle / "harness" / "run.py"), "--quiet", *FAST, *extra],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    return load_report(bundle / "report.json")


def _harness_module(bundle: Path, name: str):
    d = str(bundle / "harness")
    if d not in sys.path:
        sys.path.insert(0, d)
    import importlib
    return importlib.import_module(name)


def _open_lm(bundle: Path):
    """The bundle's generation module and its LanguageModel, loaded as the device loads it."""
    G = _harness_module(bundle, "_ek_generate")
    manifest, _ = _harness_module(bundle, "_ek_bundle").load_manifest(bundle)
    lm = G.LanguageModel(bundle, manifest, 1)
    lm.import_runtime()
    lm.load()
    return G, lm


def test_ort_bundle_is_int4_with_kv_cache_and_tokenizer(ort_bundle):
    m = json.loads((ort_bundle / "manifest.json").read_text())
    assert m["model"]["task"] == "text-generation" and m["model"]["runtime"] == "onnxruntime"
    gen = m["generation"]
    assert gen["kv"] == "explicit" and len(gen["past"]) == 2 * 2  # 2 layers x (key, value)
    assert gen["context_length"] == 256 and gen["kv_bytes_per_token"] == 2 * 2 * 2 * 16 * 4
    w = m["conversion"]["weights"]
    assert w["weights"] == "int4" and w["matmul_nbits"] >= 2 * 7 and w["gather_block_quantized"] == 1
    assert w["lm_head"] == "int8" and w["embeddings"] == "int4" and w["method"] == "rtn"
    for f in ("tokenizer.json", "prompts.json", "lm_validation.npz", "harness/_ek_generate.py"):
        assert f in m["files"], f
    q = m["conversion"]["quality"]
    assert q["tokens"] == q["windows"] * (q["window_tokens"] - 1) and 0.5 < q["token_agreement"] <= 1.0
    assert m["source"]["kind"] == "hf-causal-lm" and m["source"]["family"] == "Llama"
    assert m["provenance"]["license"] == "Apache-2.0"
    prompts = json.loads((ort_bundle / "prompts.json").read_text())
    assert len(prompts) == 4 and all(len(p["greedy"]) == 16 and p["ids"][0] == 1 for p in prompts)
    assert m["runtime_settings"]["cpu_mem_arena"] is False
    speed = m["generation"]["dev_speed"]
    assert speed["artifact_tokens_per_s"] > 0 and speed["fp32_tokens_per_s"] > 0


def test_harness_measures_generation_and_the_gate_reads_it(ort_bundle):
    rep = _harness(ort_bundle)
    assert rep["bundle"]["task"] == "text-generation"
    assert rep["self_check"]["passed"] and rep["self_check"]["tokenizer_match"]
    g = rep["generation"]
    assert g["prompt_tokens"] == 32 and g["new_tokens"] == 8 and g["runs"] == 2
    assert 0 < g["ttft_ms"]["p50"] <= g["ttft_ms"]["p95"]
    assert g["decode_tokens_per_s"]["p50"] > 0 and g["prefill_tokens_per_s"]["p50"] > 0
    assert g["full_context"]["tokens"] == 256 and g["full_context"]["peak_rss_mb"] > 0
    q = g["quality"]
    m = json.loads((ort_bundle / "manifest.json").read_text())
    # the device computes the dev machine's figures (same artifact, same windows, same code)
    assert q["perplexity"] == pytest.approx(m["conversion"]["quality"]["perplexity"], rel=1e-3)
    assert q["token_agreement"] == pytest.approx(m["conversion"]["quality"]["token_agreement"], abs=0.01)
    assert rep["latency"]["n"] == 2 * 7  # per-token decode latency: 7 steps after the first token
    res = gate([ort_bundle / "report.json"])
    budgets = {c.budget: c.status for c in res.checks}
    assert budgets["context_length"] == "pass" and budgets["peak_memory_mb"] == "pass"
    assert "latency_p95_ms" not in budgets and res.verdict == "pass"
    assert rep["target"]["budget"]["latency_p95_ms"] is None  # not a generator's budget


def test_gate_judges_generative_budgets(ort_bundle, tmp_path):
    rep = json.loads((ort_bundle / "report.json").read_text()) if (ort_bundle / "report.json").exists() else \
        _harness(ort_bundle)
    rep["target"]["budget"].update(ttft_ms=1e-3, min_decode_tokens_per_s=1e9, max_perplexity_increase=0.0,
                                   min_token_agreement=1.0)
    rep["generation"]["slower_than_fp32"] = None
    rep["generation"]["quality"]["perplexity_increase"] = 0.01
    rep["generation"]["quality"]["token_agreement"] = 0.9
    p = tmp_path / "r.json"
    p.write_text(json.dumps(rep))
    checks = {c.budget: c for c in gate([p]).checks}
    for b in ("ttft_ms", "min_decode_tokens_per_s", "max_perplexity_increase", "min_token_agreement"):
        assert checks[b].status == "fail", b
    rep["target"]["budget"].update(ttft_ms=1e6, min_decode_tokens_per_s=0.1, max_perplexity_increase=0.05,
                                   min_token_agreement=0.8)
    p.write_text(json.dumps(rep))
    checks = {c.budget: c for c in gate([p]).checks}
    for b in ("ttft_ms", "min_decode_tokens_per_s", "max_perplexity_increase", "min_token_agreement"):
        assert checks[b].status == "pass", (b, checks[b])
    rep["generation"]["slower_than_fp32"] = "9.0 vs 10.0 tokens/s fp32 on the dev machine"
    p.write_text(json.dumps(rep))
    c = {c.budget: c for c in gate([p]).checks}["min_decode_tokens_per_s"]
    assert c.status == "fail" and "slower than the fp32" in c.detail
    rep["environment"]["emulated"] = True
    rep["generation"]["slower_than_fp32"] = None
    p.write_text(json.dumps(rep))
    checks = {c.budget: c for c in gate([p]).checks}
    assert checks["ttft_ms"].status == "skip" and checks["min_decode_tokens_per_s"].status == "skip"


def test_generation_api(ort_bundle):
    G, lm = _open_lm(ort_bundle)
    greedy = lm.generate("Utility for indexing", max_new_tokens=6, ignore_eos=True)
    assert len(greedy["token_ids"]) == 6 and greedy["finish_reason"] == "length" and len(greedy["decode_ms"]) == 5
    assert lm.generate("Utility for indexing", max_new_tokens=6, ignore_eos=True)["token_ids"] == greedy["token_ids"]
    a = lm.generate("Utility for indexing", max_new_tokens=6, temperature=1.0, top_p=0.9, seed=7, ignore_eos=True)
    b = lm.generate("Utility for indexing", max_new_tokens=6, temperature=1.0, top_p=0.9, seed=7, ignore_eos=True)
    assert a["token_ids"] == b["token_ids"]  # seeded sampling is reproducible
    # KV-cache decode equals a full recompute of the same sequence (the cache is exact)
    ids = lm.encode("Utility for indexing")
    seq = ids + greedy["token_ids"][:-1]
    full = lm.logits(seq)
    assert int(np.argmax(full[-1])) == greedy["token_ids"][-1]
    text = lm.decode(greedy["token_ids"])
    if text.strip():
        cut = lm.generate("Utility for indexing", max_new_tokens=6, stop=[text.strip()[:1]], ignore_eos=True)
        assert cut["finish_reason"] == "stop" and text.strip()[:1] not in cut["text"]
    with pytest.raises(G.GenerationError, match="exceeds the bundle's context_length 256"):
        lm.generate(list(range(3, 250)), max_new_tokens=64)
    with pytest.raises(G.GenerationError, match="top_p"):
        lm.generate("x", top_p=0.0)
    lm.close()


def test_self_check_catches_a_tokenizer_that_differs(ort_bundle):
    G, lm = _open_lm(ort_bundle)
    prompts = json.loads((ort_bundle / "prompts.json").read_text())
    assert G.greedy_check(lm, prompts, 4)["passed"]
    prompts[0]["ids"] = prompts[0]["ids"][:-1] + [prompts[0]["ids"][-1] + 1]
    bad = G.greedy_check(lm, prompts, 4)
    assert not bad["passed"] and not bad["tokenizer_match"] and bad["prompts"][0]["tokenizer_match"] is False


@pytest.mark.parametrize("family", ["qwen2", "gpt2", "mistral"])
def test_each_family_converts_and_runs(family, tmp_path):
    src = tiny_lm(tmp_path / family, family)
    (r,) = convert(str(src), [str(profile(tmp_path / "p.toml"))], str(CALIB), str(VAL), tmp_path / "out", progress=False)
    rep = _harness(r.path, "--skip-accuracy")
    assert rep["self_check"]["passed"], rep["self_check"]
    assert rep["generation"]["decode_tokens_per_s"]["p50"] > 0


def test_data_aware_int4_and_openvino_stateful(llama, tmp_path):
    """NNCF's AWQ + scale estimation on the calibration text, for ONNX Runtime (MatMulNBits) and for a
    stateful OpenVINO model; both run through the device harness."""
    ort_p = profile(tmp_path / "awq.toml", "tiny-awq", generation='method = "awq"\nsymmetric = false')
    ov_p = profile(tmp_path / "ov.toml", "tiny-ov", runtime="openvino", generation='method = "awq"')
    results = convert(str(llama), [str(ort_p), str(ov_p)], str(CALIB), str(VAL), tmp_path / "out", progress=False)
    by = {r.target: r for r in results}
    m = json.loads((by["tiny-awq"].path / "manifest.json").read_text())
    w = m["conversion"]["weights"]
    assert w["data_aware"] is True and w["calibration_windows"] >= 1 and w["matmul_nbits"] >= 14
    assert w["symmetric"] is False
    ov = json.loads((by["tiny-ov"].path / "manifest.json").read_text())
    assert ov["generation"]["kv"] == "stateful" and ov["model"]["runtime"] == "openvino"
    assert ov["conversion"]["weights"]["data_aware"] is True
    assert [s["name"] for s in ov["model"]["inputs"]] == ["input_ids", "attention_mask", "position_ids"]
    for r in results:
        rep = _harness(r.path)
        assert rep["self_check"]["passed"], (r.target, rep["self_check"])
        assert rep["generation"]["quality"]["token_agreement"] > 0.5
        assert rep["generation"]["full_context"]["tokens"] == 256


def test_memory_budget_refuses_and_names_the_longest_context(llama, tmp_path):
    p = profile(tmp_path / "small.toml", budget="", generation="")
    p.write_text(p.read_text().replace("peak_memory_mb = 2048", "peak_memory_mb = 90.6"))
    out = tmp_path / "out"
    r = run_cli("convert", str(llama), "--target", str(p), "--calibration", str(CALIB),
                         "--validation", str(VAL), "--out", str(out))
    assert_one_line_error(r, "peak_memory_mb 90.6")
    assert "longest context that fits is" in r.stderr and "budget.context_length" in r.stderr
    assert not (out / "tiny-gen").exists()


def test_bad_inputs_are_one_line_errors(llama, tmp_path):
    p = profile(tmp_path / "p.toml")
    out = tmp_path / "out"
    npz = tmp_path / "data.npz"
    np.savez(npz, **{"input.x": np.zeros((4, 3), np.float32), "labels": np.zeros(4, np.int64)})
    r = run_cli("convert", str(llama), "--target", str(p), "--calibration", str(npz),
                         "--validation", str(VAL), "--out", str(out))
    assert_one_line_error(r, str(npz), "is text")
    # a GGUF of an architecture edgekit does not take
    import gguf
    bad = tmp_path / "mamba.gguf"
    w = gguf.GGUFWriter(str(bad), "mamba")
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    r = run_cli("convert", str(bad), "--target", str(p), "--calibration", str(CALIB),
                         "--validation", str(VAL), "--out", str(out))
    assert_one_line_error(r, "GGUF architecture 'mamba' is not supported")
    # a directory without its tokenizer
    notok = tmp_path / "notok"
    notok.mkdir()
    for f in ("config.json", "model.safetensors", "generation_config.json"):
        (notok / f).write_bytes((llama / f).read_bytes())
    r = run_cli("convert", str(notok), "--target", str(p), "--calibration", str(CALIB),
                         "--validation", str(VAL), "--out", str(out))
    assert_one_line_error(r, "no tokenizer in the directory")
    # a prompt + generation longer than the context
    long = profile(tmp_path / "long.toml")
    long.write_text(long.read_text().replace("context_length = 256", "context_length = 32"))
    r = run_cli("convert", str(llama), "--target", str(long), "--calibration", str(CALIB),
                         "--validation", str(VAL), "--out", str(out))
    assert_one_line_error(r, "exceed the context 32")
    # an option of the single-call pipeline
    r = run_cli("convert", str(llama), "--target", str(p), "--calibration", str(CALIB),
                         "--validation", str(VAL), "--out", str(out), "--precision", "int8")
    assert_one_line_error(r, "--precision")
    assert not out.exists() or not any(out.iterdir())


def test_generation_profile_keys_are_validated(tmp_path):
    from edgekit.errors import ConfigError
    from edgekit.targets import load_target
    p = profile(tmp_path / "bs.toml")
    p.write_text(p.read_text().replace("block_size = 16", "block_size = 24"))
    with pytest.raises(ConfigError, match="power of two"):
        load_target(p)
    for extra, msg in (('method = "gptq"', "generation.method"),
                       ('embeddings = "int8"', "GatherBlockQuantized takes 4-bit"),
                       ('runtime = "litert"', "generation.runtime"), ("colour = 1", "unknown key 'generation.colour'")):
        p = profile(tmp_path / "x.toml", generation=extra)
        with pytest.raises(ConfigError, match=msg):
            load_target(p)
    p = profile(tmp_path / "b.toml", budget="min_token_agreement = 2")
    with pytest.raises(ConfigError, match="generation.budget.min_token_agreement"):
        load_target(p)
