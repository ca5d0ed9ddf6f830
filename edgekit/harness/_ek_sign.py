"""Ed25519 signature check of manifest.json for the device-side harness (RFC 8032, verify only).

Pure Python and the stdlib: the harness never imports `cryptography`. `edgekit convert --sign KEY`
(or `edgekit sign`) writes manifest.sig = the raw 64-byte Ed25519 signature over the exact bytes of
manifest.json; the manifest lists the sha256 of every other file, so checking the signature and then
the hashes authenticates the whole bundle. run.py calls `verify_manifest` when given --pubkey.

Verification only handles public data (the key, the message, the signature), so a pure-Python,
non-constant-time implementation is fine here. A few ms per bundle.

Signed reports (run.py --sign-key DEVICE.key; docs/TRUST.md): `sign_report` signs
`canonical_report(report)` -- the whole report minus its "signature" key, as json.dumps(sort_keys,
separators=(",", ":"), ASCII, no NaN) -- and the signature goes into the report itself, so it stays
one self-contained file. Signing handles the device's *private* key, so it is not done in the pure
Python above (its big-integer arithmetic takes secret-dependent time): it needs the `cryptography`
package on the device, imported only when --sign-key is given; without it, --sign-key fails with one
line naming `pip install cryptography`. `edgekit gate --device-pubkey` checks the signature on the
dev side with this very `canonical_report` (imported as edgekit.harness._ek_sign), so both sides
always agree on the signed bytes.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

try:
    import _ek_bundle as B          # in a bundle: run.py puts harness/ on sys.path
except ImportError:                 # on the dev side, imported as edgekit.harness._ek_sign (gate)
    from . import _ek_bundle as B

_P = 2 ** 255 - 19
_Q = 2 ** 252 + 27742317777372353535851937790883648493  # group order L
_D = -121665 * pow(121666, _P - 2, _P) % _P
_SQRT_M1 = pow(2, (_P - 1) // 4, _P)
# DER prefix of an Ed25519 SubjectPublicKeyInfo: SEQUENCE { SEQUENCE { OID 1.3.101.112 }, BIT STRING }
_SPKI_PREFIX = bytes.fromhex("302a300506032b6570032100")
SIGNATURE = "manifest.sig"
REPORT_SIGNATURE = "signature"      # the report key that holds the report's own signature
REPORT_ALG = "ed25519"


class SignatureError(B.BundleError):
    """A key or signature is malformed, or the signature does not verify. The harness exits 2."""

    exit_code = 2


def _add(P, Q):
    A = (P[1] - P[0]) * (Q[1] - Q[0]) % _P
    B = (P[1] + P[0]) * (Q[1] + Q[0]) % _P
    C = 2 * P[3] * Q[3] * _D % _P
    D = 2 * P[2] * Q[2] % _P
    E, F, G, H = B - A, D - C, D + C, B + A
    return (E * F % _P, G * H % _P, F * G % _P, E * H % _P)


def _mul(s: int, P):
    R = (0, 1, 1, 0)
    while s > 0:
        if s & 1:
            R = _add(R, P)
        P = _add(P, P)
        s >>= 1
    return R


def _equal(P, Q) -> bool:
    return (P[0] * Q[2] - Q[0] * P[2]) % _P == 0 and (P[1] * Q[2] - Q[1] * P[2]) % _P == 0


def _recover_x(y: int, sign: int):
    if y >= _P:
        return None
    x2 = (y * y - 1) * pow(_D * y * y + 1, _P - 2, _P) % _P
    if x2 == 0:
        return None if sign else 0
    x = pow(x2, (_P + 3) // 8, _P)
    if (x * x - x2) % _P != 0:
        x = x * _SQRT_M1 % _P
    if (x * x - x2) % _P != 0:
        return None
    if (x & 1) != sign:
        x = _P - x
    return x


def _decompress(s: bytes):
    y = int.from_bytes(s, "little")
    sign = y >> 255
    y &= (1 << 255) - 1
    x = _recover_x(y, sign)
    return None if x is None else (x, y, 1, x * y % _P)


_GY = 4 * pow(5, _P - 2, _P) % _P
_GX = _recover_x(_GY, 0)
_G = (_GX, _GY, 1, _GX * _GY % _P)


def verify(public: bytes, message: bytes, signature: bytes) -> bool:
    """RFC 8032 section 5.1.7: True when `signature` is `public`'s Ed25519 signature of `message`."""
    if len(public) != 32 or len(signature) != 64:
        return False
    A = _decompress(public)
    R = _decompress(signature[:32])
    if A is None or R is None:
        return False
    s = int.from_bytes(signature[32:], "little")
    if s >= _Q:
        return False
    h = int.from_bytes(hashlib.sha512(signature[:32] + public + message).digest(), "little") % _Q
    return _equal(_mul(s, _G), _add(R, _mul(h, A)))


def key_id(public: bytes) -> str:
    """Same fingerprint as edgekit.trust.sign.key_id: sha256 of the raw key, 16 hex digits."""
    return hashlib.sha256(public).hexdigest()[:16]


