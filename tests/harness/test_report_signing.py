"""Reports you can trust, end to end with real files: the harness signs its report with a device key
(--sign-key), and `edgekit gate --device-pubkey / --bundle` refuses (exit 2, one line) a report that is
unsigned, signed by another key, edited after signing, or measured on another bundle."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from edgekit.cli import main
from edgekit.errors import ReportError
from edgekit.gate import gate

# Quick settings: every refusal happens before or after the figures, so a few runs are enough.
QUICK = ["--runs", "5", "--warmup", "1", "--min-seconds", "0", "--warmup-seconds", "0", "--trials", "1",
         "--skip-robustness", "--quiet"]


@pytest.fixture(scope="module")
def device_keys(tmp_path_factory):
    """Two key pairs: the device's and another one (a forger's, or another device's)."""
    from edgekit.trust.sign import keygen
    d = tmp_path_factory.mktemp("keys")
    return {"device": keygen(d / "device"), "other": keygen(d / "other")}


@pytest.fixture(scope="module")
def signed(onnx_bundle, device_keys, tmp_path_factory, hx):
    """One real signed run of a private copy of the bundle: (bundle dir, report path)."""
    root = tmp_path_factory.mktemp("signed")
    bundle = root / onnx_bundle.name
    shutil.copytree(onnx_bundle, bundle)
    out = root / "r.json"
    proc = hx.run(bundle, *QUICK, "--out", str(out), "--sign-key", str(device_keys["device"][0]))
    assert proc.returncode == 0, proc.stderr
    return bundle, out


def gate_cli(capsys, *args) -> tuple[int, list[str]]:
    rc = main(["gate", *map(str, args)])
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    return rc, err.splitlines()


def refused(capsys, *args) -> str:
    rc, lines = gate_cli(capsys, *args)
    assert rc == 2 and len(lines) == 1, (rc, lines)
    assert lines[0].startswith("edgekit: error: ")
    return lines[0]


def edit(src: Path, dst: Path, change) -> Path:
    report = json.loads(src.read_text())
    change(report)
    dst.write_text(json.dumps(report, indent=1))
    return dst


# ---------------------------------------------------------------- signing on the device

def test_harness_signs_the_canonical_report(signed, device_keys, harness_module):
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    from edgekit.trust.sign import key_id, load_public_key, public_raw
    _, out = signed
    report = json.loads(out.read_text())
    sig = report["signature"]
    pub = device_keys["device"][1]
    assert sig["alg"] == "ed25519" and sig["key_id"] == key_id(public_raw(load_public_key(pub)))
    S = harness_module("_ek_sign")
    raw = S.report_signature_bytes(sig)
    message = S.canonical_report(report)
    body = {k: v for k, v in report.items() if k != "signature"}
    assert message == json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    # the same bytes verify with the dev side's cryptography and with the harness's pure-Python RFC 8032
    load_pem_public_key(pub.read_bytes()).verify(raw, message)
    assert S.verify(S.load_public_key(pub), message, raw)
    assert not S.verify(S.load_public_key(pub), message.replace(b'"status":"ok"', b'"status":"OK"'), raw)


def test_signed_report_passes_with_device_pubkey_and_bundle(signed, device_keys, capsys):
    bundle, out = signed
    rc, lines = gate_cli(capsys, out, "--device-pubkey", device_keys["device"][1], "--bundle", bundle)
    assert rc == 0, lines
    result = gate([out], bundles=[bundle], device_pubkeys=[device_keys["device"][1]])
    rows = {c.budget: c for c in result.checks}
    assert rows["report_signature"].status == "pass" and rows["bundle_match"].status == "pass"
    # a second device key given beside the right one changes nothing (one --device-pubkey per device)
    rc, _ = gate_cli(capsys, out, "--device-pubkey", device_keys["other"][1],
                     "--device-pubkey", device_keys["device"][1])
    assert rc == 0


def test_unsigned_report_is_refused(signed, device_keys, tmp_path, capsys):
    _, out = signed
    unsigned = edit(out, tmp_path / "unsigned.json", lambda r: r.pop("signature"))
    msg = refused(capsys, unsigned, "--device-pubkey", device_keys["device"][1])
    assert f"{unsigned}: not signed" in msg and "--sign-key" in msg


