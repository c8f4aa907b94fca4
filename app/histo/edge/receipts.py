"""Signed job receipts: a compact JWS (RFC 7515, ES256) stating what a finished job was — its id,
owner and mode, the SHA-256 of the uploaded bytes and of the result bytes, the SPIFFE identities of
the workers that computed its strips and of the master that ran it, and when — signed by Vault's
transit key `histo-receipts` (not exportable: the private key never leaves Vault).

Anyone holding the key's public keys (`transit/keys/histo-receipts`, readable with the
`histo-receipt-verifier` policy, or exported with `histo receipt keys`) verifies a receipt offline:
`histo receipt verify --receipt R --image RESULT [--upload UPLOAD]`. Every key version stays in the
ring, so receipts signed before a rotation still verify; the kid names the version that signed."""
from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import threading
import time
from typing import Any, Callable, Mapping

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from .tokens import _load_es256_key

KEY, MOUNT = "histo-receipts", "transit"
ISSUER = "histo"
TYP = "histo-receipt+jwt"  # explicit typing (RFC 8725 3.11): a receipt is never taken for an API token
MAX_RECEIPT_LEN = 16 * 1024
CONTENT_TYPE = "application/jose"  # RFC 7515 section 9.2.1: the compact serialization
PROBE = b"histo-receipts: key version probe (not a receipt)"
_KID = re.compile(rf"{re.escape(KEY)}:([1-9][0-9]{{0,8}})")
_B64URL = re.compile(r"[A-Za-z0-9_-]*")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_SPIFFE = re.compile(r"spiffe://[a-z0-9.-]{1,253}/(worker|master)/[a-z0-9-]{1,63}")
_VAULT_SIG = re.compile(r"vault:v([0-9]{1,9}):([A-Za-z0-9_-]+)")
REQUIRED: dict[str, type | tuple[type, ...]]
REQUIRED = {"iss": str, "job": str, "sub": str, "mode": str, "upload_sha256": str, "result_sha256": str,
            "workers": list, "master": str, "created": (int, float), "finished": (int, float), "iat": int,
            "key_version": int}


