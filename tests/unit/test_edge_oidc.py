"""edge/oidc.py and client/pkce.py as pure logic: a local P-256 key stands in for the provider's JWKS
(the real provider's are in tests/integration/test_signin.py)."""
from __future__ import annotations

import base64
import hashlib
import json
import time
from typing import Any, Mapping

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from histo.client.pkce import Attempt, CallbackError, challenge_of
from histo.edge import receipts
from histo.edge.oidc import RelyingParty, SignInError, role_for

ISS = "https://vault.test:8200/v1/identity/oidc/provider/histo"
KEY = ec.generate_private_key(ec.SECP256R1())
JWK = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(KEY.public_key()))
JWKS = {"keys": [{**JWK, "kid": "k1", "alg": "ES256", "use": "sig"}]}
DISCOVERY = {"issuer": ISS, "authorization_endpoint": "https://vault.test:8200/ui/vault/identity/oidc/provider/histo/"
             "authorize", "token_endpoint": ISS + "/token", "jwks_uri": ISS + "/.well-known/keys"}


def sign(claims: dict[str, Any], key: Any = KEY, alg: str = "ES256", kid: str = "k1") -> str:
    return jwt.encode(claims, key, algorithm=alg, headers={"kid": kid})


def id_claims(**over: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"iss": ISS, "aud": "web", "sub": "entity-1", "iat": now, "exp": now + 300, "nonce": "n0nce",
            "username": "bob", "groups": ["histo-uploader"], **over}


class FakeProvider:
    """OpenBao's token endpoint reduced to what the relying party reads from it."""

    def __init__(self, answer: dict[str, Any], status: int = 200) -> None:
        self.answer, self.status = answer, status
        self.forms: list[dict[str, str]] = []

    def post(self, url: str, form: Mapping[str, str]) -> tuple[int, dict[str, Any]]:
        self.forms.append(dict(form))
        return self.status, self.answer

    def get(self, url: str) -> dict[str, Any]:
        return JWKS if url.endswith("/keys") else DISCOVERY


def rp(provider: FakeProvider, clock: Any = time.time, grants: dict[str, Any] | None = None) -> RelyingParty:
    return RelyingParty(ISS, lambda: ("web", "s3cret"), lambda: grants or {}, provider.post, provider.get,
                        clock=clock)


VERIFIER = "v" * 43
FORM = {"code": "c0de", "code_verifier": VERIFIER, "redirect_uri": "https://m/", "nonce": "n0nce"}


def test_redeem_maps_the_group_to_a_role_and_sends_the_verifier() -> None:
    p = FakeProvider({"id_token": sign(id_claims())})
    who = rp(p).redeem(FORM)
    assert (who.sub, who.role, who.how) == ("bob", "uploader", "oidc")
    assert p.forms[0]["code_verifier"] == VERIFIER and p.forms[0]["client_secret"] == "s3cret"


@pytest.mark.parametrize("token, why", [
    (sign(id_claims(aud="other")), "another client"),
    (sign(id_claims(iss="https://evil.test/v1/identity/oidc/provider/histo")), "another provider"),
    (sign(id_claims(nonce="replayed")), "nonce"),
    (sign(id_claims(exp=int(time.time()) - 60)), "expired"),
    (sign(id_claims(), key=ec.generate_private_key(ec.SECP256R1())), "signature"),
    (sign(id_claims(), kid="unknown"), "does not publish"),
    (sign(id_claims(), key="a-shared-secret-is-not-a-key-here-0123456789", alg="HS256"), "algorithm"),
    (jwt.encode(id_claims(), None, algorithm="none"), "algorithm"),  # type: ignore[arg-type]
    ("not.a.jwt", "not a JWT"),
])
def test_bad_id_tokens_are_refused(token: str, why: str) -> None:
    with pytest.raises(SignInError, match=why) as err:
        rp(FakeProvider({"id_token": token})).redeem(FORM)
    assert err.value.status == 401


def test_expiry_is_judged_by_our_clock() -> None:
    token = sign(id_claims())
    assert rp(FakeProvider({"id_token": token})).redeem(FORM).role == "uploader"
    with pytest.raises(SignInError, match="expired"):
        rp(FakeProvider({"id_token": token}), clock=lambda: time.time() + 3600).redeem(FORM)


def test_a_person_without_histo_group_or_account_is_refused_with_the_reason() -> None:
    with pytest.raises(SignInError, match="no histo group") as err:
        rp(FakeProvider({"id_token": sign(id_claims(groups=["staff"]))})).redeem(FORM)
    assert err.value.status == 403 and err.value.code == "no_histo_role"
    with pytest.raises(SignInError, match="not a histo account"):
        rp(FakeProvider({"id_token": sign(id_claims(username="Robert'); DROP"))})).redeem(FORM)