def test_report_edited_after_signing_is_refused(signed, device_keys, tmp_path, capsys):
    _, out = signed
    faster = edit(out, tmp_path / "edited.json", lambda r: r["latency"].update(p95=r["latency"]["p95"] / 2))
    msg = refused(capsys, faster, "--device-pubkey", device_keys["device"][1])
    assert f"{faster}: signature does not verify with {device_keys['device'][1]}" in msg
    assert "edited after signing" in msg
    # even a change the gate never reads, or a re-ordered / re-indented file, is judged on content:
    same = edit(out, tmp_path / "reindented.json", lambda r: None)
    assert gate_cli(capsys, same, "--device-pubkey", device_keys["device"][1])[0] == 0
    host = edit(out, tmp_path / "host.json", lambda r: r["environment"].update(hostname="elsewhere"))
    assert "signature does not verify" in refused(capsys, host, "--device-pubkey", device_keys["device"][1])


def test_forged_reports_are_refused(signed, device_keys, tmp_path, harness_module, capsys):
    S = harness_module("_ek_sign")
    _, out = signed
    forger = S.load_private_key(device_keys["other"][0])

    def resign(report):  # a faster figure, properly signed -- with the forger's key
        report["latency"]["p95"] = 0.001
        report["signature"] = S.sign_report(report, forger)
    forged = edit(out, tmp_path / "forged.json", resign)
    msg = refused(capsys, forged, "--device-pubkey", device_keys["device"][1])
    assert "signed by key id" in msg and "not by --device-pubkey" in msg

    def claim_device(report):  # ... and claiming the device's key id
        kid = report["signature"]["key_id"]
        resign(report)
        report["signature"]["key_id"] = kid
    forged = edit(out, tmp_path / "forged-id.json", claim_device)
    assert "signature does not verify" in refused(capsys, forged, "--device-pubkey", device_keys["device"][1])
    broken = edit(out, tmp_path / "short.json", lambda r: r["signature"].update(value="AAAA"))
    assert "signature.value holds 3 bytes" in refused(capsys, broken, "--device-pubkey", device_keys["device"][1])


def test_an_unsigned_baseline_is_refused_too(signed, device_keys):
    _, out = signed
    report = json.loads(out.read_text())
    baseline = json.loads(out.read_text())
    del baseline["signature"]
    with pytest.raises(ReportError, match=r"baseline\[0\]: not signed"):
        gate([report], baseline=[baseline], device_pubkeys=[device_keys["device"][1]])


# ---------------------------------------------------------------- --bundle DIR

def other_build(bundle: Path, dst: Path, hx, name: str | None = None) -> Path:
    """A copy of `bundle` that is another build: a new label (and optionally another name)."""
    shutil.copytree(bundle, dst)
    m = json.loads((dst / "manifest.json").read_text())
    m["bundle"]["label"] = "v2"
    if name:
        m["bundle"]["name"] = name
    (dst / "manifest.json").write_text(json.dumps(m, indent=1))
    hx.rehash(dst)
    return dst


def test_report_of_another_bundle_is_refused(signed, tmp_path, hx, capsys):
    bundle, out = signed
    other = other_build(bundle, tmp_path / bundle.name, hx)
    msg = refused(capsys, out, "--bundle", other)
    assert f"{out} was measured on bundle sha256 " in msg and f"not {other} (" in msg
    # the same bundle, edited after the run (its files no longer match its manifest): refused too
    altered = tmp_path / "altered"
    shutil.copytree(bundle, altered)
    with open(altered / "model.onnx", "ab") as f:
        f.write(b"\0")
    assert "model.onnx sha256 mismatch" in refused(capsys, out, "--bundle", altered)
    # a report whose recorded model hash was edited, the manifest hash left alone
    model = edit(out, tmp_path / "model.json", lambda r: r["bundle"].update(model_sha256="0" * 64))
    assert "bundle.model_sha256 is 000000000000..." in refused(capsys, model, "--bundle", bundle)


def test_several_reports_are_matched_to_bundles_by_name(signed, tmp_path, hx, capsys):
    bundle, out = signed
    second = other_build(bundle, tmp_path / "second", hx, name="x86-test-b")
    out2 = tmp_path / "r2.json"
    proc = hx.run(second, *QUICK, "--out", str(out2))
    assert proc.returncode == 0, proc.stderr
    assert gate_cli(capsys, out, out2, "--bundle", second, "--bundle", bundle)[0] == 0
    msg = refused(capsys, out, out2, "--bundle", bundle)
    assert f"{out2}: measured bundle 'x86-test-b', which is none of the --bundle folders given (x86-test)" in msg
    msg = refused(capsys, out, "--bundle", bundle, "--bundle", second)
    assert f"--bundle {second}: no report of bundle 'x86-test-b'" in msg
    twin = other_build(bundle, tmp_path / "twin", hx)
    assert "are both bundle 'x86-test'" in refused(capsys, out, out2, "--bundle", bundle, "--bundle", twin)


