"""Job receipts: compact JWS encoding, offline verification, file checks, the Vault transit signer
(against a fake transit engine with real P-256 keys) and `histo receipt verify`."""
import base64
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from histo.edge import receipts
from histo.edge.receipts import ReceiptError, SigningUnavailable, VaultReceiptSigner
from histo.edge.tokens import AuthError, TokenVerifier

KEYS = {1: ec.generate_private_key(ec.SECP256R1()), 2: ec.generate_private_key(ec.SECP256R1())}
OTHER = ec.generate_private_key(ec.SECP256R1())
UPLOAD, RESULT = b"\xff\xd8 the uploaded jpeg", b"\xff\xd8 the equalized jpeg"
DOC: dict[str, Any] = {"id": "a" * 24, "owner": "alice", "mode": "luma", "format": "JPEG", "width": 64, "height": 48,
       "created": 1_700_000_000.0, "upload_sha256": receipts.sha256_hex(UPLOAD)}
WORKERS = ["spiffe://histo.internal/worker/worker2", "spiffe://histo.internal/worker/worker1"]


def pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo).decode()


PUBLIC = {f"histo-receipts:{v}": pem(k) for v, k in KEYS.items()}


def raw_sig(key: ec.EllipticCurvePrivateKey, data: bytes) -> str:
    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
    return receipts.b64url(r.to_bytes(32, "big") + s.to_bytes(32, "big"))


def claims() -> dict[str, Any]:
    return receipts.claims_for(DOC, result_sha256=receipts.sha256_hex(RESULT), workers=WORKERS,
                               master="spiffe://histo.internal/master/master1", finished=1_700_000_002.5)


def make(version: int = 1, key: ec.EllipticCurvePrivateKey | None = None, body: dict[str, Any] | None = None) -> str:
    return receipts.encode(body or claims(), version, lambda data, v: raw_sig(key or KEYS[v], data), now=1_700_000_003)


def forge(header: dict[str, Any], body: dict[str, Any], key: ec.EllipticCurvePrivateKey = KEYS[1]) -> str:
    si = receipts.b64url(json.dumps(header).encode()) + "." + receipts.b64url(json.dumps(body).encode())
    return si + "." + raw_sig(key, si.encode())


def reason(receipt: Any, keys: dict[str, str] = PUBLIC) -> str:
    with pytest.raises(ReceiptError) as exc:
        receipts.verify(receipt, keys)
    return exc.value.reason


def test_round_trip_header_and_claims() -> None:
    jws = make()
    header = json.loads(receipts.b64url_decode(jws.split(".")[0]))
    assert header == {"alg": "ES256", "typ": "histo-receipt+jwt", "kid": "histo-receipts:1"}
    got = receipts.verify(jws, PUBLIC)
    assert got["job"] == DOC["id"] and got["sub"] == "alice" and got["mode"] == "luma"
    assert got["upload_sha256"] == receipts.sha256_hex(UPLOAD) and got["result_sha256"] == receipts.sha256_hex(RESULT)
    assert got["workers"] == sorted(WORKERS) and got["master"].endswith("/master/master1")
    assert got["key_version"] == 1 and got["iat"] == 1_700_000_003 and got["finished"] == 1_700_000_002.5
    receipts.check_files(got, RESULT, UPLOAD)  # the legitimate files pass
    assert "receipt ok: job " + DOC["id"] in receipts.summary(got, "histo-receipts:1")


def test_any_changed_byte_of_the_receipt_fails() -> None:
    jws = make()
    h, c, s = jws.split(".")
    body = json.loads(receipts.b64url_decode(c))
    for name, value in (("sub", "mallory"), ("result_sha256", "0" * 64), ("workers", WORKERS[:1])):
        tampered = f"{h}.{receipts.b64url(json.dumps({**body, name: value}).encode())}.{s}"
        assert reason(tampered) == "bad_signature"
    sig = bytearray(receipts.b64url_decode(s))
    sig[10] ^= 1
    assert reason(f"{h}.{c}.{receipts.b64url(bytes(sig))}") == "bad_signature"
    assert reason(make(key=OTHER)) == "bad_signature"  # signed by a key that is not Vault's
    assert receipts.verify(jws, PUBLIC)  # the untouched receipt still verifies