def test_provider_refusals_become_readable_4xx() -> None:
    p = FakeProvider({"error": "invalid_grant", "error_description": "invalid code_verifier"}, status=400)
    with pytest.raises(SignInError, match="invalid code_verifier") as err:
        rp(p).redeem(FORM)
    assert (err.value.status, err.value.code) == (400, "invalid_grant")
    with pytest.raises(SignInError, match="code_verifier must be"):
        rp(p).redeem({**FORM, "code_verifier": "short"})
    with pytest.raises(SignInError, match="'nonce'"):
        rp(p).redeem({k: v for k, v in FORM.items() if k != "nonce"})
    assert len(p.forms) == 1  # malformed requests never reach the provider


def test_roles_by_group() -> None:
    assert role_for(["histo-viewer", "histo-admin"]) == "admin"
    assert role_for(["histo-viewer"]) == "viewer"
    assert role_for(["admin", "uploader"]) is None and role_for(None) is None and role_for("histo-admin") is None


def cc_token(**over: Any) -> str:
    now = int(time.time())
    return sign({"iss": ISS, "aud": "cid", "sub": "cid", "iat": now, "exp": now + 300, **over})


def test_client_credentials_give_only_granted_scopes() -> None:
    grants = {"cid": {"name": "ci", "roles": ["uploader"]}}
    who = rp(FakeProvider({"access_token": cc_token()}), grants=grants).client_credentials("cid", "sec", "uploader")
    assert (who.sub, who.role) == ("client.ci", "uploader")
    with pytest.raises(SignInError, match="may not ask for admin") as err:
        rp(FakeProvider({"access_token": cc_token()}), grants=grants).client_credentials("cid", "sec", "admin")
    assert err.value.code == "insufficient_scope"
    with pytest.raises(SignInError, match="no histo grant"):
        rp(FakeProvider({"access_token": cc_token()})).client_credentials("cid", "sec", "uploader")
    with pytest.raises(SignInError, match="another client"):  # a token of another client is not this one's
        rp(FakeProvider({"access_token": cc_token(aud="x", sub="x")}), grants=grants).client_credentials(
            "cid", "sec", "uploader")
    with pytest.raises(SignInError, match="scope must be"):
        rp(FakeProvider({}), grants=grants).client_credentials("cid", "sec", "root")


def test_pkce_s256_matches_rfc7636_appendix_b() -> None:
    assert challenge_of("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk") == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    a = Attempt("http://127.0.0.1:5000/callback")
    q = dict(p.split("=", 1) for p in a.authorize_url(DISCOVERY | {"client_id": "web"}).split("?", 1)[1].split("&"))
    assert q["code_challenge_method"] == "S256" and q["code_challenge"] == challenge_of(a.verifier)
    digest = base64.urlsafe_b64encode(hashlib.sha256(a.verifier.encode()).digest()).rstrip(b"=").decode()
    assert q["code_challenge"] == digest and a.verifier not in a.authorize_url(DISCOVERY | {"client_id": "w"})
    assert len({Attempt("x").state for _ in range(20)}) == 20


def test_callback_state_error_and_code() -> None:
    a = Attempt("http://127.0.0.1/callback")
    assert a.code_from({"state": a.state, "code": "c"}) == "c"
    with pytest.raises(CallbackError, match="state mismatch"):
        a.code_from({"state": "other", "code": "c"})
    with pytest.raises(CallbackError, match="access_denied"):
        a.code_from({"state": a.state, "error": "access_denied"})
    with pytest.raises(CallbackError, match="no code"):
        a.code_from({"state": a.state})


def test_receipt_key_files_in_every_published_form() -> None:
    pem = "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"
    assert receipts.load_keys(json.dumps({"key": "histo-receipts", "keys": {"histo-receipts:1": pem}}), "x") == \
        {"histo-receipts:1": pem}
    assert receipts.load_keys(json.dumps({"histo-receipts:2": pem}), "x") == {"histo-receipts:2": pem}
    assert receipts.load_keys(pem, "histo-receipts:3") == {"histo-receipts:3": pem}
    for bad in ("hello", "[1, 2]", '{"keys": {"a": 1}}'):
        with pytest.raises(ValueError):
            receipts.load_keys(bad, "x")


def test_the_provider_is_one_vault_node_even_when_the_address_lists_several() -> None:
    from histo.master.signin import provider_url
    assert provider_url("https://192.168.56.10:8200/") == "https://192.168.56.10:8200/v1/identity/oidc/provider/histo"
    assert provider_url("https://192.168.56.10:8200, https://192.168.56.16:8200,https://192.168.56.17:8200") == \
        "https://192.168.56.10:8200/v1/identity/oidc/provider/histo"
