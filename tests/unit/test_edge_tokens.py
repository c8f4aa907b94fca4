"""Token issuing and verification with a local key standing in for Vault transit: the fake signs
exactly as transit does with marshaling_algorithm=jws ("vault:v<N>:" + base64url(r||s)). The real
transit path is covered by the integration tests, which issue every token they use through Vault."""
import base64
import hashlib
import hmac
import json
import threading
from types import SimpleNamespace

import jwt
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from histo.edge.tokens import (MAX_TTL, ROLES, AuthError, KeysUnavailable, Principal, RevocationSet, TokenVerifier,
                               issue_token, parse_ttl, vault_public_keys)

KEY = ec.generate_private_key(ec.SECP256R1())
OTHER = ec.generate_private_key(ec.SECP256R1())


def pem(key) -> str:
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo).decode()


PUB = pem(KEY)
NOW = 1_700_000_000.0


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jws_sign(key, signing_input: bytes) -> str:
    r, s = decode_dss_signature(key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
    return b64(r.to_bytes(32, "big") + s.to_bytes(32, "big"))  # what transit's jws marshaling gives


def token(claims=None, header=None, key=KEY, now=NOW, **overrides) -> str:
    body = {"iss": "histo", "aud": "histo-api", "sub": "alice", "role": "uploader", "iat": int(now),
            "nbf": int(now), "exp": int(now) + 600, "jti": "j1"}
    body.update(claims or {})
    for k, v in overrides.items():
        if v is None:
            body.pop(k, None)
        else:
            body[k] = v
    head = {"alg": "ES256", "typ": "JWT", "kid": "histo-tokens:1", **(header or {})}
    signing_input = b64(json.dumps(head).encode()) + "." + b64(json.dumps(body).encode())
    return signing_input + "." + jws_sign(key, signing_input.encode())


def hs256_with_public_key() -> str:
    """The classic confusion attack: an HMAC 'signed' with the (public) verification key."""
    signing_input = b64(json.dumps({"alg": "HS256", "kid": "histo-tokens:1"}).encode()) + "." + \
        b64(json.dumps({"sub": "alice", "role": "admin", "iss": "histo", "aud": "histo-api", "iat": int(NOW),
                        "nbf": int(NOW), "exp": int(NOW) + 60, "jti": "x"}).encode())
    return signing_input + "." + b64(hmac.new(PUB.encode(), signing_input.encode(), hashlib.sha256).digest())


def unsigned(alg: str = "none") -> str:
    head = b64(json.dumps({"alg": alg, "typ": "JWT", "kid": "histo-tokens:1"}).encode())
    return head + "." + token().split(".")[1] + "."


def verifier(revoked=(), now=NOW, **kw) -> TokenVerifier:
    return TokenVerifier(lambda: {"histo-tokens:1": PUB}, is_revoked=lambda j: j in revoked, clock=lambda: now, **kw)


# -- a fake hvac client whose transit engine behaves like Vault's ------------------------------------

class FakeTransit:
    def __init__(self) -> None:
        self.versions = {1: KEY}
        self.min_version = 1
        self.calls: list[dict] = []

    def rotate(self) -> ec.EllipticCurvePrivateKey:
        key = ec.generate_private_key(ec.SECP256R1())
        self.versions[max(self.versions) + 1] = key
        return key

    def read_key(self, name, mount_point="transit"):
        assert (name, mount_point) == ("histo-tokens", "transit")
        return {"data": {"type": "ecdsa-p256", "latest_version": max(self.versions),
                         "min_decryption_version": self.min_version,
                         "keys": {str(v): {"name": "P-256", "public_key": pem(k), "creation_time": "x"}
                                  for v, k in self.versions.items() if v >= self.min_version}}}

    def sign_data(self, name, hash_input, key_version=None, hash_algorithm=None, marshaling_algorithm=None,
                  mount_point="transit", **_):
        self.calls.append({"name": name, "hash_input": hash_input, "key_version": key_version,
                           "hash_algorithm": hash_algorithm, "marshaling_algorithm": marshaling_algorithm,
                           "mount_point": mount_point})
        version = key_version or max(self.versions)
        sig = jws_sign(self.versions[version], base64.b64decode(hash_input))
        return {"data": {"signature": f"vault:v{version}:{sig}", "key_version": version}}


def fake_vault():
    transit = FakeTransit()
    return SimpleNamespace(secrets=SimpleNamespace(transit=transit)), transit


# -- issuing ----------------------------------------------------------------------------------------

def test_issued_token_has_the_contract_shape_and_verifies_with_pyjwt_and_the_verifier():
    vault, transit = fake_vault()
    tok = issue_token(vault, role="uploader", subject="alice", ttl_seconds=900)
    header = jwt.get_unverified_header(tok)
    assert header == {"alg": "ES256", "typ": "JWT", "kid": "histo-tokens:1"}
    call = transit.calls[0]
    assert call["hash_algorithm"] == "sha2-256" and call["marshaling_algorithm"] == "jws" and call["key_version"] == 1
    assert base64.b64decode(call["hash_input"]).decode() == tok.rsplit(".", 1)[0]  # standard base64 of the input
    claims = jwt.decode(tok, serialization.load_pem_public_key(PUB.encode()), algorithms=["ES256"],
                        audience="histo-api", issuer="histo")
    assert claims["exp"] - claims["iat"] == 900 and claims["nbf"] == claims["iat"]
    assert len(bytes.fromhex(claims["jti"])) == 16
    keys = vault_public_keys(vault)
    assert keys == {"histo-tokens:1": PUB}
    p = TokenVerifier(lambda: vault_public_keys(vault)).verify(tok)
    assert p == Principal(sub="alice", role="uploader", jti=claims["jti"], exp=claims["exp"])


def test_every_token_gets_its_own_jti():
    vault, _ = fake_vault()
    jtis = {jwt.decode(issue_token(vault, role="viewer", subject="v", ttl_seconds=60),
                       options={"verify_signature": False})["jti"] for _ in range(20)}
    assert len(jtis) == 20


@pytest.mark.parametrize("kw", [dict(role="root"), dict(ttl_seconds=MAX_TTL + 1), dict(ttl_seconds=0),
                                dict(ttl_seconds=-5), dict(ttl_seconds=True), dict(subject=""),
                                dict(subject="a b"), dict(subject="x" * 65)])
def test_issue_refuses_bad_requests(kw):
    vault, transit = fake_vault()
    args = {"role": "admin", "subject": "ops", "ttl_seconds": 600, **kw}
    with pytest.raises(ValueError):
        issue_token(vault, **args)
    assert not transit.calls  # refused before anything was signed


def test_issue_after_rotation_uses_the_new_version_and_old_tokens_stay_valid():
    vault, transit = fake_vault()
    old = issue_token(vault, role="admin", subject="ops", ttl_seconds=600)
    v = TokenVerifier(lambda: vault_public_keys(vault), refetch_interval=0)
    v.refresh()
    transit.rotate()
    new = issue_token(vault, role="admin", subject="ops", ttl_seconds=600)
    assert jwt.get_unverified_header(new)["kid"] == "histo-tokens:2"
    assert v.verify(new).role == "admin"  # the new kid is fetched on first sight
    assert v.verify(old).role == "admin"
    transit.min_version = 2  # the old version leaves Vault's key ring
    v.refresh()
    with pytest.raises(AuthError, match="unknown_key"):
        v.verify(old)


def test_issue_refuses_a_signature_of_another_version():
    vault, transit = fake_vault()
    transit.sign_data = lambda *a, **k: {"data": {"signature": "vault:v7:abc"}}
    with pytest.raises(RuntimeError):
        issue_token(vault, role="admin", subject="ops", ttl_seconds=60)


# -- verifying --------------------------------------------------------------------------------------

def test_valid_token_accepted():
    p = verifier().verify(token())
    assert (p.sub, p.role, p.jti, p.exp) == ("alice", "uploader", "j1", NOW + 600)
    for role in ROLES:
        assert verifier().verify(token(role=role)).role == role


def test_leeway_tolerates_small_clock_skew():
    assert verifier(now=NOW - 4).verify(token()).sub == "alice"  # issued 4 s "in the future"
    assert verifier(now=NOW + 603).verify(token()).sub == "alice"  # expired 3 s ago
    with pytest.raises(AuthError, match="expired"):
        verifier(now=NOW + 606).verify(token())


@pytest.mark.parametrize("bad,reason", [
    (lambda: token(exp=int(NOW) - 60), "expired"),
    (lambda: token(nbf=int(NOW) + 600, iat=int(NOW), exp=int(NOW) + 900), "not_yet_valid"),
    (lambda: token(iat=int(NOW) + 600, nbf=int(NOW), exp=int(NOW) + 900), "not_yet_valid"),
    (lambda: token(aud="someone-else"), "wrong_audience_or_issuer"),
    (lambda: token(aud=["someone-else"]), "wrong_audience_or_issuer"),
    (lambda: token(iss="evil"), "wrong_audience_or_issuer"),
    (lambda: token(key=OTHER), "bad_signature"),
    (lambda: token(role="root"), "unknown_role"),
    (lambda: token(role=None), "unknown_role"),
    (lambda: token(exp=int(NOW) + 86400), "lifetime_too_long"),
    (lambda: token(jti=None), "invalid"),
    (lambda: token(sub=None), "invalid"),
    (lambda: token(exp="tomorrow"), "invalid"),
    (lambda: token(iat=None), "invalid"),
    (lambda: token(header={"kid": "histo-tokens:9"}), "unknown_key"),
    (lambda: token(header={"kid": 1}), "malformed"),  # PyJWT refuses a non-string kid outright
    (lambda: token(header={"kid": None}), "malformed"),
    (lambda: token(header={"jku": "https://evil.example/keys"}), "bad_header"),
    (lambda: token(header={"crit": ["exp"]}), "malformed"),
    (lambda: token(header={"alg": "ES384"}), "bad_algorithm"),
    (lambda: unsigned("none"), "bad_algorithm"),
    (lambda: unsigned("None"), "bad_algorithm"),
    (lambda: hs256_with_public_key(), "bad_algorithm"),
    (lambda: token()[:-6], "bad_signature"),
    (lambda: token().rsplit(".", 1)[0] + ".", "bad_signature"),
    (lambda: "a.b", "malformed"),
    (lambda: "a.b.c", "malformed"),
    (lambda: "", "malformed"),
    (lambda: "x" * 5000, "malformed"),
    (lambda: None, "malformed"),
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


def test_tampered_header_refused():
    head, body, sig = token().split(".")
    other_head = b64(json.dumps({"alg": "ES256", "typ": "JWT", "kid": "histo-tokens:1", "x": 1}).encode())
    with pytest.raises(AuthError, match="bad_signature"):
        verifier().verify(".".join([other_head, body, sig]))


def test_revoked_refused():
    with pytest.raises(AuthError, match="revoked"):
        verifier(revoked={"j1"}).verify(token())
    assert verifier(revoked={"j2"}).verify(token()).jti == "j1"


def test_keys_of_another_type_are_never_trusted():
    ed = ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    p384 = pem(ec.generate_private_key(ec.SECP384R1()))
    v = TokenVerifier(lambda: {"histo-tokens:1": PUB, "histo-tokens:2": ed, "histo-tokens:3": p384,
                               "histo-tokens:4": "not a pem"}, clock=lambda: NOW)
    v.refresh()
    assert v.kids == ["histo-tokens:1"]
    assert v.verify(token()).sub == "alice"


def test_new_key_version_is_fetched_on_first_sight_but_not_in_a_flood():
    now = [NOW]
    keys = {"histo-tokens:1": PUB}
    fetches = []

    def fetch():
        fetches.append(now[0])
        return dict(keys)
    v = TokenVerifier(fetch, clock=lambda: now[0])
    v.refresh()
    keys["histo-tokens:2"] = pem(OTHER)  # Vault rotated the key
    now[0] += 0.5
    rotated = token(key=OTHER, header={"kid": "histo-tokens:2"})
    with pytest.raises(AuthError, match="unknown_key"):
        v.verify(rotated)  # within the refetch interval of the last fetch: not fetched again
    now[0] += 1.0
    assert v.verify(rotated).sub == "alice"  # fetched on first sight after that
    for i in range(20):  # made-up kids: at most one fetch per interval...
        with pytest.raises(AuthError, match="unknown_key"):
            v.verify(token(header={"kid": f"histo-tokens:{99 + i}"}))
    assert len(fetches) == 2
    now[0] += 5
    for kid in ("histo-tokens:1x", "other-key:7", "histo-tokens:0", "../../etc:1"):  # ...and none for these
        with pytest.raises(AuthError, match="unknown_key"):
            v.verify(token(header={"kid": kid}))
    assert len(fetches) == 2


def test_vault_outage_keeps_cached_keys_and_says_so_for_unknown_ones():
    now = [NOW]
    up = [True]

    def fetch():
        if not up[0]:
            raise ConnectionError("vault down")
        return {"histo-tokens:1": PUB}
    v = TokenVerifier(fetch, clock=lambda: now[0])
    v.refresh()
    up[0] = False
    now[0] += 10
    assert v.verify(token(now=now[0])).sub == "alice"  # cached key still verifies
    with pytest.raises(KeysUnavailable):
        v.verify(token(now=now[0], header={"kid": "histo-tokens:2"}))
    with pytest.raises(KeysUnavailable):
        v.refresh()
    assert v.kids == ["histo-tokens:1"]


def test_no_keys_yet_fetches_on_first_use_at_most_once_per_interval():
    now = [NOW]
    calls = []

    def fetch():
        calls.append(1)
        raise ConnectionError("vault down")
    v = TokenVerifier(fetch, clock=lambda: now[0])
    for _ in range(10):
        with pytest.raises((KeysUnavailable, AuthError)):
            v.verify(token())
    assert len(calls) == 1


# -- revocation set ---------------------------------------------------------------------------------

def test_revocation_set_expires_entries_and_is_thread_safe():
    rs = RevocationSet(clock=lambda: NOW)
    rs.add("a", NOW - 1)
    rs.add("b", NOW + 100)
    assert "a" in rs and len(rs) == 2
    assert rs.prune() == 1
    assert "a" not in rs and "b" in rs and list(rs) == ["b"]
    rs.discard("b")
    rs.discard("never-there")
    assert len(rs) == 0

    def hammer(n):
        for i in range(500):
            rs.add(f"{n}-{i}", NOW + (i % 2) * 100 - 1)
            rs.prune()
    threads = [threading.Thread(target=hammer, args=(n,)) for n in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    rs.prune()
    assert len(rs) == 4 * 250


def test_ttl_parsing():
    assert parse_ttl("15m") == 900 and parse_ttl("1h") == 3600 and parse_ttl("90") == 90 and parse_ttl("9s") == 9
    with pytest.raises(ValueError):
        parse_ttl("forever")


def test_a_raised_min_decryption_version_is_followed_without_a_new_version():
    """Vault drops version 1 from the ring (min_decryption_version raised, no newer key): the
    follow thread re-reads the ring and version-1 tokens stop verifying within an interval."""
    import time as _time
    keys = {"histo-tokens:1": PUB, "histo-tokens:2": pem(OTHER)}
    v = TokenVerifier(lambda: dict(keys), clock=lambda: NOW)
    v.refresh()
    assert v.verify(token()).sub == "alice"
    stop = v.follow(interval=0.02)
    try:
        del keys["histo-tokens:1"]
        deadline = _time.time() + 2
        while "histo-tokens:1" in v.kids and _time.time() < deadline:
            _time.sleep(0.01)
        with pytest.raises(AuthError, match="unknown_key"):
            v.verify(token())
        assert v.verify(token(key=OTHER, header={"kid": "histo-tokens:2"})).sub == "alice"
    finally:
        stop.set()
