"""Token verification logic with a local key standing in for Vault transit (the real transit
path is covered by the integration tests, which issue every token they use through Vault)."""
import base64
import hashlib
import hmac
import json
import time

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from histo.edge.tokens import AuthError, RevocationSet, TokenVerifier, parse_ttl

KEY = ec.generate_private_key(ec.SECP256R1())
OTHER = ec.generate_private_key(ec.SECP256R1())
PUB = KEY.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def token(claims=None, header=None, key=KEY, **overrides):
    now = int(time.time())
    body = {"iss": "histo", "aud": "histo-api", "sub": "alice", "role": "uploader", "iat": now, "nbf": now,
            "exp": now + 600, "jti": "j1"}
    body.update(claims or {})
    for k, v in overrides.items():
        if v is None:
            body.pop(k, None)
        else:
            body[k] = v
    head = {"alg": "ES256", "typ": "JWT", "kid": "histo-tokens:1", **(header or {})}
    signing_input = b64(json.dumps(head).encode()) + "." + b64(json.dumps(body).encode())
    r, s = decode_dss_signature(key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
    return signing_input + "." + b64(r.to_bytes(32, "big") + s.to_bytes(32, "big"))  # what transit's jws gives


def hs256_with_public_key():
    """The classic confusion attack: an HMAC 'signed' with the (public) verification key."""
    signing_input = b64(json.dumps({"alg": "HS256", "kid": "histo-tokens:1"}).encode()) + "." + \
        b64(json.dumps({"sub": "alice", "role": "admin", "iss": "histo", "aud": "histo-api"}).encode())
    return signing_input + "." + b64(hmac.new(PUB.encode(), signing_input.encode(), hashlib.sha256).digest())


def verifier(revoked=()):
    return TokenVerifier(lambda: {"histo-tokens:1": PUB}, is_revoked=lambda j: j in revoked)


def test_valid_token_accepted():
    p = verifier().verify(token())
    assert (p.sub, p.role, p.jti) == ("alice", "uploader", "j1")


@pytest.mark.parametrize("bad,reason", [
    (lambda: token(exp=int(time.time()) - 60), "expired"),
    (lambda: token(nbf=int(time.time()) + 600, iat=int(time.time())), "not_yet_valid"),
    (lambda: token(iat=int(time.time()) + 600, nbf=int(time.time())), "not_yet_valid"),
    (lambda: token(aud="someone-else"), "wrong_audience_or_issuer"),
    (lambda: token(iss="evil"), "wrong_audience_or_issuer"),
    (lambda: token(key=OTHER), "bad_signature"),
    (lambda: token(role="root"), "unknown_role"),
    (lambda: token(exp=int(time.time()) + 86400), "lifetime_too_long"),
    (lambda: token(jti=None), "invalid"),
    (lambda: token(header={"kid": "histo-tokens:9"}), "unknown_key"),
    (lambda: token(header={"alg": "none"}), "bad_algorithm"),
    (lambda: hs256_with_public_key(), "bad_algorithm"),
    (lambda: "a.b", "malformed"),
    (lambda: "", "malformed"),
])
def test_bad_tokens_refused(bad, reason):
    with pytest.raises(AuthError) as e:
        verifier().verify(bad())
    assert e.value.reason == reason


def test_tampered_payload_refused():
    head, body, sig = token().split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=="))
    claims["role"] = "admin"
    with pytest.raises(AuthError, match="bad_signature"):
        verifier().verify(".".join([head, b64(json.dumps(claims).encode()), sig]))


def test_revoked_refused_and_revocations_expire():
    with pytest.raises(AuthError, match="revoked"):
        verifier(revoked={"j1"}).verify(token())
    rs = RevocationSet()
    rs.add("a", time.time() - 1)
    rs.add("b", time.time() + 100)
    rs.prune()
    assert "a" not in rs and "b" in rs


def test_new_key_version_is_fetched_on_first_sight_but_not_in_a_flood():
    now = [time.time()]
    keys = {"histo-tokens:1": PUB}
    fetches = []

    def fetch():
        fetches.append(now[0])
        return dict(keys)
    v = TokenVerifier(fetch, clock=lambda: now[0])
    v.refresh()
    other_pub = OTHER.public_key().public_bytes(serialization.Encoding.PEM,
                                                serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    keys["histo-tokens:2"] = other_pub  # Vault rotated the key
    now[0] += 0.5
    rotated = token(key=OTHER, header={"kid": "histo-tokens:2"}, iat=int(time.time()), nbf=int(time.time()))
    with pytest.raises(AuthError, match="unknown_key"):
        v.verify(rotated)  # within a second of the last fetch: not fetched again
    now[0] += 1.0
    assert v.verify(rotated).sub == "alice"  # fetched on first sight after that
    for _ in range(20):
        with pytest.raises(AuthError):
            v.verify(token(header={"kid": "histo-tokens:99"}))
    assert len(fetches) == 2


def test_ttl_parsing():
    assert parse_ttl("15m") == 900 and parse_ttl("1h") == 3600 and parse_ttl("90") == 90
    with pytest.raises(ValueError):
        parse_ttl("forever")
