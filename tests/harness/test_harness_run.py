"""End-to-end runs of the device-side harness (edgekit/harness/run.py) on a real tiny ONNX bundle.

Every run is a subprocess of the venv's python on a bundle copy, as on a device; nothing is mocked.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest


def _one_line_error(proc, *fragments: str) -> str:
    err = proc.stderr.strip()
    assert "Traceback" not in proc.stderr, proc.stderr
    assert len(err.splitlines()) == 1, f"expected one line on stderr, got:\n{proc.stderr}"
    assert err.startswith("harness: error: "), err
    for frag in fragments:
        assert frag in err, err
    return err


# ------------------------------------------------------------------ the report of a good run

def test_report_identity_and_integrity(onnx_report, onnx_bundle, hx):
    r = onnx_report
    assert r["schema"] == "edgekit.report/1"
    assert r["status"] == "ok"
    b = r["bundle"]
    assert b["name"] == "x86-test" and b["runtime"] == "onnxruntime" and b["precision"] == "fp32"
    assert b["model_file"] == "model.onnx"
    assert b["model_sha256"] == hx.sha256(onnx_bundle / "model.onnx")
    assert b["manifest_sha256"] == hx.sha256(onnx_bundle / "manifest.json")
    manifest = json.loads((onnx_bundle / "manifest.json").read_text())
    assert b["integrity"] == {"verified": True, "n_files": len(manifest["files"])}
    assert r["target"] == manifest["target"]
    assert r["settings"] == {"runs": 20, "warmup": 2, "min_seconds": 0.05, "warmup_seconds": 0.01,
                             "trials": 2, "batch": 1,
                             "max_runs_per_trial": r["settings"]["max_runs_per_trial"]}
    assert r["model_size_mb"] == pytest.approx((onnx_bundle / "model.onnx").stat().st_size / 2**20,
                                               abs=1e-6)
    assert "p95" in r["_stdout"]  # the human summary, on stdout


def test_report_environment(onnx_report):
    env = onnx_report["environment"]
    for key in ("hostname", "machine", "platform", "cpu_model", "cpu_count", "cpu_flags",
                "governor", "temperature_c", "python", "numpy", "runtime", "threads",
                "requested_device", "actual_device", "stand_in", "emulated"):
        assert key in env, key
    assert env["python"] == ".".join(map(str, sys.version_info[:3]))
    assert env["numpy"] == np.__version__
    assert env["runtime"]["name"] == "onnxruntime"
    assert env["runtime"]["providers"] == ["CPUExecutionProvider"]
    assert env["runtime"]["config"]["intra_op_num_threads"] == 1
    assert env["runtime"]["config"]["inter_op_num_threads"] == 1
    assert env["runtime"]["config"]["execution_mode"] == "ORT_SEQUENTIAL"
    assert env["threads"] == 1  # from manifest runtime_settings.threads
    assert env["requested_device"] == env["actual_device"] == "CPU" and env["stand_in"] is False
    assert env["emulated"] is (os.environ.get("EDGEKIT_EMULATED") == "1")
    assert set(env["cpu_flags"]) <= {"sse4_2", "avx512_bf16", "avx512_fp16", "amx_fp16",
                                     "avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx",
                                     "amx_int8", "amx_bf16", "neon", "dotprod", "i8mm", "sve",
                                     "sve2", "fp16", "bf16"}


def test_report_latency(onnx_report, hx):
    lat = onnx_report["latency"]
    assert lat["unit"] == "ms"
    samples = lat["samples_ms"]
    assert len(samples) == hx.TRIALS and all(len(s) >= hx.RUNS for s in samples)
    assert lat["n"] == sum(len(s) for s in samples) >= hx.RUNS * hx.TRIALS
    assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p95"] <= lat["p99"] <= lat["max"]
    assert lat["min"] <= lat["mean"] <= lat["max"] and lat["std"] >= 0
    # mean and std are rounded to 6 decimals (ms): for a ~0.01 ms model with a small std that alone
    # moves std / mean by up to ~1e-4 relative, so compare with the rounding's own tolerance
    lat_tol = 0.5e-6 * (1 / lat["std"] + 1 / lat["mean"]) if lat["std"] > 0 else 1e-4
    assert lat["cv"] == pytest.approx(lat["std"] / lat["mean"], rel=lat_tol + 1e-6)
    # Reported statistics are exactly recomputable from the reported samples (nearest rank).
    pooled = sorted(v for s in samples for v in s)
    n = len(pooled)
    for key, p in (("p50", 0.5), ("p90", 0.9), ("p95", 0.95), ("p99", 0.99)):
        assert lat[key] == pooled[math.ceil(n * p) - 1], key
    assert lat["min"] == pooled[0] and lat["max"] == pooled[-1]
    assert len(lat["trial_medians"]) == hx.TRIALS
    for med, s in zip(lat["trial_medians"], samples):
        assert med == sorted(s)[math.ceil(len(s) * 0.5) - 1]
    assert all(round(v, 4) == v for s in samples for v in s)  # 1e-4 ms resolution
    trials = onnx_report["trials"]
    assert [t["runs"] for t in trials] == [len(s) for s in samples]
    assert all(t["timed_seconds"] >= 0.05 and t["warmup_runs"] >= 2 for t in trials)
    assert len({t["pid"] for t in trials}) == hx.TRIALS  # a fresh process per trial


def test_report_cold_start_and_memory(onnx_report, hx):
    cold = onnx_report["cold_start"]
    for key in ("import_ms", "load_ms", "first_inference_ms"):
        assert len(cold[key]) == hx.TRIALS and all(v > 0 for v in cold[key]), key
    mem = onnx_report["memory"]
    if os.path.exists("/proc/self/status"):
        assert mem["method"] in ("VmHWM+clear_refs", "VmHWM")
    for key in ("baseline_rss_mb", "load_peak_rss_mb", "inference_peak_rss_mb"):
        assert len(mem[key]) == hx.TRIALS and all(v > 0 for v in mem[key]), key
    for base, load, inf in zip(mem["baseline_rss_mb"], mem["load_peak_rss_mb"],
                               mem["inference_peak_rss_mb"]):
        assert load >= base and inf >= base
    assert mem["peak_rss_mb"] == max(mem["load_peak_rss_mb"] + mem["inference_peak_rss_mb"])
    assert mem["peak_rss_mb"] >= max(mem["baseline_rss_mb"])
    # onnxruntime's shared library alone is several MiB resident: the model's share is not zero.
    assert 1.0 < mem["model_share_mb"] <= mem["peak_rss_mb"]
    assert mem["anon_mb"] > 0 and mem["file_mb"] > 0
    assert mem["anon_mb"] + mem["file_mb"] <= mem["peak_rss_mb"] + 1.0


def test_report_self_check_and_accuracy(onnx_report, hx):
    sc = onnx_report["self_check"]
    assert sc["passed"] is True and sc["allclose"] is True
    assert sc["n"] == hx.N_SAMPLES
    assert 0.0 <= sc["max_abs_diff"] <= 1e-4
    assert sc["top1_agreement_expected"] == 1.0 and sc["top1_agreement_reference"] == 1.0
    assert (sc["atol"], sc["rtol"], sc["min_top1_agreement"]) == (1e-4, 1e-3, 1.0)
    acc = onnx_report["accuracy"]
    assert acc["metric"] == "top1" and acc["n"] == hx.N_VALIDATION
    assert 0.0 <= acc["value"] <= 1.0
    assert acc["value"] == pytest.approx(0.75, abs=2 / hx.N_VALIDATION)  # 16 of 64 labels flipped
    assert acc["drop"] == pytest.approx(acc["source_value"] - acc["value"], abs=1e-9)


# ------------------------------------------------------------------ bad bundles: exit 2, one line

def test_tampered_model_is_refused(onnx_bundle, copy_bundle, hx, tmp_path):
    bundle = copy_bundle(onnx_bundle)
    with open(bundle / "model.onnx", "ab") as f:
        f.write(b"\0")
    out = tmp_path / "report.json"
    proc = hx.run(bundle, "--out", str(out), *hx.FAST)
    assert proc.returncode == 2
    _one_line_error(proc, f"{bundle}/model.onnx: sha256 mismatch with manifest.json",
                    "(bundle altered or corrupt)")
    assert not out.exists()


def test_missing_manifest(onnx_bundle, copy_bundle, hx):
    bundle = copy_bundle(onnx_bundle)
    (bundle / "manifest.json").unlink()
    proc = hx.run(bundle, *hx.FAST)
    assert proc.returncode == 2
    _one_line_error(proc, f"{bundle}/manifest.json", "missing")


def test_unreadable_manifest(onnx_bundle, copy_bundle, hx):
    bundle = copy_bundle(onnx_bundle)
    (bundle / "manifest.json").write_text('{"schema": "edgekit.manifest/1", ')
    proc = hx.run(bundle, *hx.FAST)
    assert proc.returncode == 2
    _one_line_error(proc, "manifest.json", "unreadable")


def test_missing_listed_file(onnx_bundle, copy_bundle, hx):
    bundle = copy_bundle(onnx_bundle)
    (bundle / "validation.npz").unlink()
    proc = hx.run(bundle, *hx.FAST)
    assert proc.returncode == 2
    _one_line_error(proc, f"{bundle}/validation.npz", "missing")


def test_bad_option_is_one_line(onnx_bundle, hx):
    proc = hx.run(onnx_bundle, "--runs", "0")
    assert proc.returncode == 2
    _one_line_error(proc, "--runs")


_BLOCKER = """\
# Installed by the harness tests: refuse (and log) imports of the packages in EK_BLOCK_IMPORTS.
import os, sys

