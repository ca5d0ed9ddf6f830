"""edgekit search (issue 16) on the digits CNN: real conversions, real benchmarks on this host, a real
Optuna study in SQLite; small spaces and short benchmarks keep each search under a minute."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("optuna", reason="search extra not installed (pip install 'edgekit[search]')")

from ektest import REPO, assert_one_line_error, run_cli  # noqa: E402

FAST = ["--runs", "60", "--min-seconds", "0.2", "--bench-trials", "1"]
SPACE = 'runtime = ["onnxruntime", "openvino"]\nprecision = ["int8", "fp32"]\nper_channel = [true]\n' \
        'student = ["none"]\nprune_ratio = [0.0]\n'


def _args(ex, out, space, *more):
    return ["search", ex["model"], "--target", "x86-avx2", "--calibration", ex["calibration"], "--validation",
            ex["validation"], "--out", out, "--space", space, *FAST, *more]


@pytest.fixture
def space(tmp_path):
    p = tmp_path / "space.toml"
    p.write_text(SPACE)
    return p


def test_search_finds_the_fastest_feasible_bundle(digits_example, tmp_path, space):
    out = tmp_path / "s"
    proc = run_cli(*_args(digits_example, out, space, "--trials", "4", "--seed", "1"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads((out / "search.json").read_text())
    t = doc["targets"]["x86-avx2"]
    rows = t["trials"]
    assert [r["index"] for r in rows] == [0, 1, 2, 3]
    # the profile's own recipe goes first
    assert rows[0]["params"] == {"runtime": "onnxruntime", "precision": "int8", "per_channel": True, "threads": 2,
                                 "student": "none", "prune_ratio": 0.0, "vocab": False}
    measured = [r for r in rows if r["status"] == "ok" and "repeat_of" not in r]
    feasible = [r for r in measured if r["feasible"]]
    best = t["best"]
    assert best is not None and feasible
    fastest = min(feasible, key=lambda r: (r["objectives"]["latency_p95_ucb_ms"], r["objectives"]["model_size_mb"]))
    assert best["trial"] == fastest["index"]
    for r in measured:  # every budget judged, accuracy on the tuning split
        assert {"latency_p95_ms", "peak_memory_mb", "model_size_mb", "load_time_ms"} <= set(r["figures"])
        assert "accuracy_drop_tuning" in r["figures"] and r["measured_on"].startswith("this host")
        assert r["feasible"] == all(v <= 0 for v in r["constraints"].values())
    assert set(t["pareto"]) <= {r["index"] for r in measured} and t["pareto"]
    # the best bundle is an ordinary, verified bundle with its held-out figure
    from edgekit.bundle import verify
    verify(Path(best["bundle"]))
    assert best["held_out"]["n"] > 0 and (Path(best["bundle"]) / "manifest.json").is_file()
    page = (out / "search.html").read_text()
    assert "<svg" in page and "p95 budget" in page and "size budget" in page


def test_nothing_fits_names_the_nearest_miss_and_exits_1(digits_example, tmp_path, space):
    from edgekit.targets import load_targets
    src = load_targets(["x86-avx2"])[0].path
    prof = tmp_path / "tight.toml"
    text = Path(src).read_text().replace('name = "x86-avx2"', 'name = "tight"')
    prof.write_text(text.replace("latency_p95_ms = 20.0", "latency_p95_ms = 0.0001"))
    out = tmp_path / "s"
    args = _args(digits_example, out, space, "--trials", "2")
    args[args.index("x86-avx2")] = str(prof)
    proc = run_cli(*args)
    assert proc.returncode == 1, proc.stderr[-3000:]
    t = json.loads((out / "search.json").read_text())["targets"]["tight"]
    assert t["best"] is None and not (out / "best" / "tight").exists()
    miss = t["nearest_miss"]["per_budget"]["latency_p95_ms"]
    assert miss["over_by"] > 0 and miss["trial"] in {r["index"] for r in t["trials"]}
    assert "none fits" in proc.stdout and "latency_p95_ms over by" in proc.stdout


@pytest.mark.parametrize("content, needles", [
    ('precision = []\n', ["space.toml", "precision = [] leaves nothing to try"]),
    ('runtime = ["litert"]\n', ["space.toml", "runtime 'litert' cannot run on target x86-avx2"]),
    ('student = ["layers:0,2"]\nprune_ratio = [0.0]\n', ["space.toml", "pass --train DATA"]),
    ('vocab = [true]\n', ["space.toml", "vocab"]),
    ('colour = ["red"]\n', ["space.toml", "unknown key 'colour'"]),
    ('runtime = ["onnxruntime"]\nprecision = ["fp16"]\n', ["space.toml", "precision 'fp16' is offered by none"]),
])
def test_bad_space_is_one_line(digits_example, tmp_path, content, needles):
    sp = tmp_path / "space.toml"
    sp.write_text(content)
    proc = run_cli(*_args(digits_example, tmp_path / "s", sp))
    assert_one_line_error(proc, *needles)
    assert not (tmp_path / "s" / "best").exists()


def test_storage_that_cannot_be_opened_is_one_line(digits_example, tmp_path, space):
    proc = run_cli(*_args(digits_example, tmp_path / "s", space, "--storage", "sqlite:////nonexistent/dir/x.db"))
    assert_one_line_error(proc, "--storage sqlite:////nonexistent/dir/x.db", "cannot open")


def test_unreachable_ray_address_is_one_line(digits_example, tmp_path, space):
    pytest.importorskip("ray", reason="search extra not installed (pip install 'edgekit[search]')")
    proc = run_cli(*_args(digits_example, tmp_path / "s", space, "--ray", "127.0.0.1:9"))
    assert_one_line_error(proc, "--ray 127.0.0.1:9", "no Ray head answers")
    assert not (tmp_path / "s" / "trials").exists()


def _finished(db: Path) -> int:
    import optuna
    try:
        s = optuna.load_study(study_name="edgekit-search-x86-avx2", storage=f"sqlite:///{db}")
    except Exception:
        return 0
    return sum(t.state.is_finished() and t.state != optuna.trial.TrialState.FAIL for t in s.get_trials())


@pytest.mark.slow
def test_killed_search_resumes_to_the_same_ledger(digits_example, tmp_path, space):
    """Random sampler: the settings asked depend on (seed, ledger index) only, so a search killed after
    two trials and resumed asks for the same ones as a search never stopped."""
    from edgekit.search.ledger import comparable
    a, b = tmp_path / "a", tmp_path / "b"
    proc = run_cli(*_args(digits_example, a, space, "--trials", "5", "--sampler", "random", "--seed", "3"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    cmd = [sys.executable, "-m", "edgekit", *map(str, _args(digits_example, b, space, "--trials", "5", "--sampler",
                                                           "random", "--seed", "3"))]
    p = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    t0 = time.time()
    while _finished(b / "search.db") < 2 and time.time() - t0 < 300 and p.poll() is None:
        time.sleep(0.5)
    os.killpg(p.pid, signal.SIGKILL)  # mid-trial, as a crash would
    p.wait()
    assert not (b / "search.json").exists()
    proc = run_cli(*_args(digits_example, b, space, "--trials", "5", "--sampler", "random", "--seed", "3"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    la, lb = (json.loads((d / "search.json").read_text()) for d in (a, b))
    assert comparable(la) == comparable(lb)
    assert len(lb["targets"]["x86-avx2"]["trials"]) == 5


@pytest.mark.slow
def test_workers_share_one_study(digits_example, tmp_path, space):
    out = tmp_path / "s"
    proc = run_cli(*_args(digits_example, out, space, "--trials", "2", "--workers", "2"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads((out / "search.json").read_text())["targets"]["x86-avx2"]["trials"]
    # both workers finished a trial of the one study; a worker may start one more before it sees the count
    assert len(rows) >= 2 and len({r["index"] for r in rows}) == len(rows)


@pytest.mark.slow
def test_ray_local_head_builds_the_trials(digits_example, tmp_path, space):
    pytest.importorskip("ray", reason="search extra not installed (pip install 'edgekit[search]')")
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ray = Path(sys.executable).parent / "ray"
    env = {**os.environ, "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0"}
    start = subprocess.run([str(ray), "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port),
                            "--num-cpus", "1", "--include-dashboard", "false", "--disable-usage-stats"],
                           capture_output=True, text=True, timeout=180, env=env)
    assert start.returncode == 0, start.stderr[-2000:]
    try:
        out = tmp_path / "s"
        proc = run_cli(*_args(digits_example, out, space, "--trials", "2", "--ray", f"127.0.0.1:{port}"))
        assert proc.returncode == 0, proc.stderr[-3000:]
        rows = json.loads((out / "search.json").read_text())["targets"]["x86-avx2"]["trials"]
        built = [r for r in rows if r["status"] == "ok" and "repeat_of" not in r]
        assert built and all(r["built_on"] == "ray" for r in built)
    finally:
        subprocess.run([str(ray), "stop", "--force"], capture_output=True, timeout=120, env=env)


def test_devices_bench_each_candidate_on_a_device_of_its_target(digits_example, tmp_path, space):
    inv = tmp_path / "devices.toml"
    inv.write_text(f'[[device]]\nname = "here"\ntransport = "local"\ntarget = "x86-avx2"\nworkdir = "{tmp_path / "dev"}"\n')
    out = tmp_path / "s"
    proc = run_cli(*_args(digits_example, out, space, "--trials", "2", "--devices", inv))
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads((out / "search.json").read_text())["targets"]["x86-avx2"]["trials"]
    measured = [r for r in rows if r["status"] == "ok" and "repeat_of" not in r]
    assert measured and all(r["measured_on"] == "device here" for r in measured)
    assert all(Path(r["report"]).is_file() for r in measured)


def test_a_best_that_breaks_the_budget_on_held_out_data_is_said_out_loud():
    from edgekit.search.ledger import held_out_warning
    from edgekit.targets import load_targets
    t = load_targets(["x86-avx2"])[0]   # max_accuracy_drop = 0.01
    best = {"figures": {"accuracy_drop_tuning": 0.0}, "held_out": {"metric": "top1", "value": 0.83, "source": 0.90,
                                                                   "n": 300}}
    w = held_out_warning(best, t)
    assert "held-out drop is 7.00 pts (300 items)" in w and "1-point budget" in w
    best["held_out"]["value"] = 0.895
    assert held_out_warning(best, t) is None
