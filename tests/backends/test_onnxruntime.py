"""ONNX Runtime backend: dynamic int8 (a profile's quantization.mode) and its layer-by-layer
back-off, on a tiny CNN trained on real digits."""

import numpy as np
import pytest

pytest.importorskip("onnxruntime", reason="onnxruntime extra not installed (pip install 'edgekit[onnxruntime]')")

import onnx  # noqa: E402

from bkutil import digits_setup, first_output  # noqa: E402
from edgekit.backends.onnxruntime import OnnxRuntimeBackend  # noqa: E402
from edgekit.parity import accuracy  # noqa: E402
from edgekit.targets import profile_from_dict  # noqa: E402


@pytest.fixture(scope="module")
def setup():
    s = digits_setup()
    return s["handle"], s["calib"], s["evals"]


def _target(**quant):
    return profile_from_dict(dict(name="t", description="d", arch="x86_64", isa=["avx2", "fma"], runtime="onnxruntime",
                                  device="CPU", precision="int8", threads=1, quantization=quant), "mem")


def _ops(path):
    return [n.op_type for n in onnx.load(str(path)).graph.node]


def test_dynamic_mode_and_its_backoff(setup, tmp_path):
    handle, calib, val = setup
    backend = OnnxRuntimeBackend()
    target = _target(mode="dynamic", op_types=["Conv", "Gemm", "MatMul"], per_channel=False)
    fp = backend.export(handle, target, tmp_path, calib.inputs)
    art = backend.quantize(fp, handle, target, calib, tmp_path)
    q = art.details["quantization"]
    assert art.precision == "int8" and q["mode"] == "dynamic" and q["format"].startswith("QOperator")
    ops = _ops(art.path)
    assert "DynamicQuantizeLinear" in ops and "QuantizeLinear" not in ops and "ConvInteger" in ops
    acc_fp = accuracy(first_output(backend.open(fp, 1), val), val.labels)
    acc_q = accuracy(first_output(backend.open(art, 1), val), val.labels)
    assert acc_fp > 0.8 and abs(acc_fp - acc_q) <= 0.05

    # The back-off first retries with per-channel weights (this profile's are per-tensor), then
    # ranks layers on a static QDQ twin and yields dynamic models with 1, 2, ... in float.
    tried = list(backend.backoff(fp, handle, target, calib, val, tmp_path, None, 0.0))
    assert [len(ex) for _, ex in tried] == [0, 1, 2]
    rung, _ = tried[0]
    assert rung.details["backoff"] == "per-channel weights" and rung.details["quantization"]["per_channel"] is True
    one, excluded = tried[1]
    assert one.details["quantization"]["mode"] == "dynamic"
    assert one.details["quantization"]["nodes_in_float"] == excluded
    ops1 = _ops(one.path)
    # exactly one of Conv / Gemm still runs in float, the other in int8
    assert ops1.count("ConvInteger") + ops1.count("MatMulInteger") == 1
    assert "Conv" in ops1 or "Gemm" in ops1 or "MatMul" in ops1
    all_float, _ = tried[-1]
    assert "DynamicQuantizeLinear" not in _ops(all_float.path)
    out = first_output(backend.open(all_float, 1), val)
    ref = first_output(backend.open(fp, 1), val)
    assert np.abs(out - ref).max() < 1e-4


def test_static_backoff_measures_the_other_calibration_methods_first(setup, tmp_path):
    """Static int8 over budget: before any layer goes back to float, the other calibration methods
    are tried (each a real calibration); the layer rungs then use the best-scoring one."""
    import itertools
    handle, calib, val = setup
    backend = OnnxRuntimeBackend()
    target = _target(mode="static", per_channel=True, calibrate_method="minmax")
    fp = backend.export(handle, target, tmp_path, calib.inputs)
    first = backend.quantize(fp, handle, target, calib, tmp_path)
    seen = []

    def evaluate(art):
        seen.append(art.details["quantization"]["calibrate_method"])
        return accuracy(first_output(backend.open(art, 1), val), val.labels)

    tried = list(itertools.islice(backend.backoff(fp, handle, target, calib, val, tmp_path, evaluate, 0.0), 3))
    rungs = [(a.details.get("backoff"), a.details["quantization"]["calibrate_method"], ex) for a, ex in tried[:2]]
    assert rungs == [("calibrate_method entropy", "entropy", []), ("calibrate_method percentile", "percentile", [])]
    outs = [first_output(backend.open(a, 1), val) for a in (first, tried[0][0], tried[1][0])]
    assert not np.array_equal(outs[0], outs[1]) and not np.array_equal(outs[0], outs[2])  # other ranges
    layer_rung, excluded = tried[2]
    assert len(excluded) == 1 and layer_rung.details["quantization"]["calibrate_method"] in seen


def test_exclusion_order_charges_each_layer_its_compute(setup, tmp_path):
    """A layer adding as much noise as another but costing a quarter of the MACs goes to float first;
    layers that add no noise come last."""
    from edgekit.backends.onnxruntime import node_macs, rank_by_cost
    assert rank_by_cost({"big": 2.0, "small": 2.0, "clean": -1.0}, {"big": 400, "small": 100, "clean": 1}) == \
        ["small", "big", "clean"]
    assert rank_by_cost({"a": 3.0, "b": 1.0}, {"a": 100, "b": 100}) == ["a", "b"]  # equal cost: noisiest first
    handle, calib, _ = setup
    backend = OnnxRuntimeBackend()
    fp = backend.export(handle, _target(), tmp_path, calib.inputs)
    model = onnx.load(str(fp.path))
    macs = node_macs(model)
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    assert convs and all(macs[n.name] > 0 for n in convs)
    w = {i.name: int(np.prod(i.dims)) for i in model.graph.initializer}
    first = convs[0]
    assert macs[first.name] > w[first.input[1]]  # a Conv is charged per output position, not per weight
