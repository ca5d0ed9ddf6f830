"""Fleet runs on this machine (transport = "local"): reports per device x bundle, a failing device
that costs the others nothing, the timeout killing the harness's whole process group."""

from __future__ import annotations

import json
import sys
import time

from devtest import processes_mentioning as _processes_mentioning
from devtest import FAST, write_devices
from edgekit.devices.fleet import fleet_bench
from edgekit.report.load import load_report


def test_local_fleet_reports_and_failures(digits_bundles, tmp_path):
    work = tmp_path / "work"
    f = write_devices(tmp_path / "devices.toml",
                      {"name": "here", "transport": "local", "target": "x86-avx2", "python": sys.executable,
                       "workdir": str(work), "labels": ["ci"]},
                      {"name": "bare", "transport": "local", "target": "x86-avx2", "python": "/usr/bin/python3",
                       "workdir": str(work), "labels": ["ci"]},
                      {"name": "vnni-box", "transport": "local", "target": "x86-vnni", "labels": ["ci"]})
    out = tmp_path / "reports"
    bundles = digits_bundles["int8"].path.parent  # the folder: x86-avx2 (int8) and x86-avx2-fp32
    res = fleet_bench(bundles, f, "ci", out=out, parallel=2, progress=False, table=False, **FAST)
    rows = {(r.device, r.bundle): r for r in res.results}
    assert set(rows) == {("here", "x86-avx2"), ("here", "x86-avx2-fp32"), ("bare", "x86-avx2"),
                         ("bare", "x86-avx2-fp32")}
    assert res.devices_without_bundle == ["vnni-box"]  # no x86-vnni bundle to run there
    for b in ("x86-avx2", "x86-avx2-fp32"):
        r = rows[("here", b)]
        assert r.status == "ok", r.error
        rep = load_report(out / "here" / f"{b}.json")
        assert rep["bundle"]["name"] == b and rep["self_check"]["passed"]
        assert rep["robustness"]["passed"] and rep["robustness"]["crashed"] == []
        assert r.summary["robustness"] is True and r.summary["accuracy"] == rep["accuracy"]["value"]
        bad = rows[("bare", b)]
        assert bad.status == "failed" and bad.kind == "runtime-missing" and "pip install numpy" in bad.error
        assert not (out / "bare" / f"{b}.json").exists()
    assert list(work.iterdir()) == []  # every work folder removed
    doc = json.loads((out / "fleet.json").read_text())
    assert doc["ok"] is False and len(doc["results"]) == 4
    assert {d["name"] for d in doc["devices"]} == {"here", "bare", "vnni-box"}


def test_timeout_kills_the_harness_and_its_trials(digits_bundles, tmp_path):
    work = tmp_path / "work"
    f = write_devices(tmp_path / "devices.toml",
                      {"name": "here", "transport": "local", "target": "x86-avx2", "workdir": str(work)})
    t0 = time.time()
    res = fleet_bench(digits_bundles["int8"].path, f, out=tmp_path / "out", retries=1, retry_delay=0.1,
                      timeout=2, progress=False, table=False, **{**FAST, "min_seconds": 120.0})
    r = res.results[0]
    assert r.status == "failed" and r.kind == "timeout" and r.attempts == 2, (r.kind, r.error)
    assert time.time() - t0 < 30
    assert not (tmp_path / "out" / "here" / "x86-avx2.json").exists()
    assert _processes_mentioning(str(work)) == [] and list(work.iterdir()) == []


def test_signed_bundle_checked_on_the_device_with_pubkey(bundle_copy, tmp_path):
    from ektest import run_cli
    b = bundle_copy("int8")
    for prefix in ("k", "other"):
        assert run_cli("keygen", tmp_path / prefix).returncode == 0
    proc = run_cli("sign", b, "--key", tmp_path / "k.key")
    assert proc.returncode == 0, proc.stderr
    f = write_devices(tmp_path / "devices.toml", {"name": "here", "transport": "local", "target": "x86-avx2",
                                                  "workdir": str(tmp_path / "work")})
    res = fleet_bench(b, f, out=tmp_path / "ok", pubkey=tmp_path / "k.pub", progress=False, table=False, **FAST)
    assert res.ok, res.results[0].error
    rep = load_report(tmp_path / "ok" / "here" / f"{b.name}.json")
    assert rep["bundle"]["signature"]["checked"] and rep["bundle"]["signature"]["verified"]
    res = fleet_bench(b, f, out=tmp_path / "bad", pubkey=tmp_path / "other.pub", progress=False, table=False,
                      **FAST)
    r = res.results[0]
    assert r.status == "failed" and r.kind == "bundle" and "manifest.sig" in r.error, r.error
    assert not (tmp_path / "bad" / "here" / f"{b.name}.json").exists()