def test_changed_files_fail() -> None:
    got = receipts.verify(make(), PUBLIC)
    with pytest.raises(ReceiptError) as exc:
        receipts.check_files(got, RESULT[:-1] + b"!")
    assert exc.value.reason == "result_mismatch" and DOC["id"] in str(exc.value)
    with pytest.raises(ReceiptError) as exc:
        receipts.check_files(got, RESULT, UPLOAD + b"\0")
    assert exc.value.reason == "upload_mismatch"


def test_receipts_signed_before_a_rotation_still_verify() -> None:
    old, new = make(1), make(2)
    assert receipts.verify(old, PUBLIC)["key_version"] == 1 and receipts.verify(new, PUBLIC)["key_version"] == 2
    assert reason(new, {"histo-receipts:1": PUBLIC["histo-receipts:1"]}) == "unknown_key"
    # a receipt naming version 1 but signed with version 2's key does not verify
    h, c, _ = make(1).split(".")
    assert reason(f"{h}.{c}.{raw_sig(KEYS[2], f'{h}.{c}'.encode())}") == "bad_signature"


@pytest.mark.parametrize("header, expected", [
    ({"alg": "none", "typ": "histo-receipt+jwt", "kid": "histo-receipts:1"}, "bad_algorithm"),
    ({"alg": "HS256", "typ": "histo-receipt+jwt", "kid": "histo-receipts:1"}, "bad_algorithm"),
    ({"alg": "ES256", "typ": "JWT", "kid": "histo-receipts:1"}, "bad_type"),
    ({"alg": "ES256", "typ": "histo-receipt+jwt", "kid": "histo-receipts:1", "jku": "https://evil"}, "bad_header"),
    ({"alg": "ES256", "typ": "histo-receipt+jwt", "kid": "histo-tokens:1"}, "unknown_key"),
    ({"alg": "ES256", "typ": "histo-receipt+jwt", "kid": "histo-receipts:9"}, "unknown_key"),
    ({"alg": "ES256", "typ": "histo-receipt+jwt"}, "unknown_key"),
])
def test_headers_that_are_refused(header: dict[str, Any], expected: str) -> None:
    body = {**claims(), "iat": 1, "key_version": 1}
    assert reason(forge(header, body)) == expected


def test_claims_are_checked_after_the_signature() -> None:
    head = {"alg": "ES256", "typ": "histo-receipt+jwt", "kid": "histo-receipts:1"}
    good = {**claims(), "iat": 1, "key_version": 1}
    assert receipts.verify(forge(head, good), PUBLIC)
    bad: dict[str, Any]
    for bad in ({"key_version": 2}, {"iss": "someone"}, {"upload_sha256": "abc"}, {"workers": []},
                {"workers": ["spiffe://histo.internal/master/master1/../x"]}, {"master": "master1"},
                {"iat": True}, {"job": None}):
        assert reason(forge(head, {**good, **bad})) == "bad_claims", bad


@pytest.mark.parametrize("text", ["", "abc", "a.b", "a.b.c.d", "!!.$$.%%", "eyJ9.e30.", "e30=.e30.AA",
                                  "x" * 20000, None, 42])
def test_malformed_receipts(text: Any) -> None:
    assert reason(text) in ("malformed", "unknown_key")


def test_a_receipt_is_not_an_api_token_and_a_token_is_not_a_receipt() -> None:
    verifier = TokenVerifier(lambda: {"histo-tokens:1": PUBLIC["histo-receipts:1"]})
    with pytest.raises(AuthError):
        verifier.verify(make())
    token = forge({"alg": "ES256", "typ": "JWT", "kid": "histo-tokens:1"},
                  {"iss": "histo", "aud": "histo-api", "sub": "alice", "role": "admin"})
    assert reason(token, {"histo-tokens:1": PUBLIC["histo-receipts:1"]}) == "unknown_key"


# -- the Vault transit signer ----------------------------------------------------------------------

