"""Signed bundles: Ed25519 over the exact bytes of manifest.json (docs/TRUST.md).

The manifest holds the sha256 of every other file in the bundle, so one signature over its bytes
covers the whole bundle. The signature is the raw 64-byte Ed25519 signature in ``manifest.sig``
beside it (verifiable with OpenSSL 3 too:
``openssl pkeyutl -verify -pubin -inkey KEY.pub -rawin -in manifest.json -sigfile manifest.sig``).

Keys: ``keygen(prefix)`` writes PREFIX.key (PKCS#8 PEM, mode 0600) and PREFIX.pub
(SubjectPublicKeyInfo PEM). The device-side harness checks the same signature in pure Python
(harness/_ek_sign.py) when it is given ``--pubkey``.

Dev side only: needs the ``cryptography`` package (imported inside the functions).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..bundle import MANIFEST, verify as verify_hashes
from ..errors import BundleError, ConfigError

SIGNATURE = "manifest.sig"
SIGNATURE_BYTES = 64
# Files a bundle may hold beyond its manifest's list without being an error: the signature itself
# and reports the harness writes beside the manifest by default.
ALLOWED_EXTRA = (SIGNATURE,)
ALLOWED_EXTRA_PREFIXES = ("report",)


def _serialization():
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError as exc:  # pragma: no cover - a dependency of edgekit
        raise ConfigError("signing needs the 'cryptography' package: pip install cryptography") from exc
    return serialization, ed25519


def key_id(public_raw: bytes) -> str:
    """A short fingerprint of a public key: the first 16 hex digits of sha256(raw 32 bytes)."""
    return hashlib.sha256(public_raw).hexdigest()[:16]


def public_raw(public_key) -> bytes:
    serialization, _ = _serialization()
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600)  # whatever the umask


def keygen(prefix: str | Path, *, overwrite: bool = False) -> tuple[Path, Path]:
    """Write PREFIX.key (private, 0600) and PREFIX.pub; return both paths. Refuses to overwrite."""
    serialization, ed25519 = _serialization()
    prefix = Path(prefix)
    priv, pub = prefix.with_name(prefix.name + ".key"), prefix.with_name(prefix.name + ".pub")
    if not prefix.parent.is_dir():
        raise ConfigError(f"{prefix.parent}: no such folder for the key files")
    for p in (priv, pub):
        if p.exists() and not overwrite:
            raise ConfigError(f"{p}: already exists; refusing to overwrite a key (choose another PREFIX)")
        if p.exists():
            p.unlink()
    key = ed25519.Ed25519PrivateKey.generate()
    _write_private(priv, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    pub.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo))
    return priv, pub


def _read_key_file(path: str | Path, what: str, error: type) -> bytes:
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError as exc:
        raise error(f"{p}: no such {what} file") from exc
    except IsADirectoryError as exc:
        raise error(f"{p}: is a folder; expected a {what} file") from exc
    except OSError as exc:
        raise error(f"{p}: cannot read the {what} ({exc.strerror})") from exc
    return data


def load_private_key(path: str | Path):
    """An Ed25519 private key from a PEM file (as keygen writes); ConfigError otherwise."""
    serialization, ed25519 = _serialization()
    data = _read_key_file(path, "private key", ConfigError)
    if b"PUBLIC KEY" in data:
        raise ConfigError(f"{path}: is a public key; signing needs the private key (PREFIX.key)")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError as exc:
        raise ConfigError(f"{path}: the private key is encrypted; edgekit needs an unencrypted PEM key") from exc
    except (ValueError, Exception) as exc:  # UnsupportedAlgorithm and friends
        raise ConfigError(f"{path}: not a PEM private key ({type(exc).__name__})") from exc
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise ConfigError(f"{path}: not an Ed25519 key ({type(key).__name__}); make one with `edgekit keygen`")
    return key


def load_public_key(path: str | Path):
    """An Ed25519 public key from a PEM file (as keygen writes); BundleError otherwise."""
    serialization, ed25519 = _serialization()
    data = _read_key_file(path, "public key", BundleError)
    if b"PRIVATE KEY" in data:
        raise BundleError(f"{path}: is a private key; verification needs the public key (PREFIX.pub)")
    try:
        key = serialization.load_pem_public_key(data)
    except Exception as exc:
        raise BundleError(f"{path}: not a PEM public key ({type(exc).__name__})") from exc
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise BundleError(f"{path}: not an Ed25519 public key ({type(key).__name__})")
    return key


def unlisted_files(bundle: str | Path, manifest: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(dangerous, other) files in the bundle that its manifest does not list. Dangerous: Python
    code (.py/.pyc, anything under harness/) that the harness could import instead of its own."""
    b = Path(bundle)
    listed = set(manifest.get("files") or {}) | {MANIFEST}
    dangerous, other = [], []
    for p in sorted(b.rglob("*")):
        if not p.is_file():
            continue
        rel = p.relative_to(b).as_posix()
        if rel in listed:
            continue
        if rel.startswith("harness/") or p.suffix in (".py", ".pyc", ".so", ".pth"):
            dangerous.append(rel)
        elif rel not in ALLOWED_EXTRA and not (("/" not in rel) and rel.startswith(ALLOWED_EXTRA_PREFIXES)):
            other.append(rel)
    return dangerous, other


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def sign_bundle(bundle: str | Path, key) -> Path:
    """Sign manifest.json's exact bytes; write manifest.sig atomically (replacing an old one).
    `key` is a path to PREFIX.key or a loaded Ed25519 private key. The bundle is verified first:
    a bundle whose files do not match its manifest is never signed."""
    b = Path(bundle)
    if not isinstance(key, (str, Path)):
        private = key
    else:
        private = load_private_key(key)
    manifest = verify_hashes(b)
    dangerous, _ = unlisted_files(b, manifest)
    if dangerous:
        raise BundleError(f"{b}: files not in the manifest: {', '.join(dangerous)}; refusing to sign")
    data = (b / MANIFEST).read_bytes()
    sig = private.sign(data)
    _atomic_write(b / SIGNATURE, sig)
    return b / SIGNATURE