def load_public_key(path: Path) -> bytes:
    """The raw 32-byte key from a PEM "PUBLIC KEY" file (as `edgekit keygen` writes PREFIX.pub)."""
    try:
        text = Path(path).read_text(encoding="ascii")
    except FileNotFoundError as exc:
        raise SignatureError(f"{path}: no such public key file") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise SignatureError(f"{path}: cannot read the public key ({type(exc).__name__})") from exc
    if "PRIVATE KEY" in text:
        raise SignatureError(f"{path}: is a private key; the harness needs the public key (PREFIX.pub)")
    lines = [ln.strip() for ln in text.strip().splitlines()]
    try:
        start, end = lines.index("-----BEGIN PUBLIC KEY-----"), lines.index("-----END PUBLIC KEY-----")
        der = base64.b64decode("".join(lines[start + 1:end]), validate=True)
    except (ValueError, base64.binascii.Error) as exc:
        raise SignatureError(f"{path}: not a PEM public key (-----BEGIN PUBLIC KEY-----)") from exc
    if len(der) != 44 or not der.startswith(_SPKI_PREFIX):
        raise SignatureError(f"{path}: not an Ed25519 public key")
    return der[len(_SPKI_PREFIX):]


def verify_manifest(bundle: Path, pubkey: Path, manifest_sha256: str) -> str:
    """Check <bundle>/manifest.sig over manifest.json with `pubkey`; return the key id.
    `manifest_sha256` is the hash of the manifest bytes the harness parsed: the signed bytes must be
    those, so a manifest swapped between reading and checking is refused too."""
    public = load_public_key(pubkey)
    kid = key_id(public)
    sig_path = Path(bundle) / SIGNATURE
    if not sig_path.is_file():
        raise SignatureError(f"{sig_path}: missing: the bundle is not signed, and --pubkey requires a signature")
    sig = sig_path.read_bytes()
    if len(sig) != 64:
        raise SignatureError(f"{sig_path}: {len(sig)} bytes; an Ed25519 signature is 64")
    data = (Path(bundle) / "manifest.json").read_bytes()
    if hashlib.sha256(data).hexdigest() != manifest_sha256:
        raise SignatureError(f"{Path(bundle) / 'manifest.json'}: changed while the harness was reading it")
    if not verify(public, data, sig):
        raise SignatureError(f"{sig_path}: signature does not verify with {pubkey} (key id {kid}): signed with "
                             "another key, or manifest.json was altered after signing")
    return kid


# ---------------------------------------------------------------- signed reports

def canonical_report(report: dict) -> bytes:
    """The bytes a report signature covers: every key but "signature", sorted, no whitespace, ASCII.
    `report` must hold JSON types only (what json.loads gives, or B.json_safe's output); NaN/Inf are
    refused (ValueError), as JSON has none."""
    body = {k: v for k, v in report.items() if k != REPORT_SIGNATURE}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False).encode("ascii")


def load_private_key(path: Path):
    """The device's Ed25519 private key from PREFIX.key (PKCS#8 PEM, as `edgekit keygen` writes) as a
    `cryptography` key. SignatureError (one line, exit 2) when cryptography is missing, or the file
    is missing, a public key, encrypted, or not Ed25519."""
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError as exc:
        raise SignatureError(f"--sign-key {path}: signing a report needs the 'cryptography' package on this "
                             "device (constant-time Ed25519): pip install cryptography") from exc
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError as exc:
        raise SignatureError(f"{path}: no such private key file (--sign-key: PREFIX.key from edgekit keygen)") from exc
    except IsADirectoryError as exc:
        raise SignatureError(f"{path}: is a folder; --sign-key needs a private key file (PREFIX.key)") from exc
    except OSError as exc:
        raise SignatureError(f"{path}: cannot read the private key ({exc.strerror or type(exc).__name__})") from exc
    if b"PUBLIC KEY" in data:
        raise SignatureError(f"{path}: is a public key; --sign-key needs the device's private key (PREFIX.key)")
    if b"ENCRYPTED PRIVATE KEY" in data:
        raise SignatureError(f"{path}: the private key is encrypted; the harness needs an unencrypted PEM key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except Exception as exc:  # ValueError, TypeError (encrypted), UnsupportedAlgorithm
        raise SignatureError(f"{path}: not a PEM private key ({type(exc).__name__}); make one with "
                             "`edgekit keygen PREFIX`") from exc
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise SignatureError(f"{path}: not an Ed25519 key ({type(key).__name__}); make one with `edgekit keygen PREFIX`")
    return key


def public_key_raw(private_key) -> bytes:
    from cryptography.hazmat.primitives import serialization
    return private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def sign_report(report: dict, private_key) -> dict:
    """The "signature" object for `report` (JSON types only): Ed25519 over canonical_report(report)."""
    sig = private_key.sign(canonical_report(report))
    return {"alg": REPORT_ALG, "key_id": key_id(public_key_raw(private_key)),
            "value": base64.b64encode(sig).decode("ascii")}


def report_signature_bytes(signature) -> bytes:
    """The raw 64 signature bytes of a report's "signature" object; ValueError (a phrase) if malformed."""
    if not isinstance(signature, dict):
        raise ValueError(f"'{REPORT_SIGNATURE}' is not an object")
    if signature.get("alg") != REPORT_ALG:
        raise ValueError(f"{REPORT_SIGNATURE}.alg is {signature.get('alg')!r}; expected {REPORT_ALG!r}")
    try:
        raw = base64.b64decode(str(signature.get("value")), validate=True)
    except (ValueError, base64.binascii.Error) as exc:
        raise ValueError(f"{REPORT_SIGNATURE}.value is not base64") from exc
    if len(raw) != 64:
        raise ValueError(f"{REPORT_SIGNATURE}.value holds {len(raw)} bytes; an Ed25519 signature is 64")
    return raw
