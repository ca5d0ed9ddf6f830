"""Signed bundles: keygen, sign, verify (edgekit side), and the harness's own pure-Python check."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from edgekit.errors import BundleError, ConfigError
from edgekit.trust.sign import SIGNATURE, key_id, keygen, load_public_key, public_raw, sign_bundle, verify_bundle
from ektest import REPO, assert_one_line_error, run_cli

HARNESS = REPO / "edgekit" / "harness"
QUICK = ["--runs", "5", "--warmup", "1", "--min-seconds", "0", "--warmup-seconds", "0", "--trials", "1",
         "--skip-accuracy", "--quiet"]


def harness_module(name: str):
    sys.path.insert(0, str(HARNESS))
    try:
        import importlib
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(HARNESS))


def run_harness(bundle: Path, *args, out: Path | None = None):
    out = out or bundle.parent / f"{bundle.name}-report.json"
    return subprocess.run([sys.executable, str(bundle / "harness" / "run.py"), "--out", str(out), *QUICK,
                           *map(str, args)], capture_output=True, text=True, timeout=300)


def harness_error(proc, *needles):
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    err = proc.stderr.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith("harness: error:"), err
    for n in needles:
        assert n in err, (n, err)


# ---------------------------------------------------------------- keys

def test_keygen_writes_private_0600_and_public_pem(tmp_path):
    priv, pub = keygen(tmp_path / "release")
    assert priv.name == "release.key" and pub.name == "release.pub"
    assert stat.S_IMODE(priv.stat().st_mode) == 0o600
    assert b"BEGIN PRIVATE KEY" in priv.read_bytes() and b"BEGIN PUBLIC KEY" in pub.read_bytes()
    with pytest.raises(ConfigError, match="already exists"):
        keygen(tmp_path / "release")


def test_keygen_cli(tmp_path):
    proc = run_cli("keygen", tmp_path / "k")
    assert proc.returncode == 0, proc.stderr
    assert "key id" in proc.stdout and (tmp_path / "k.key").is_file()
    assert_one_line_error(run_cli("keygen", tmp_path / "k"), "already exists")
    assert_one_line_error(run_cli("keygen", tmp_path / "nowhere" / "k"), "no such folder")


# ---------------------------------------------------------------- edgekit side

def test_sign_and_verify(fake_bundle, keys):
    (priv, pub), _ = keys
    sig = sign_bundle(fake_bundle, priv)
    assert sig == fake_bundle / SIGNATURE and len(sig.read_bytes()) == 64
    v = verify_bundle(fake_bundle, pub)
    assert v.signed and v.signature_checked and v.key_id == key_id(public_raw(load_public_key(pub)))
    unchecked = verify_bundle(fake_bundle)
    assert unchecked.signed and not unchecked.signature_checked and "not checked" in unchecked.warnings[0]
    sign_bundle(fake_bundle, priv)            # re-signing replaces the signature atomically
    assert not [p for p in fake_bundle.iterdir() if p.name.startswith(".manifest.sig")]


def test_tampered_model_file_is_refused(fake_bundle, keys):
    (priv, pub), _ = keys
    sign_bundle(fake_bundle, priv)
    with open(fake_bundle / "model.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(BundleError, match="model.onnx sha256 mismatch"):
        verify_bundle(fake_bundle, pub)
    with pytest.raises(BundleError, match="model.onnx sha256 mismatch"):
        sign_bundle(fake_bundle, priv)        # a tampered bundle is never signed


def test_tampered_manifest_is_refused(fake_bundle, keys):
    (priv, pub), _ = keys
    sign_bundle(fake_bundle, priv)
    m = fake_bundle / "manifest.json"
    m.write_text(m.read_text().replace('"MIT"', '"Proprietary"'))
    verify_bundle(fake_bundle)                # the hashes still match: only the signature can tell
    with pytest.raises(BundleError, match="signature does not verify"):
        verify_bundle(fake_bundle, pub)


def test_swapped_model_with_rehashed_manifest_is_refused(fake_bundle, keys):
    (priv, pub), _ = keys
    sign_bundle(fake_bundle, priv)
    (fake_bundle / "model.onnx").write_bytes(b"evil model")
    m = json.loads((fake_bundle / "manifest.json").read_text())
    m["files"]["model.onnx"] = hashlib.sha256(b"evil model").hexdigest()
    (fake_bundle / "manifest.json").write_text(json.dumps(m, indent=2) + "\n")
    with pytest.raises(BundleError, match="signature does not verify"):
        verify_bundle(fake_bundle, pub)


def test_wrong_public_key_is_refused(fake_bundle, keys):
    (priv, _), (_, other_pub) = keys
    sign_bundle(fake_bundle, priv)
    kid = key_id(public_raw(load_public_key(other_pub)))
    with pytest.raises(BundleError, match=f"signature does not verify with .*b.pub \\(key id {kid}\\)"):
        verify_bundle(fake_bundle, other_pub)


def test_missing_signature_is_refused_when_a_key_is_given(fake_bundle, keys):
    (_, pub), _ = keys
    with pytest.raises(BundleError, match="not signed"):
        verify_bundle(fake_bundle, pub)
    assert not verify_bundle(fake_bundle).signed


def test_missing_or_wrong_kind_of_key(fake_bundle, keys, tmp_path):
    (priv, pub), _ = keys
    sign_bundle(fake_bundle, priv)
    with pytest.raises(BundleError, match="no such public key file"):
        verify_bundle(fake_bundle, tmp_path / "nope.pub")
    with pytest.raises(BundleError, match="is a private key"):
        verify_bundle(fake_bundle, priv)
    with pytest.raises(ConfigError, match="no such private key file"):
        sign_bundle(fake_bundle, tmp_path / "nope.key")
    with pytest.raises(ConfigError, match="is a public key"):
        sign_bundle(fake_bundle, pub)
    junk = tmp_path / "junk.pub"
    junk.write_text("hello")
    with pytest.raises(BundleError, match="not a PEM public key"):
        verify_bundle(fake_bundle, junk)


def test_truncated_signature(fake_bundle, keys):
    (priv, pub), _ = keys
    sign_bundle(fake_bundle, priv)
    (fake_bundle / SIGNATURE).write_bytes((fake_bundle / SIGNATURE).read_bytes()[:40])
    with pytest.raises(BundleError, match="40 bytes"):
        verify_bundle(fake_bundle, pub)


def test_unlisted_code_in_the_harness_is_refused(fake_bundle, keys):
    (priv, pub), _ = keys
    sign_bundle(fake_bundle, priv)
    (fake_bundle / "harness" / "numpy.py").write_text("import os  # would shadow numpy\n")
    with pytest.raises(BundleError, match="harness/numpy.py"):
        verify_bundle(fake_bundle, pub)
    (fake_bundle / "harness" / "numpy.py").unlink()
    (fake_bundle / "report.json").write_text("{}")           # the harness's default report: allowed
    (fake_bundle / "notes.txt").write_text("x")
    v = verify_bundle(fake_bundle, pub)
    assert v.signature_checked and "notes.txt" in v.warnings[0] and "report.json" not in v.warnings[0]


def test_verify_cli(fake_bundle, keys):
    (priv, pub), (_, other) = keys
    proc = run_cli("sign", fake_bundle, "--key", priv)
    assert proc.returncode == 0, proc.stderr
    proc = run_cli("verify", fake_bundle, "--pubkey", pub)
    assert proc.returncode == 0 and "signature verified" in proc.stdout, proc.stdout + proc.stderr
    proc = run_cli("verify", fake_bundle, "--pubkey", pub, "--json")
    assert json.loads(proc.stdout)["signature_verified"] is True
    assert_one_line_error(run_cli("verify", fake_bundle, "--pubkey", other), "signature does not verify")
    os.unlink(fake_bundle / SIGNATURE)
    assert_one_line_error(run_cli("verify", fake_bundle, "--pubkey", pub), "not signed")
    assert_one_line_error(run_cli("verify", fake_bundle, "--pubkey", fake_bundle / "missing.pub"), "no such public key")


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")
def test_signature_is_plain_ed25519_openssl_can_check(fake_bundle, keys):
    (priv, pub), _ = keys
    sign_bundle(fake_bundle, priv)
    proc = subprocess.run(["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", str(pub), "-rawin",
                           "-in", str(fake_bundle / "manifest.json"), "-sigfile", str(fake_bundle / SIGNATURE)],
                          capture_output=True, text=True)
    if "rawin" in proc.stderr and proc.returncode:
        pytest.skip("this openssl has no -rawin (OpenSSL < 3)")
    assert proc.returncode == 0 and "Success" in proc.stdout, proc.stdout + proc.stderr


def test_convert_sign_wrapper_signs_every_bundle_it_made(digits_bundles, keys, tmp_path):
    """`convert --sign` (the wrapper around cli.cmd_convert), with the conversion itself replaced by
    a copy of already converted bundles: the names signed are the ones convert.py gives."""
    from edgekit.trust.commands import wrap_convert
    (priv, pub), _ = keys
    out = tmp_path / "out"

    def fake_convert(args):
        for r in digits_bundles.values():
            shutil.copytree(r.path, out / r.name)
        return 0

    args = argparse.Namespace(target=["x86-avx2"], targets=None, precision=["fp32", "int8"], out=str(out),
                              sign=str(priv))
    assert wrap_convert(fake_convert)(args) == 0
    for name in ("x86-avx2", "x86-avx2-fp32"):
        assert verify_bundle(out / name, pub).signature_checked
    args.sign = str(tmp_path / "missing.key")
    with pytest.raises(ConfigError, match="no such private key"):
        wrap_convert(lambda a: pytest.fail("converted with a missing key"))(args)


# ---------------------------------------------------------------- harness side (pure Python)

def test_pure_python_ed25519_matches_rfc8032_and_cryptography():
    from cryptography.hazmat.primitives.asymmetric import ed25519
    S = harness_module("_ek_sign")
    sk = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")   # RFC 8032 7.1 test 1
    pk = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
    sig = bytes.fromhex("e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46b"
                        "d25bf5f0595bbe24655141438e7a100b")
    assert S.verify(pk, b"", sig)
    key = ed25519.Ed25519PrivateKey.from_private_bytes(sk)
    assert key.sign(b"") == sig
    for i, msg in enumerate([b"a", b"manifest" * 100, os.urandom(1000)]):
        k = ed25519.Ed25519PrivateKey.generate()
        pub = public_raw(k.public_key())
        s = k.sign(msg)
        assert S.verify(pub, msg, s)
        assert not S.verify(pub, msg + b"x", s)
        bad = bytearray(s)
        bad[i * 7] ^= 1
        assert not S.verify(pub, msg, bytes(bad))
        assert not S.verify(pk, msg, s)
    # s >= group order is rejected (malleability), as are short inputs
    assert not S.verify(pk, b"", sig[:32] + (int.from_bytes(sig[32:], "little") + S._Q).to_bytes(32, "little"))
    assert not S.verify(pk[:31], b"", sig) and not S.verify(pk, b"", sig[:63])


def test_harness_reads_keygen_pem(keys):
    (_, pub), _ = keys
    S = harness_module("_ek_sign")
    assert S.load_public_key(pub) == public_raw(load_public_key(pub))


def test_harness_refuses_before_loading_anything(fake_bundle, keys):
    (priv, pub), (_, other) = keys
    harness_error(run_harness(fake_bundle, "--pubkey", pub), "manifest.sig", "missing")
    sign_bundle(fake_bundle, priv)
    harness_error(run_harness(fake_bundle, "--pubkey", other), "signature does not verify", "key id")
    harness_error(run_harness(fake_bundle, "--pubkey", priv), "is a private key")
    harness_error(run_harness(fake_bundle, "--pubkey", fake_bundle / "none.pub"), "no such public key")
    m = fake_bundle / "manifest.json"
    m.write_text(m.read_text().replace('"MIT"', '"GPL-3.0"'))
    harness_error(run_harness(fake_bundle, "--pubkey", pub), "signature does not verify")


def test_harness_runs_a_signed_bundle_and_records_the_key(bundle_copy, keys, tmp_path):
    (priv, pub), _ = keys
    b = bundle_copy("fp32")
    sign_bundle(b, priv)
    out = tmp_path / "r.json"
    proc = run_harness(b, "--pubkey", pub, out=out)
    assert proc.returncode == 0, proc.stderr
    r = json.loads(out.read_text())
    assert r["bundle"]["signature"] == {"checked": True, "verified": True,
                                        "key_id": key_id(public_raw(load_public_key(pub)))}
    assert r["provenance"]["license"] == "MIT" and len(r["provenance"]["source_sha256"]) == 64
    with open(b / "model.onnx", "ab") as f:   # signature fine, model altered: the hashes catch it
        f.write(b"\0")
    harness_error(run_harness(b, "--pubkey", pub, out=out), "model.onnx")
