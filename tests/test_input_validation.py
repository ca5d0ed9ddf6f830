"""Every input checked against what the model can take and produce, before any export: labels
outside the model's classes, dtype/shape mismatches blamed on the file that is wrong (for every
source kind), and corrupt model files ending in one line on stderr, nothing else, nothing written."""

from __future__ import annotations

import json
import logging
import shutil
import struct
import warnings
import zipfile

import numpy as np
import pytest

from edgekit.cli import main
from edgekit.convert import convert, prepare
from edgekit.errors import DataError, SourceError

from ektest import REPO, assert_one_line_error, run_cli

FACTORIES = REPO / "tests" / "fixtures" / "factories.py"
TINY = f"{FACTORIES}:tiny"  # Flatten -> Linear(64, 10): input 'input', any sample of 64 values


# --- real files, made small -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory):
    """The tiny factory's model exported to ONNX (input x: batch x 1 x 8 x 8 float32, 10 classes)."""
    import torch
    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    from edgekit.source import load
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(load(TINY).module, (torch.zeros(1, 1, 8, 8),), str(path), input_names=["x"],
                          output_names=["logits"], opset_version=17, dynamo=False,
                          dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}})
    return path


VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + "a game for the terminal python library science tool".split()


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    """A 1-layer BERT sequence classifier (3 labels) with a 14-token WordPiece vocabulary."""
    transformers = pytest.importorskip("transformers", reason="hf extra not installed (pip install 'edgekit[hf]')")
    import torch
    d = tmp_path_factory.mktemp("hf") / "tiny-bert"
    d.mkdir()
    (d / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    transformers.BertTokenizerFast(vocab_file=str(d / "vocab.txt")).save_pretrained(d)
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=len(VOCAB), hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=16, max_position_embeddings=32, num_labels=3)
    transformers.BertForSequenceClassification(cfg).eval().save_pretrained(d, safe_serialization=True)
    return d


def _digits(ex, n=40):
    with np.load(ex["calibration"]) as z:
        return z["x"][:n], z["labels"][:n]


def _tokens(n=40, seq=16, dtype=np.int64, vocab=len(VOCAB)):
    rng = np.random.default_rng(0)
    ids = rng.integers(5, vocab, size=(n, seq)).astype(dtype)
    return {"input_ids": ids, "token_type_ids": np.zeros_like(ids), "attention_mask": np.ones_like(ids)}


def _args(source, calib, val, out, *extra):
    return ["convert", str(source), "--target", "x86-avx2", "--precision", "fp32", "--calibration", str(calib),
            "--validation", str(val), "--out", str(out), *map(str, extra)]


def _refused(capfd, argv, out, *needles) -> str:
    """Through the real CLI: exit 2, exactly one line on stderr (fd level: C++ libraries write
    there directly), nothing on stdout, no output folder."""
    code = main(argv)
    cap = capfd.readouterr()
    lines = cap.err.strip().splitlines()
    assert code == 2, cap.err
    assert len(lines) == 1 and lines[0].startswith("edgekit: error: "), cap.err
    assert "Traceback" not in cap.err and not cap.out.strip(), (cap.out, cap.err)
    for n in needles:
        assert n in lines[0], (n, lines[0])
    assert not out.exists(), list(out.rglob("*"))
    return lines[0]


# --- labels the model cannot emit -----------------------------------------------------------------

def test_validation_label_outside_the_classes(digits_example, tmp_path, capfd):
    x, y = _digits(digits_example)
    y = y.copy()
    y[[3, 7]] = 12
    np.savez(tmp_path / "val.npz", x=x, labels=y)
    _refused(capfd, _args(digits_example["model"], digits_example["calibration"], tmp_path / "val.npz",
                          tmp_path / "out"), tmp_path / "out",
             f"{tmp_path / 'val.npz'}: validation label 12 is outside the model's 10 output classes "
             "(valid: 0..9; 2 of 40 samples, first at sample 3)")


def test_negative_labels_and_several_values_are_listed(tmp_path):
    x = np.random.default_rng(0).random((20, 1, 8, 8), dtype=np.float32)
    np.savez(tmp_path / "c.npz", input=x)
    np.savez(tmp_path / "v.npz", input=x, labels=np.r_[np.arange(10), [-1, 10, 11] + [0] * 7])
    with pytest.raises(DataError) as e:
        prepare(TINY, str(tmp_path / "c.npz"), str(tmp_path / "v.npz"))
    assert str(e.value).startswith(f"{tmp_path / 'v.npz'}: validation labels -1, 10, 11 are outside "
                                   "the model's 10 output classes (valid: 0..9; 3 of 20 samples, first at sample 10)")


