import numpy as np
import pytest

from edgekit.data import load_data
from edgekit.errors import DataError, SourceError
from edgekit.source import load

from ektest import REPO

FACTORIES = REPO / "tests" / "fixtures" / "factories.py"


def test_python_factory_and_module_factory():
    h = load(f"{FACTORIES}:tiny")
    assert h.kind == "python" and h.input_names == ["input"]  # nn.Sequential.forward(input)
    out = h.runner()({h.input_names[0]: np.zeros((1, 1, 8, 8), np.float32)})
    assert out[0].shape == (1, 10)
    h2 = load("edgekit.demo:digits_cnn")
    assert h2.kind == "python" and h2.input_names == ["x"]


def test_same_weights_same_hash():
    assert load(f"{FACTORIES}:tiny").sha256 == load(f"{FACTORIES}:tiny").sha256


def test_pt2_source_knows_its_inputs(digits_example):
    h = load(str(digits_example["model"]))
    assert h.kind == "pt2"
    assert h.inputs[0].shape == (None, 1, 8, 8) and h.inputs[0].dtype == "float32"


@pytest.mark.parametrize("spec, needle", [
    ("nowhere/model.pt2", "model file not found"),
    ("nowhere/model.onnx", "model file not found"),
    ("nowhere/model.bin", "source model not found"),
    (f"{FACTORIES}:raises", "factory raises() raised RuntimeError: weights file checkpoint.safetensors not found"),
    (f"{FACTORIES}:not_a_module", "returned dict, expected a torch.nn.Module"),
    (f"{FACTORIES}:missing", "has no callable 'missing'"),
    ("no_such_package.models:build", "cannot import module 'no_such_package.models'"),
])
def test_bad_sources(spec, needle):
    with pytest.raises(SourceError) as e:
        load(spec)
    assert needle in str(e.value)


def test_corrupt_files(tmp_path):
    fake = tmp_path / "model.onnx"
    fake.write_bytes(b"this is not a protobuf")
    with pytest.raises(SourceError, match="model.onnx: not a valid ONNX model"):
        load(str(fake))
    bad = tmp_path / "model.pt2"
    bad.write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(SourceError, match="model.pt2: not a readable torch.export program"):
        load(str(bad))


def test_hf_dir_without_safetensors_is_refused(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(SourceError, match="no model.safetensors"):
        load(str(tmp_path))


def _npz(path, **arrays):
    np.savez(path, **arrays)
    return path


@pytest.fixture
def pt2(digits_example):
    return load(str(digits_example["model"]))


def test_npz_roundtrip(pt2, tmp_path):
    x = np.random.rand(5, 1, 8, 8).astype(np.float32)
    d = load_data(_npz(tmp_path / "ok.npz", x=x, labels=np.arange(5)), pt2)
    assert len(d) == 5 and d.sample(2)["x"].shape == (1, 1, 8, 8) and d.format == "npz"


@pytest.mark.parametrize("arrays, needle", [
    ({"image": np.zeros((3, 1, 8, 8), np.float32)}, "no array named 'x'; the model's inputs are x"),
    ({"x": np.zeros((3, 1, 8, 8), np.float32), "mask": np.zeros(3)}, "array 'mask' is not a model input"),
    ({"x": np.zeros((3, 1, 8, 8), np.float64)}, "has dtype float64; the model expects float32"),
    ({"x": np.zeros((3, 8, 8), np.float32)}, "samples of shape 8x8; the model expects 1x8x8"),
    ({"x": np.zeros((0, 1, 8, 8), np.float32)}, "set is empty"),
    ({"x": np.zeros((3, 1, 8, 8), np.float32), "labels": np.zeros(2, np.int64)}, "'labels' must be 1-D with one entry per sample"),
    ({"x": np.zeros((3, 1, 8, 8), np.float32), "labels": np.zeros(3, np.float32)}, "expected integer class ids"),
])
def test_npz_mismatches(pt2, tmp_path, arrays, needle):
    with pytest.raises(DataError) as e:
        load_data(_npz(tmp_path / "bad.npz", **arrays), pt2)
    assert "bad.npz" in str(e.value) and needle in str(e.value)


def test_nan_in_calibration(pt2, tmp_path):
    x = np.zeros((4, 1, 8, 8), np.float32)
    x[2, 0, 3, 3] = np.nan
    with pytest.raises(DataError, match="holds NaN or Inf \\(first at sample 2\\)"):
        load_data(_npz(tmp_path / "nan.npz", x=x), pt2, role="calibration")


def test_image_folder(pt2, tmp_path):
    from PIL import Image
    for cls in ("cat", "dog"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(3):
            Image.fromarray((np.random.rand(16, 16) * 255).astype(np.uint8)).save(tmp_path / "imgs" / cls / f"{i}.png")
    d = load_data(tmp_path / "imgs", pt2)
    assert d.inputs["x"].shape == (6, 1, 8, 8) and list(d.labels) == [0, 0, 0, 1, 1, 1]
    assert 0.0 <= d.inputs["x"].min() and d.inputs["x"].max() <= 1.0


def test_jsonl_needs_a_tokenizer(pt2, tmp_path):
    f = tmp_path / "t.jsonl"
    f.write_text('{"text": "hello", "label": 1}\n')
    with pytest.raises(DataError, match="JSONL text needs a tokenizer"):
        load_data(f, pt2)


def test_unsupported_format(pt2, tmp_path):
    f = tmp_path / "data.csv"
    f.write_text("1,2\n")
    with pytest.raises(DataError, match="data.csv: unsupported"):
        load_data(f, pt2)