class ReceiptError(Exception):
    """A receipt does not verify, or a file does not match it. `reason` is short and machine-readable,
    the message one readable sentence."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class SigningUnavailable(Exception):
    """Vault cannot sign right now (away, sealed, or the key missing)."""


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    """Strict base64url without padding (RFC 7515 section 2): anything else is malformed."""
    if not _B64URL.fullmatch(text) or len(text) % 4 == 1:
        raise ReceiptError("malformed", "the receipt is not a compact JWS")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise ReceiptError("malformed", "the receipt is not a compact JWS") from None


def _json_part(text: str) -> dict[str, Any]:
    try:
        value = json.loads(b64url_decode(text))
    except (ValueError, UnicodeDecodeError):
        raise ReceiptError("malformed", "the receipt is not a compact JWS") from None
    if not isinstance(value, dict):
        raise ReceiptError("malformed", "the receipt is not a compact JWS")
    return value


def claims_for(doc: Mapping[str, Any], *, result_sha256: str, workers: list[str], master: str,
               finished: float) -> dict[str, Any]:
    """What a receipt says about a finished job (without iat and key_version, added when signed)."""
    return {"iss": ISSUER, "job": doc["id"], "sub": doc["owner"], "mode": doc["mode"], "format": doc.get("format"),
            "width": doc.get("width"), "height": doc.get("height"), "upload_sha256": doc["upload_sha256"],
            "result_sha256": result_sha256, "workers": sorted(set(workers)), "master": master,
            "created": doc.get("created"), "finished": finished}


def encode(claims: Mapping[str, Any], version: int, sign: Callable[[bytes, int], str], now: float | None = None,
           *, key: str = KEY, typ: str = TYP) -> str:
    """The compact JWS of `claims` signed with key version `version`; `sign(signing_input, version)`
    returns the base64url ES256 signature (r || s). `key`/`typ`: another document signed the same way
    (the SecOps log's checkpoints)."""
    header = {"alg": "ES256", "typ": typ, "kid": f"{key}:{version}"}
    body = {**claims, "iat": int(time.time() if now is None else now), "key_version": version}
    signing_input = (b64url(json.dumps(header, separators=(",", ":")).encode()) + "."
                     + b64url(json.dumps(body, separators=(",", ":"), sort_keys=True).encode()))
    return signing_input + "." + sign(signing_input.encode(), version)


def kid_of(receipt: str) -> str:
    """The key id a receipt names (unverified: only to pick the key to verify it with)."""
    if not isinstance(receipt, str) or receipt.count(".") != 2 or len(receipt) > MAX_RECEIPT_LEN:
        raise ReceiptError("malformed", "the receipt is not a compact JWS")
    kid = _json_part(receipt.split(".")[0]).get("kid")
    if not isinstance(kid, str) or not _KID.fullmatch(kid):
        raise ReceiptError("unknown_key", f"the receipt names no {KEY} key version")
    return kid


def verify(receipt: str, keys: Mapping[str, str]) -> dict[str, Any]:
    """Check a receipt's header, signature (against `keys`: kid -> public key PEM) and claims;
    return the claims. Raises ReceiptError on anything wrong."""
    receipt = receipt.strip() if isinstance(receipt, str) else receipt
    kid = kid_of(receipt)
    h64, c64, s64 = receipt.split(".")
    header = _json_part(h64)
    if header.get("alg") != "ES256":  # never "none", never HMAC keyed with a public key
        raise ReceiptError("bad_algorithm", f"the receipt's algorithm is {header.get('alg')!r}, not ES256")
    if header.get("typ") != TYP:
        raise ReceiptError("bad_type", f"not a histo receipt (typ {header.get('typ')!r})")
    if set(header) != {"alg", "typ", "kid"}:  # no crit, jku, jwk, x5u: nothing points at a key of its choosing
        raise ReceiptError("bad_header", "the receipt's header has unexpected fields")
    pem = keys.get(kid)
    key = _load_es256_key(pem) if isinstance(pem, str) else None
    if key is None:
        raise ReceiptError("unknown_key", f"no public key for {kid}")
    sig = b64url_decode(s64)
    if len(sig) != 64:
        raise ReceiptError("bad_signature", f"the signature does not verify with {kid}")
    der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
    try:
        key.verify(der, f"{h64}.{c64}".encode(), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise ReceiptError("bad_signature", f"the signature does not verify with {kid}") from None
    claims = _json_part(c64)
    _check_claims(claims, int(kid.rsplit(":", 1)[1]))
    return claims


def _check_claims(claims: dict[str, Any], version: int) -> None:
    for name, kind in REQUIRED.items():
        value = claims.get(name)
        if isinstance(value, bool) or not isinstance(value, kind):
            raise ReceiptError("bad_claims", f"the receipt's claim {name!r} is missing or malformed")
    if claims["iss"] != ISSUER or claims["key_version"] != version:
        raise ReceiptError("bad_claims", "the receipt's issuer or key version is wrong")
    if not (_SHA256.fullmatch(claims["upload_sha256"]) and _SHA256.fullmatch(claims["result_sha256"])):
        raise ReceiptError("bad_claims", "the receipt's hashes are not SHA-256 hex digests")
    if not claims["workers"] or not all(isinstance(w, str) and _SPIFFE.fullmatch(w) for w in claims["workers"]):
        raise ReceiptError("bad_claims", "the receipt's worker identities are malformed")
    if not _SPIFFE.fullmatch(claims["master"]):
        raise ReceiptError("bad_claims", "the receipt's master identity is malformed")


def check_files(claims: Mapping[str, Any], image: bytes, upload: bytes | None = None) -> None:
    """The result (and, if given, the upload) are the bytes the receipt names."""
    if sha256_hex(image) != claims["result_sha256"]:
        raise ReceiptError("result_mismatch", f"the image is not the result of job {claims['job']} "
                                              f"(SHA-256 {sha256_hex(image)[:16]}..., receipt says "
                                              f"{claims['result_sha256'][:16]}...)")
    if upload is not None and sha256_hex(upload) != claims["upload_sha256"]:
        raise ReceiptError("upload_mismatch", f"the upload is not the one job {claims['job']} was computed from "
                                              f"(SHA-256 {sha256_hex(upload)[:16]}..., receipt says "
                                              f"{claims['upload_sha256'][:16]}...)")


def load_keys(text: str, kid: str) -> dict[str, str]:
    """kid -> PEM from a keys file: the answer of GET /api/v1/receipts/keys ({"keys": {...}}), the map
    `histo receipt keys` prints, or one PEM (taken as the key of `kid`). ValueError if none of these."""
    if not text.lstrip().startswith("{"):
        if "-----BEGIN PUBLIC KEY-----" not in text:
            raise ValueError("not a PEM public key")
        return {kid: text}
    doc = json.loads(text)
    keys = doc.get("keys", doc) if isinstance(doc, dict) else None
    if not isinstance(keys, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in keys.items()):
        raise ValueError("not a key map")
    return keys


def verify_result(receipt: str, keys_for: Callable[[str], Mapping[str, str]], image: bytes,
                  upload: bytes | None = None) -> str:
    """The whole offline check of `histo verify` and `histo receipt verify`: the receipt against the keys
    `keys_for(kid)` gives, then the files against its hashes; the one-line summary. Raises ReceiptError
    (and whatever `keys_for` raises when it cannot give keys)."""
    kid = kid_of(receipt)
    claims = verify(receipt, keys_for(kid))
    check_files(claims, image, upload)
    return summary(claims, kid) + (", upload matches" if upload is not None else "")


def summary(claims: Mapping[str, Any], kid: str) -> str:
    names = ", ".join(w.rsplit("/", 1)[1] for w in claims["workers"])
    return (f"receipt ok: job {claims['job']} of {claims['sub']} (mode {claims['mode']}), result SHA-256 "
            f"{claims['result_sha256'][:16]}..., computed by {names} on {claims['master'].rsplit('/', 1)[1]}, "
            f"signed with {kid}")


# -- signing with Vault transit ------------------------------------------------------------------

def _vault_signature(resp: Mapping[str, Any]) -> tuple[str, int]:
    m = _VAULT_SIG.fullmatch(str((resp.get("data") or {}).get("signature", "")))
    if not m:  # "vault:v<N>:<base64url r||s>" with jws marshaling
        raise SigningUnavailable("unexpected signature format from Vault transit")
    return m.group(2), int(m.group(1))


class VaultReceiptSigner:
    """Signs with `transit/sign/histo-receipts`, the only capability masters hold on this key. They
    cannot read the key, so the latest version is learned from Vault's answer to a probe signature
    (kept `refresh` seconds); the receipt is then signed with that version pinned, so the kid in its
    header always names the key version that signed it."""

    def __init__(self, client: Callable[[], Any], key: str = KEY, mount: str = MOUNT, refresh: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._client, self.key, self.mount = client, key, mount
        self.refresh, self._clock = refresh, clock
        self._version: tuple[int, float] | None = None
        self._lock = threading.Lock()

    def _sign(self, data: bytes, version: int | None) -> tuple[str, int]:
        resp = self._client().secrets.transit.sign_data(
            self.key, base64.b64encode(data).decode(), key_version=version, hash_algorithm="sha2-256",
            marshaling_algorithm="jws", mount_point=self.mount)
        return _vault_signature(resp)

    def latest_version(self, force: bool = False) -> int:
        with self._lock:
            if force or self._version is None or self._clock() - self._version[1] > self.refresh:
                self._version = (self._sign(PROBE, None)[1], self._clock())
            return self._version[0]

    def _pinned(self, data: bytes, version: int) -> str:
        sig, used = self._sign(data, version)
        if used != version:
            raise SigningUnavailable(f"Vault signed with version {used}, not {version}")
        return sig

    def sign(self, claims: Mapping[str, Any]) -> str:
        """Blocking (Vault calls): run it in an executor."""
        try:
            try:
                return encode(claims, self.latest_version(), self._pinned)
            except SigningUnavailable:
                raise
            except Exception:  # e.g. a rotation raised min_encryption_version: learn the version again
                return encode(claims, self.latest_version(force=True), self._pinned)
        except SigningUnavailable:
            raise
        except Exception as exc:
            raise SigningUnavailable(f"Vault cannot sign receipts right now ({type(exc).__name__})") from None