def test_calibration_labels_are_checked_too(tmp_path):
    x = np.random.default_rng(0).random((20, 1, 8, 8), dtype=np.float32)
    np.savez(tmp_path / "c.npz", input=x, labels=np.full(20, 10))
    np.savez(tmp_path / "v.npz", input=x, labels=np.zeros(20, np.int64))
    with pytest.raises(DataError, match=r"c\.npz: calibration label 10 is outside the model's 10 output classes"):
        prepare(TINY, str(tmp_path / "c.npz"), str(tmp_path / "v.npz"))


def test_image_folder_with_more_classes_than_the_model(digits_example, tmp_path):
    from PIL import Image
    for i in range(11):  # 11 class folders for a 10-class model: the last one cannot be predicted
        (tmp_path / "imgs" / f"c{i:02d}").mkdir(parents=True)
        Image.fromarray(np.full((8, 8), 20 * i, np.uint8)).save(tmp_path / "imgs" / f"c{i:02d}" / "0.png")
    with pytest.raises(DataError) as e:
        prepare(str(digits_example["model"]), str(digits_example["calibration"]), str(tmp_path / "imgs"))
    assert f"{tmp_path / 'imgs'}: validation label 10 (class folder 'c10') is outside the model's 10" in str(e.value)


def test_hf_label_beyond_num_labels(hf_dir, tmp_path):
    rows = [{"text": t, "label": i % 3} for i, t in enumerate(["a game", "python library", "science tool"] * 4)]
    (tmp_path / "c.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    rows[5]["label"] = 3
    (tmp_path / "v.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError) as e:
        prepare(str(hf_dir), str(tmp_path / "c.jsonl"), str(tmp_path / "v.jsonl"), sequence_length=8)
    assert str(e.value).startswith(f"{tmp_path / 'v.jsonl'}: validation label 3 is outside the model's "
                                   "3 output classes (valid: 0..2; 1 of 12 samples, first at sample 5)")


def test_recipe_training_labels_refused_before_training(digits_example, tmp_path):
    x, y = _digits(digits_example, 64)
    np.savez(tmp_path / "train.npz", x=x, labels=np.where(y == 9, 10, y))
    with pytest.raises(DataError) as e:
        convert(str(digits_example["model"]), ["x86-avx2"], str(digits_example["calibration"]),
                str(digits_example["validation"]), tmp_path / "out", precisions=["fp32"], progress=False,
                recipe=str(REPO / "examples" / "recipes" / "digits_prune50.toml"), train=str(tmp_path / "train.npz"))
    assert str(e.value).startswith(f"{tmp_path / 'train.npz'}: training label 10 is outside the model's 10")
    assert not (tmp_path / "out").exists()


# --- dtype / shape: the file that is wrong is the one named ---------------------------------------

def _case(kind, what, ex, onnx_model, hf_dir):
    """(source, good inputs, inputs with `what` wrong, extra CLI args) for one source kind. Each
    wrong file is wrong on its own: a dtype the source does not take, or a shape it cannot run."""
    if kind == "hf":
        # 40 tokens: past the 32 positions the tiny BERT has
        bad = _tokens(dtype=np.int32) if what == "dtype" else _tokens(seq=40)
        return hf_dir, _tokens(), bad, ["--sequence-length", "16"]
    x = _digits(ex)[0]
    name = "input" if kind == "python" else "x"
    bad_x = x.astype(np.float64) if what == "dtype" else x[:, :, :4, :]  # 1x4x8: 32 values, not 64
    source = {"python": TINY, "pt2": ex["model"], "onnx": onnx_model}[kind]
    return source, {name: x}, {name: bad_x}, []


@pytest.mark.parametrize("what", ["dtype", "shape"])
@pytest.mark.parametrize("wrong", ["calibration", "validation"])
@pytest.mark.parametrize("kind", ["python", "pt2", "onnx", "hf"])
def test_mismatch_names_the_wrong_file(kind, wrong, what, digits_example, onnx_model, request, tmp_path, capfd):
    hf = request.getfixturevalue("hf_dir") if kind == "hf" else None
    source, good, bad, extra = _case(kind, what, digits_example, onnx_model, hf)
    labels = np.arange(len(next(iter(good.values())))) % 3
    calib, val = tmp_path / "calib.npz", tmp_path / "val.npz"
    np.savez(calib, **(bad if wrong == "calibration" else good))
    np.savez(val, labels=labels, **(bad if wrong == "validation" else good))
    culprit = calib if wrong == "calibration" else val
    err = _refused(capfd, _args(source, calib, val, tmp_path / "out", *extra), tmp_path / "out")
    # The wrong file is the subject; the good one at most cited as what it differs from.
    assert err.startswith(f"edgekit: error: {culprit}: "), err


def test_hf_sequence_lengths_that_both_run_but_differ(hf_dir, tmp_path):
    """BERT takes 16 and 12 tokens alike; the export is traced at calibration's, validation must follow."""
    np.savez(tmp_path / "c.npz", **_tokens())
    np.savez(tmp_path / "v.npz", labels=np.zeros(40, np.int64), **_tokens(seq=12))
    with pytest.raises(DataError) as e:
        prepare(str(hf_dir), str(tmp_path / "c.npz"), str(tmp_path / "v.npz"), sequence_length=16)
    assert str(e.value).startswith(f"{tmp_path / 'v.npz'}: array 'input_ids' has samples of shape 12, "
                                   f"the calibration data ({tmp_path / 'c.npz'}) 16; ")


def test_factory_files_that_both_run_but_differ_are_both_named(tmp_path):
    """Flatten -> Linear(64) takes 1x8x8 and 4x4x4 alike, but the export is traced from calibration."""
    x = np.random.default_rng(0).random((20, 1, 8, 8), dtype=np.float32)
    np.savez(tmp_path / "c.npz", input=x)
    np.savez(tmp_path / "v.npz", input=x.reshape(20, 4, 4, 4), labels=np.zeros(20, np.int64))
    with pytest.raises(DataError) as e:
        prepare(TINY, str(tmp_path / "c.npz"), str(tmp_path / "v.npz"))
    assert str(e.value) == (f"{tmp_path / 'v.npz'}: array 'input' has samples of shape 4x4x4, the calibration data "
                            f"({tmp_path / 'c.npz'}) 1x8x8; the model is traced with the calibration data, so both "
                            "must match (N samples on axis 0)")


def test_token_ids_beyond_the_vocabulary(hf_dir, tmp_path):
    np.savez(tmp_path / "c.npz", **_tokens())
    bad = _tokens()
    bad["input_ids"][7, 2] = 500  # tokenized with another model's vocabulary
    np.savez(tmp_path / "v.npz", labels=np.zeros(40, np.int64), **bad)
    with pytest.raises(DataError) as e:
        prepare(str(hf_dir), str(tmp_path / "c.npz"), str(tmp_path / "v.npz"), sequence_length=16)
    assert str(e.value).startswith(f"{tmp_path / 'v.npz'}: array 'input_ids' holds id 500 (sample 7); "
                                   f"the model's embedding takes 0..{len(VOCAB) - 1}")


def test_static_shape_target_pins_validation_to_calibration(onnx_model, tmp_path, capfd):
    """x is batch x 1 x H x W with H, W dynamic: fine on its own, but a static-shape target is
    exported at the calibration's 8x8, so a 16x16 validation set is refused before the export."""
    import onnx
    m = onnx.load(str(onnx_model))
    for d in m.graph.input[0].type.tensor_type.shape.dim[2:]:
        d.Clear()
        d.dim_param = "hw"
    path = tmp_path / "dyn.onnx"
    onnx.save(m, str(path))
    x = np.random.default_rng(0).random((40, 1, 8, 8), dtype=np.float32)
    np.savez(tmp_path / "c.npz", x=x)
    np.savez(tmp_path / "v.npz", x=np.zeros((8, 1, 16, 16), np.float32), labels=np.zeros(8, np.int64))
    profile = tmp_path / "x86-static.toml"
    profile.write_text((REPO / "targets" / "x86-avx2.toml").read_text()
                       .replace('name = "x86-avx2"', 'name = "x86-static"')
                       .replace("static_shapes = false", "static_shapes = true"))
    argv = _args(path, tmp_path / "c.npz", tmp_path / "v.npz", tmp_path / "out")
    argv[argv.index("x86-avx2")] = str(profile)
    _refused(capfd, argv, tmp_path / "out", f"{tmp_path / 'v.npz'}: array 'x' has samples of shape 1x16x16, "
             f"the calibration data ({tmp_path / 'c.npz'}) 1x8x8; target x86-static has static shapes")


# --- corrupt model files: one line on stderr, nothing from torch / onnx / transformers ------------

def _truncated(src, dest):
    data = src.read_bytes()
    dest.write_bytes(data[:len(data) // 2])
    return dest


def _bad_source(case, tmp_path, ex, onnx_model, request):
    if case == "pt2-truncated":
        return _truncated(ex["model"], tmp_path / "model.pt2"), "model.pt2: not a readable torch.export program"
    if case == "pt2-tail-cut":  # a zip whose central directory is damaged: torch logs a traceback
        data = ex["model"].read_bytes()
        (tmp_path / "model.pt2").write_bytes(data[:-100])
        return tmp_path / "model.pt2", "model.pt2: not a readable torch.export program"
    if case == "pt2-bit-rot":  # the largest weight zeroed in place: torch would load it, wrong
        data = bytearray(ex["model"].read_bytes())
        with zipfile.ZipFile(ex["model"]) as z:
            big = max(z.infolist(), key=lambda i: i.compress_size)
        # past the local header: 30 bytes, then the name and extra field whose lengths end it
        name_len, extra_len = struct.unpack("<HH", data[big.header_offset + 26:big.header_offset + 30])
        start = big.header_offset + 30 + name_len + extra_len
        data[start:start + big.compress_size // 2] = bytes(big.compress_size // 2)
        (tmp_path / "model.pt2").write_bytes(bytes(data))
        return tmp_path / "model.pt2", "fails its CRC-32 check"
    if case == "pt2-not-a-program":
        with zipfile.ZipFile(tmp_path / "model.pt2", "w") as z:
            z.writestr("notes.txt", "hello")
        return tmp_path / "model.pt2", "model.pt2: not a readable torch.export program"
    if case == "onnx-truncated":
        return _truncated(onnx_model, tmp_path / "model.onnx"), "model.onnx: not a valid ONNX model"
    hf = request.getfixturevalue("hf_dir")
    d = tmp_path / "bert"
    shutil.copytree(hf, d)
    if case == "hf-truncated":
        _truncated(hf / "model.safetensors", d / "model.safetensors")
        return d, "loading the Hugging Face model failed: SafetensorError"
    if case == "hf-no-tokenizer":
        for f in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
            (d / f).unlink(missing_ok=True)
        return d, "loading the tokenizer failed"
    cfg = json.loads((d / "config.json").read_text())  # hf-wrong-config: weights of another shape
    cfg.update(hidden_size=16, intermediate_size=32)
    (d / "config.json").write_text(json.dumps(cfg))
    return d, "size mismatch"


@pytest.mark.parametrize("case", ["pt2-truncated", "pt2-tail-cut", "pt2-bit-rot", "pt2-not-a-program",
                                  "onnx-truncated", "hf-truncated", "hf-no-tokenizer", "hf-wrong-config"])
def test_corrupt_model_is_one_line(case, digits_example, onnx_model, request, tmp_path, capfd, caplog):
    from edgekit.source import load
    source, needle = _bad_source(case, tmp_path, digits_example, onnx_model, request)
    with pytest.raises(SourceError):  # the API raises the same error the CLI prints
        load(str(source))
    capfd.readouterr()
    caplog.clear()
    caplog.set_level(logging.DEBUG)
    # Handlers that libraries bound to stderr at import time (before this test) write past capfd:
    # their loggers and warnings are checked at the source, the fresh-process test below sees stderr.
    with warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        _refused(capfd, _args(source, digits_example["calibration"], digits_example["validation"], tmp_path / "out"),
                 tmp_path / "out", str(source), needle)
    noisy = [f"{r.name}: {r.getMessage()}" for r in caplog.records if r.levelno >= logging.WARNING]
    assert not noisy and not warned, (noisy, [str(w.message) for w in warned])


@pytest.mark.parametrize("case", ["pt2-truncated", "onnx-truncated", "hf-truncated"])
def test_corrupt_model_in_a_fresh_process(case, digits_example, onnx_model, request, tmp_path):
    """A fresh interpreter: import-time messages (torchao kernels, pytree deprecations) and torch's
    logging handlers are as a user meets them; every runtime's target, OpenVINO (nncf) included."""
    source, needle = _bad_source(case, tmp_path, digits_example, onnx_model, request)
    proc = run_cli("convert", source, "--target", "x86-avx2", "--target", "intel-cpu-openvino",
                   "--calibration", digits_example["calibration"], "--validation", digits_example["validation"],
                   "--out", tmp_path / "out")
    assert_one_line_error(proc, str(source), needle)
    assert proc.stderr.count("\n") == 1 and not proc.stdout.strip(), (proc.stdout, proc.stderr)
    assert not (tmp_path / "out").exists()
