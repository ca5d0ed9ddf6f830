import json
import subprocess
import sys

import pytest

from edgekit.errors import ConfigError
from edgekit.targets import available, load_target, load_targets, profile_from_dict

BASE = dict(name="t", description="d", arch="x86_64", isa=["avx2"], runtime="onnxruntime",
            device="CPU", precision="int8", threads=2)


def test_shipped_profiles_load_and_validate():
    names = set(available())
    assert {"x86-avx2", "x86-vnni"} <= names
    for name in names:
        p = load_target(name)
        assert p.name == name
        assert p.threads >= 1


def test_vnni_and_reduce_range_follow_the_isa():
    avx2, vnni = load_target("x86-avx2"), load_target("x86-vnni")
    assert not avx2.has_vnni and vnni.has_vnni
    from edgekit.backends.onnxruntime import resolved_quantization
    assert resolved_quantization(avx2, False)["reduce_range"] is True
    assert resolved_quantization(vnni, False)["reduce_range"] is False
    # derived from the ISA when the profile does not say
    bare = profile_from_dict(dict(BASE), "mem")
    assert resolved_quantization(bare, False)["reduce_range"] is True
    arm = profile_from_dict(dict(BASE, arch="aarch64", isa=["neon", "dotprod"]), "mem")
    q = resolved_quantization(arm, True)
    assert q["reduce_range"] is False and q["activation_type"] == "int8" and q["op_types"] == ["MatMul", "Gemm", "Gather"]


def test_int8_mode_per_model_family():
    """Auto mode: dynamic for transformers on x86 ONNX Runtime and LiteRT, static for CNNs and for
    aarch64 ONNX Runtime (QDQ); [quantization.transformer] keys apply to transformers only."""
    from edgekit.backends.onnxruntime import resolved_quantization
    bare = profile_from_dict(dict(BASE), "mem")
    assert bare.int8_for(True).mode == "dynamic" and bare.int8_for(False).mode == "static"
    arm = profile_from_dict(dict(BASE, arch="aarch64", isa=["neon"]), "mem")
    assert arm.int8_for(True).mode == "static"
    lite = profile_from_dict(dict(BASE, arch="aarch64", isa=["neon"], runtime="litert", static_shapes=True), "mem")
    assert lite.int8_for(True).mode == "dynamic" and lite.int8_for(False).mode == "static"
    ov = profile_from_dict(dict(BASE, runtime="openvino"), "mem")
    assert ov.int8_for(True).mode == "static"
    avx2, server = load_target("x86-avx2"), load_target("arm64-server")
    t, c = resolved_quantization(avx2, True), resolved_quantization(avx2, False)
    assert (t["mode"], t["per_channel"], t["reduce_range"]) == ("dynamic", False, False)
    assert (c["mode"], c["per_channel"], c["reduce_range"]) == ("static", True, True)
    assert resolved_quantization(server, True)["calibrate_method"] == "percentile"
    assert resolved_quantization(server, False)["calibrate_method"] == "minmax"
    forced = profile_from_dict(dict(BASE, quantization={"mode": "static"}), "mem")
    assert forced.int8_for(True).mode == "static"
    assert avx2.to_dict()["quantization"]["transformer"]["mode"] == "dynamic"


def test_target_by_path(tmp_path):
    f = tmp_path / "mine.toml"
    f.write_text('name = "mine"\ndescription = "x"\narch = "aarch64"\nisa = ["neon"]\nruntime = "onnxruntime"\n'
                 'device = "CPU"\nprecision = "fp32"\nthreads = 4\n[budget]\nmodel_size_mb = 3\n')
    p = load_target(str(f))
    assert p.name == "mine" and p.budget.model_size_mb == 3 and p.budget.latency_p95_ms is None


@pytest.mark.parametrize("change, needle", [
    ({"colour": "red"}, "unknown key 'colour'"),
    ({"threads": "two"}, "threads = 'two' has type str; expected int"),
    ({"threads": True}, "must be a number, not a boolean"),
    ({"arch": "riscv"}, "arch = 'riscv' is not valid; expected one of x86_64, aarch64"),
    ({"precision": "int4"}, "precision = 'int4'"),
    ({"budget": {"latency_p95": 3}}, "unknown key 'budget.latency_p95'"),
    ({"budget": {"latency_p95_ms": "fast"}}, "budget.latency_p95_ms = 'fast'"),
    ({"budget": {"model_size_mb": -1}}, "must be >= 0"),
    ({"device": "NPU", "runtime": "openvino"}, "needs static_shapes = true"),
    ({"quantization": {"calibrate_method": "magic"}}, "quantization.calibrate_method = 'magic'"),
    ({"quantization": {"mode": "lazy"}}, "quantization.mode = 'lazy' is not valid; expected one of static, dynamic"),
    ({"quantization": {"transformer": {"per_chanel": False}}}, "unknown key 'quantization.transformer.per_chanel'"),
    ({"quantization": {"transformer": {"mode": 1}}}, "quantization.transformer.mode = 1 has type int"),
    ({"runtime": "openvino", "quantization": {"transformer": {"mode": "dynamic"}}},
     "mode = 'dynamic' is not offered for runtime 'openvino'"),
])
def test_bad_profiles_are_named(change, needle):
    with pytest.raises(ConfigError, match=None) as e:
        profile_from_dict({**BASE, **change}, "bad.toml")
    assert "bad.toml" in str(e.value) and needle in str(e.value)


def test_missing_required_key():
    raw = dict(BASE)
    del raw["runtime"]
    with pytest.raises(ConfigError, match="missing required key 'runtime'"):
        profile_from_dict(raw, "bad.toml")


def test_unknown_target_lists_the_valid_ones():
    with pytest.raises(ConfigError, match="unknown target 'x86-avx9'.*x86-avx2"):
        load_target("x86-avx9")


def test_invalid_toml_file(tmp_path):
    f = tmp_path / "broken.toml"
    f.write_text("name = \n")
    with pytest.raises(ConfigError, match="broken.toml: not valid TOML"):
        load_target(str(f))


def test_targets_dir_and_duplicates(tmp_path):
    with pytest.raises(ConfigError, match="given twice"):
        load_targets(["x86-avx2", "x86-avx2"])
    with pytest.raises(ConfigError, match="no .toml target profiles"):
        load_targets([], str(tmp_path))


def test_cli_targets_json():
    proc = subprocess.run([sys.executable, "-m", "edgekit", "targets", "--json"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    names = {p["name"] for p in json.loads(proc.stdout)}
    assert {"x86-avx2", "x86-vnni"} <= names


def test_litert_profiles_must_say_static_shapes():
    with pytest.raises(ConfigError, match="runtime = 'litert' exports fixed shapes"):
        profile_from_dict(dict(BASE, runtime="litert", arch="aarch64", isa=["neon"]), "bad.toml")