class _Blocker:
    blocked = set(os.environ.get("EK_BLOCK_IMPORTS", "").split(","))

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in self.blocked:
            with open(os.environ["EK_BLOCK_LOG"], "a") as f:
                f.write(name + " pid " + str(os.getpid()) + "\\n")
            raise ModuleNotFoundError("No module named %r" % name, name=name)
        return None

sys.meta_path.insert(0, _Blocker())
"""


def _blocking_env(tmp_path, names):
    """An environment whose interpreters - the harness and every trial process it starts, which
    inherit PYTHONPATH - refuse to import `names` (as if not installed) and log each attempt.

    A sitecustomize on PYTHONPATH runs at interpreter start-up and puts a finder first on
    sys.meta_path, so it wins over site-packages, the cwd and editable-install finders alike.
    """
    site = tmp_path / "blocker"
    site.mkdir()
    (site / "sitecustomize.py").write_text(_BLOCKER)
    log = tmp_path / "imports.log"
    env = dict(os.environ, PYTHONPATH=str(site), EK_BLOCK_IMPORTS=",".join(names),
               EK_BLOCK_LOG=str(log))
    return env, log


def test_missing_runtime(onnx_bundle, hx, tmp_path):
    env, _ = _blocking_env(tmp_path, ["onnxruntime"])
    proc = hx.run(onnx_bundle, "--out", str(tmp_path / "r.json"), *hx.FAST, env=env)
    assert proc.returncode == 2
    _one_line_error(proc, "onnxruntime is not installed on this device: pip install onnxruntime")


def test_never_imports_dev_packages(onnx_bundle, copy_bundle, hx, tmp_path):
    """Any import of edgekit, torch, rich or scipy - by the harness or by a trial process - would
    be refused and logged; the run must succeed with none logged."""
    env, log = _blocking_env(tmp_path, ["edgekit", "torch", "rich", "scipy"])
    # The blocker works, even from the repository root where edgekit is importable from the cwd.
    for name in ("edgekit", "torch", "rich", "scipy"):
        proc = subprocess.run([sys.executable, "-c", f"import {name}"], env=env,
                              capture_output=True, text=True, cwd=hx.HARNESS_SRC.parents[1])
        assert proc.returncode != 0 and f"No module named '{name}'" in proc.stderr, proc.stderr
    assert len(log.read_text().splitlines()) == 4
    log.unlink()

    bundle = copy_bundle(onnx_bundle)
    out = tmp_path / "elsewhere" / "report.json"  # run from another cwd, by absolute path
    proc = hx.run(bundle, "--out", str(out), *hx.FAST, env=env, cwd=tmp_path,
                  script=bundle / "harness" / "run.py")
    assert proc.returncode == 0, proc.stderr
    assert not log.exists(), f"harness imported a dev-machine package:\n{log.read_text()}"
    report = json.loads(out.read_text())
    assert report["status"] == "ok" and report["bundle"]["path"] == str(bundle)
    assert not (bundle / "report.json").exists()


# ------------------------------------------------------------------ a failing self-check

def test_self_check_failure_is_recorded(onnx_bundle, copy_bundle, hx):
    bundle = copy_bundle(onnx_bundle)
    with np.load(bundle / "samples.npz") as z:
        arrays = {k: z[k] for k in z.files}
    # Negated logits: far outside atol, and the top-1 class changes for every sample.
    arrays["expected.logits"] = -arrays["expected.logits"]
    np.savez(bundle / "samples.npz", **arrays)
    hx.rehash(bundle)
    proc = hx.run(bundle, *hx.FAST, "--skip-accuracy", "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    report = json.loads((bundle / "report.json").read_text())
    sc = report["self_check"]
    assert sc["passed"] is False and sc["allclose"] is False
    assert sc["max_abs_diff"] > 1e-4
    assert sc["top1_agreement_expected"] < 1.0
    assert sc["top1_agreement_reference"] == 1.0  # the artifact itself is fine
    assert report["latency"]["n"] >= hx.RUNS * hx.TRIALS  # measured anyway; the gate decides
    assert report["accuracy"]["skipped"] is True and report["accuracy"]["value"] is None