class FakeTransit:
    """transit/sign/histo-receipts with real keys; `latest` is the key's newest version."""

    def __init__(self) -> None:
        self.calls: list[int | str]
        self.latest, self.calls, self.down = 1, [], False

    def sign_data(self, name: str, hash_input: str, key_version: int | None = None, hash_algorithm: str | None = None,
                  marshaling_algorithm: str | None = None, mount_point: str | None = None) -> dict[str, Any]:
        assert (name, hash_algorithm, marshaling_algorithm, mount_point) == (
            "histo-receipts", "sha2-256", "jws", "transit")
        if self.down:
            raise ConnectionError("vault away")
        version = key_version or self.latest
        self.calls.append(version if key_version else "probe")
        return {"data": {"signature": f"vault:v{version}:{raw_sig(KEYS[version], base64.b64decode(hash_input))}",
                         "key_version": version}}


class FakeClient:
    def __init__(self, transit: FakeTransit) -> None:
        self.secrets = type("S", (), {"transit": transit})()


def test_vault_signer_pins_the_version_it_learned() -> None:
    transit, now = FakeTransit(), [0.0]
    signer = VaultReceiptSigner(lambda: FakeClient(transit), refresh=60, clock=lambda: now[0])
    first = signer.sign(claims())
    assert receipts.verify(first, PUBLIC)["key_version"] == 1 and transit.calls == ["probe", 1]
    signer.sign(claims())
    assert transit.calls == ["probe", 1, 1]  # the version is cached, one Vault call per receipt
    transit.latest = 2  # rotated in Vault; seen once the cache is older than `refresh`
    now[0] = 61
    rotated = signer.sign(claims())
    assert receipts.kid_of(rotated) == "histo-receipts:2" and receipts.verify(rotated, PUBLIC)["key_version"] == 2
    assert receipts.verify(first, PUBLIC)  # the old receipt still verifies


def test_vault_signer_unavailable() -> None:
    transit = FakeTransit()
    transit.down = True
    with pytest.raises(SigningUnavailable, match="cannot sign"):
        VaultReceiptSigner(lambda: FakeClient(transit)).sign(claims())


def test_vault_signer_refuses_an_unexpected_signature() -> None:
    class Odd(FakeTransit):
        def sign_data(self, *a: Any, **kw: Any) -> dict[str, Any]:
            return {"data": {"signature": "vault:v1:not base64!"}}
    with pytest.raises(SigningUnavailable):
        VaultReceiptSigner(lambda: FakeClient(Odd())).sign(claims())


# -- histo receipt verify ---------------------------------------------------------------------------

def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "histo.cli", "receipt", "verify", *args], capture_output=True,
                          text=True, timeout=60)


def test_cli_verify_offline(tmp_path: Path) -> None:
    (tmp_path / "r.jws").write_text(make() + "\n")
    (tmp_path / "result.jpg").write_bytes(RESULT)
    (tmp_path / "upload.jpg").write_bytes(UPLOAD)
    (tmp_path / "keys.json").write_text(json.dumps(PUBLIC))
    (tmp_path / "key.pem").write_text(PUBLIC["histo-receipts:1"])
    base = ["--receipt", str(tmp_path / "r.jws"), "--image", str(tmp_path / "result.jpg")]
    for key in ("keys.json", "key.pem"):
        ok = cli(*base, "--upload", str(tmp_path / "upload.jpg"), "--public-key", str(tmp_path / key))
        assert ok.returncode == 0, ok.stderr
        assert ok.stdout.startswith("receipt ok: job " + DOC["id"]) and "upload matches" in ok.stdout

    (tmp_path / "tampered.jpg").write_bytes(RESULT + b"\0")
    bad = cli("--receipt", str(tmp_path / "r.jws"), "--image", str(tmp_path / "tampered.jpg"),
              "--public-key", str(tmp_path / "keys.json"))
    assert bad.returncode != 0 and "REJECTED" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    (tmp_path / "other.pem").write_text(pem(OTHER))
    bad = cli(*base, "--public-key", str(tmp_path / "other.pem"))
    assert bad.returncode != 0 and "does not verify" in bad.stderr and "Traceback" not in bad.stderr
    missing = cli(*base)  # neither a key nor a Vault token: one line that says what to give
    assert missing.returncode != 0 and "--public-key" in missing.stderr and len(missing.stderr.splitlines()) == 1
    nofile = cli("--receipt", str(tmp_path / "nope"), "--image", str(tmp_path / "result.jpg"))
    assert nofile.returncode != 0 and "cannot read the receipt" in nofile.stderr