# ---------------------------------------------------------------- --sign-key refusals

def test_sign_key_problems_fail_in_one_line_before_measuring(onnx_bundle, device_keys, tmp_path, hx):
    out = tmp_path / "r.json"
    cases = [(device_keys["device"][1], "is a public key"), (tmp_path / "none.key", "no such private key file"),
             (tmp_path, "is a folder")]
    garbage = tmp_path / "garbage.key"
    garbage.write_text("-----BEGIN PRIVATE KEY-----\nnot base64\n-----END PRIVATE KEY-----\n")
    cases.append((garbage, "not a PEM private key"))
    for key, words in cases:
        proc = hx.run(onnx_bundle, *QUICK, "--out", str(out), "--sign-key", str(key))
        err = proc.stderr.strip()
        assert proc.returncode == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
        assert err.startswith("harness: error: ") and words in err, err
        assert not out.exists()


def test_sign_key_without_cryptography_names_the_package(onnx_bundle, device_keys, tmp_path, hx):
    # A device without `cryptography`: a package of that name that fails to import shadows the real one.
    fake = tmp_path / "site"
    (fake / "cryptography").mkdir(parents=True)
    (fake / "cryptography" / "__init__.py").write_text("raise ImportError('no cryptography on this device')\n")
    env = dict(os.environ, PYTHONPATH=str(fake))
    out = tmp_path / "r.json"
    proc = hx.run(onnx_bundle, *QUICK, "--out", str(out), "--sign-key", str(device_keys["device"][0]), env=env)
    err = proc.stderr.strip()
    assert proc.returncode == 2 and len(err.splitlines()) == 1, err
    assert "pip install cryptography" in err and not out.exists()
    # without --sign-key the same device measures as before: cryptography stays optional
    proc = hx.run(onnx_bundle, *QUICK, "--out", str(out), env=env)
    assert proc.returncode == 0, proc.stderr
    assert "signature" not in json.loads(out.read_text())


def test_bench_passes_sign_key_through(onnx_bundle, device_keys, tmp_path, capsys):
    bundle = tmp_path / onnx_bundle.name
    shutil.copytree(onnx_bundle, bundle)
    out = tmp_path / "bench.json"
    rc = main(["bench", str(bundle), "--out", str(out), "--runs", "5", "--warmup", "1", "--min-seconds", "0",
               "--warmup-seconds", "0", "--trials", "1", "--sign-key", str(device_keys["device"][0])])
    assert rc == 0, capsys.readouterr().err
    assert json.loads(out.read_text())["signature"]["alg"] == "ed25519"
    assert gate_cli(capsys, out, "--device-pubkey", device_keys["device"][1], "--bundle", bundle)[0] == 0
    devices = tmp_path / "devices.toml"
    devices.write_text('[[device]]\nname = "here"\ntransport = "local"\ntarget = "x86-test"\n')
    rc = main(["bench", str(bundle), "--devices", str(devices), "--out", str(tmp_path / "fleet"),
               "--sign-key", str(device_keys["device"][0])])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "keep a key on each device" in err, err


def test_device_pubkey_file_problems_are_one_line(signed, device_keys, tmp_path, capsys):
    _, out = signed
    assert "no such public key file" in refused(capsys, out, "--device-pubkey", tmp_path / "none.pub")
    assert "is a private key" in refused(capsys, out, "--device-pubkey", device_keys["device"][0])


def test_canonical_bytes_do_not_depend_on_key_order_or_layout(harness_module):
    S = harness_module("_ek_sign")
    a = {"b": [1, 2.5, None], "a": {"y": "é", "x": True}, "signature": {"value": "ignored"}}
    b = json.loads(json.dumps({"a": {"x": True, "y": "é"}, "b": [1, 2.5, None]}, indent=4))
    assert S.canonical_report(a) == S.canonical_report(b) == b'{"a":{"x":true,"y":"\\u00e9"},"b":[1,2.5,null]}'
    with pytest.raises(ValueError):
        S.canonical_report({"x": float("nan")})
    assert sys.modules["_ek_sign"] is S