@dataclass
class Verification:
    bundle: Path
    manifest: dict[str, Any]
    n_files: int
    signed: bool                    # manifest.sig present
    signature_checked: bool         # verified against a trusted public key
    key_id: str | None = None       # of the public key it verified against
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"bundle": str(self.bundle), "files_verified": self.n_files, "signed": self.signed,
                "signature_verified": self.signature_checked, "key_id": self.key_id, "warnings": self.warnings}


def verify_bundle(bundle: str | Path, pubkey: str | Path | None = None) -> Verification:
    """Check every file's sha256 against the manifest, refuse unlisted code, and, with `pubkey`,
    check manifest.sig over manifest.json's bytes. BundleError (one line) on any failure: a
    tampered file or manifest, a wrong, missing or malformed key, a missing or malformed signature.
    Without `pubkey` a present signature is reported as not checked (nothing to check it against)."""
    b = Path(bundle)
    public = load_public_key(pubkey) if pubkey is not None else None  # a missing key fails first
    raw = (b / MANIFEST).read_bytes() if (b / MANIFEST).is_file() else None
    manifest = verify_hashes(b)
    dangerous, other = unlisted_files(b, manifest)
    if dangerous:
        raise BundleError(f"{b}: files not in the manifest (code the harness could load): {', '.join(dangerous)}")
    warnings = [f"files not covered by the manifest (ignored): {', '.join(other)}"] if other else []
    sig_path = b / SIGNATURE
    signed = sig_path.is_file()
    if public is None:
        if signed:
            warnings.append("manifest.sig present but not checked: pass --pubkey KEY.pub")
        return Verification(b, manifest, len(manifest.get("files") or {}), signed, False, None, warnings)
    kid = key_id(public_raw(public))
    if not signed:
        raise BundleError(f"{b}: not signed (no {SIGNATURE}); a public key was given, so an unsigned bundle "
                          f"is refused (sign it: edgekit sign {b} --key PREFIX.key)")
    sig = sig_path.read_bytes()
    if len(sig) != SIGNATURE_BYTES:
        raise BundleError(f"{sig_path}: {len(sig)} bytes; an Ed25519 signature is {SIGNATURE_BYTES}")
    from cryptography.exceptions import InvalidSignature
    if raw != (b / MANIFEST).read_bytes():  # pragma: no cover - changed while we read it
        raise BundleError(f"{b / MANIFEST}: changed while being verified")
    try:
        public.verify(sig, raw)
    except InvalidSignature as exc:
        raise BundleError(f"{b}: signature does not verify with {pubkey} (key id {kid}): signed with another "
                          f"key, or manifest.json was altered after signing") from exc
    return Verification(b, manifest, len(manifest.get("files") or {}), True, True, kid, warnings)

