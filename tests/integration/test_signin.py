"""Sign-in through OpenBao's OIDC provider against the real cluster: a real OpenBao (its authorize and
token endpoints, its JWKS), real masters as the relying party. Each refusal sits beside the working
path it is a variant of."""
from __future__ import annotations

import base64
import itertools
import json
import time
import urllib.parse
from typing import Any, Callable, Iterator

import hvac
import pytest
import requests

from histo.client.pkce import Attempt, CallbackError
from histo.edge.oidc import RelyingParty, SignInError
from histo.testing.attacker import call_from
from histo.testing.cluster import Cluster
from histo.testing.signin import authorize, password_of, person_token
from .cluster_fixture import NET


@pytest.fixture(scope="module")
def idp(cluster: Cluster) -> dict[str, Any]:
    cfg = cluster.config("master1")
    status, _, body = cluster.request("GET", "/api/v1/signin")
    assert status == 200, body
    conf: dict[str, Any] = json.loads(body)
    return {"vault": cfg["vault_url"], "ca": cfg["vault_ca"], "config": conf}


def _code(cluster: Cluster, idp: dict[str, Any], name: str = "bob",
          redirect_uri: str | None = None) -> tuple[Attempt, int, dict[str, Any]]:
    attempt = Attempt(redirect_uri or cluster.url + "/")
    token = person_token(idp["vault"], idp["ca"], name, password_of(cluster.root, name))
    status, answer = authorize(idp["vault"], idp["ca"], token, attempt.authorize_url(idp["config"]))
    return attempt, status, answer


_SOURCES = itertools.cycle(f"{NET}.{n}" for n in range(100, 200))


def _call(cluster: Cluster, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None,
          url: str | None = None) -> tuple[int, bytes]:
    """From a loopback source address of its own each time: the refusals these tests provoke count as
    authentication failures, and must not throttle the address every other test uses."""
    status, _, raw = call_from(cluster, next(_SOURCES), method, path, body, headers, url, timeout=30)
    return status, raw


def _redeem(cluster: Cluster, form: dict[str, str], url: str | None = None) -> tuple[int, dict[str, Any]]:
    body = urllib.parse.urlencode(form).encode()
    status, raw = _call(cluster, "POST", "/api/v1/oauth/token", body, url=url,
                        headers={"Content-Type": "application/x-www-form-urlencoded"})
    answer: dict[str, Any] = json.loads(raw)
    return status, answer


def test_signin_config_is_public_and_names_openbao_page(idp: dict[str, Any]) -> None:
    conf = idp["config"]
    assert conf["authorization_endpoint"].endswith("/ui/vault/identity/oidc/provider/histo/authorize")
    assert conf["code_challenge_method"] == "S256" and conf["client_id"]
    assert "secret" not in json.dumps(conf)


def test_person_signs_in_and_uses_the_token(cluster: Cluster, idp: dict[str, Any]) -> None:
    attempt, status, answer = _code(cluster, idp, "bob")
    assert status == 200, answer
    code = attempt.code_from(answer)
    status, body = _redeem(cluster, attempt.token_form(code))
    assert status == 200, body
    assert body["sub"] == "bob" and body["role"] == "uploader" and body["token_type"] == "Bearer"
    status, _, _ = cluster.request("GET", "/api/v1/jobs", token=body["access_token"])
    assert status == 200
    status, _, _ = cluster.request("GET", "/api/v1/cluster", token=body["access_token"])
    assert status == 403  # an uploader is not a viewer: the group decided the role


def test_admin_and_viewer_groups_map_to_their_roles(cluster: Cluster, idp: dict[str, Any]) -> None:
    for name, role in (("alice", "admin"), ("carol", "viewer")):
        attempt, _, answer = _code(cluster, idp, name)
        status, body = _redeem(cluster, attempt.token_form(attempt.code_from(answer)), url=cluster.urls[-1])
        assert status == 200 and body["role"] == role, body


def test_person_without_histo_group_is_refused_with_the_reason(cluster: Cluster, idp: dict[str, Any]) -> None:
    attempt, status, answer = _code(cluster, idp, "dave")
    assert status == 200, answer  # OpenBao lets dave sign in ...
    status, body = _redeem(cluster, attempt.token_form(attempt.code_from(answer)))
    assert status == 403 and body["error"] == "no_histo_role"  # ... histo says why it will not
    assert "dave" in body["message"] and "group" in body["message"]


def test_unregistered_redirect_uri_is_refused_by_openbao(cluster: Cluster, idp: dict[str, Any]) -> None:
    _, status, answer = _code(cluster, idp, "bob", redirect_uri="https://evil.example/")
    assert status == 400 and answer["error"] == "invalid_redirect_uri"
    _, status, answer = _code(cluster, idp, "bob", redirect_uri=cluster.url + "/")
    assert status == 200 and answer["code"]


def test_missing_or_wrong_pkce_verifier_is_refused(cluster: Cluster, idp: dict[str, Any]) -> None:
    attempt, _, answer = _code(cluster, idp, "bob")
    form = attempt.token_form(attempt.code_from(answer))
    status, body = _redeem(cluster, {**form, "code_verifier": Attempt("x").verifier})
    assert status == 400 and body["error"] == "invalid_grant", body
    attempt, _, answer = _code(cluster, idp, "bob")
    form = attempt.token_form(attempt.code_from(answer))
    status, body = _redeem(cluster, {k: v for k, v in form.items() if k != "code_verifier"})
    assert status == 400 and body["error"] == "invalid_request", body
    attempt, _, answer = _code(cluster, idp, "bob")
    status, body = _redeem(cluster, attempt.token_form(attempt.code_from(answer)))
    assert status == 200, body


def test_replayed_code_is_refused(cluster: Cluster, idp: dict[str, Any]) -> None:
    attempt, _, answer = _code(cluster, idp, "bob")
    form = attempt.token_form(attempt.code_from(answer))
    assert _redeem(cluster, form)[0] == 200
    status, body = _redeem(cluster, form, url=cluster.urls[-1])  # another master: still once only
    assert status == 400 and body["error"] == "invalid_grant", body


def test_nonce_mismatch_is_refused(cluster: Cluster, idp: dict[str, Any]) -> None:
    attempt, _, answer = _code(cluster, idp, "bob")
    form = attempt.token_form(attempt.code_from(answer))
    status, body = _redeem(cluster, {**form, "nonce": "not-the-nonce-of-this-sign-in"})
    assert status == 401 and "nonce" in body["message"], body


def test_state_mismatch_is_refused_by_the_client(cluster: Cluster, idp: dict[str, Any]) -> None:
    attempt, _, answer = _code(cluster, idp, "bob")
    with pytest.raises(CallbackError, match="state"):
        attempt.code_from({**answer, "state": "forged"})
    assert attempt.code_from(answer) == answer["code"]


def test_unknown_grant_and_bad_input_are_400s(cluster: Cluster) -> None:
    status, body = _redeem(cluster, {"grant_type": "password", "username": "bob"})
    assert status == 400 and body["error"] == "unsupported_grant_type"
    status, raw = _call(cluster, "POST", "/api/v1/oauth/token", b"{}", {"Content-Type": "application/json"})
    assert status == 400 and json.loads(raw)["error"] == "invalid_request"
    status, body = _redeem(cluster, {"grant_type": "authorization_code", "code": "x"})
    assert status == 400 and body["error"] == "invalid_request"


# -- the ID token itself, checked by the relying party against OpenBao's real JWKS ---------------------

@pytest.fixture(scope="module")
def other_client(cluster: Cluster, idp: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """A second client of the same provider (as another application would be): its ID tokens are
    signed by the same key, for another audience."""
    root = json.loads((cluster.root / "vault" / "init.json").read_text())["root_token"]
    vault = hvac.Client(url=idp["vault"], verify=idp["ca"], token=root)
    vault.write_data("identity/oidc/client/other", data={"key": "histo", "redirect_uris": ["https://other.test/"],
                                                         "assignments": ["histo-people"], "id_token_ttl": "5m"})
    data: dict[str, Any] = vault.read("identity/oidc/client/other")["data"]  # type: ignore[index]
    provider: dict[str, Any] = vault.read("identity/oidc/provider/histo")["data"]  # type: ignore[index]
    ids = sorted(set(provider["allowed_client_ids"]) | {data["client_id"]})
    vault.write_data("identity/oidc/provider/histo", data={"allowed_client_ids": ids})
    try:
        yield data
    finally:
        vault.write_data("identity/oidc/provider/histo", data={"allowed_client_ids": provider["allowed_client_ids"]})
        vault.delete("identity/oidc/client/other")


def _id_token(cluster: Cluster, idp: dict[str, Any], client: dict[str, Any]) -> tuple[str, str]:
    attempt = Attempt("https://other.test/")
    conf = {**idp["config"], "client_id": client["client_id"]}
    token = person_token(idp["vault"], idp["ca"], "bob", password_of(cluster.root, "bob"))
    _, answer = authorize(idp["vault"], idp["ca"], token, attempt.authorize_url(conf))
    form = {**attempt.token_form(attempt.code_from(answer)), "client_id": client["client_id"],
            "client_secret": client["client_secret"]}
    form.pop("nonce")
    resp = _session(idp).post(f"{idp['vault']}/v1/identity/oidc/provider/histo/token", data=form, timeout=10)
    assert resp.status_code == 200, resp.text
    return str(resp.json()["id_token"]), attempt.nonce


def _session(idp: dict[str, Any]) -> requests.Session:
    session = requests.Session()
    session.verify = idp["ca"]
    session.trust_env = False  # REQUESTS_CA_BUNDLE would override verify
    return session


def _rp(idp: dict[str, Any], clock: Callable[[], float] = time.time) -> RelyingParty:
    session = _session(idp)
    url = f"{idp['vault']}/v1/identity/oidc/provider/histo"
    return RelyingParty(url, lambda: ("unused", "unused"), dict,
                        lambda u, f: (0, {}), lambda u: session.get(u, timeout=10).json(), clock=clock)


def test_id_token_for_another_audience_or_tampered_or_expired_is_refused(
        cluster: Cluster, idp: dict[str, Any], other_client: dict[str, Any]) -> None:
    token, nonce = _id_token(cluster, idp, other_client)
    rp = _rp(idp)
    claims = rp.verify_jwt(token, other_client["client_id"], nonce)  # the legitimate audience: accepted
    assert claims["username"] == "bob" and "histo-uploader" in claims["groups"]
    with pytest.raises(SignInError, match="another client"):
        rp.verify_jwt(token, idp["config"]["client_id"], nonce)  # histo is not its audience
    h, c, s = token.split(".")
    body = json.loads(base64.urlsafe_b64decode(c + "=" * (-len(c) % 4)))
    forged = base64.urlsafe_b64encode(json.dumps({**body, "groups": ["histo-admin"]}).encode()).rstrip(b"=").decode()
    with pytest.raises(SignInError, match="signature"):
        rp.verify_jwt(f"{h}.{forged}.{s}", other_client["client_id"], nonce)
    flipped = s[:10] + ("A" if s[10] != "A" else "B") + s[11:]
    with pytest.raises(SignInError, match="signature"):
        rp.verify_jwt(f"{h}.{c}.{flipped}", other_client["client_id"], nonce)
    later = _rp(idp, clock=lambda: time.time() + 3600)
    with pytest.raises(SignInError, match="expired"):
        later.verify_jwt(token, other_client["client_id"], nonce)


# -- scripts: client credentials ----------------------------------------------------------------------

def _client(cluster: Cluster) -> dict[str, str]:
    ci: dict[str, str] = json.loads((cluster.root / "people" / "ci.client").read_text())
    return ci


def test_client_credentials_grant_its_scopes_only(cluster: Cluster) -> None:
    ci = _client(cluster)
    status, body = _redeem(cluster, {"grant_type": "client_credentials", **ci, "scope": "uploader"})
    assert status == 200 and body["role"] == "uploader" and body["sub"] == "client.ci", body
    assert cluster.request("GET", "/api/v1/jobs", token=body["access_token"])[0] == 200
    status, body = _redeem(cluster, {"grant_type": "client_credentials", **ci, "scope": "admin"})
    assert status == 403 and body["error"] == "insufficient_scope", body
    basic = base64.b64encode(f"{ci['client_id']}:{ci['client_secret']}".encode()).decode()
    status, raw = _call(cluster, "POST", "/api/v1/oauth/token", b"grant_type=client_credentials&scope=viewer",
                        {"Content-Type": "application/x-www-form-urlencoded", "Authorization": f"Basic {basic}"})
    assert status == 200 and json.loads(raw)["role"] == "viewer"


def test_client_credentials_with_a_wrong_secret_is_refused(cluster: Cluster) -> None:
    ci = _client(cluster)
    status, body = _redeem(cluster, {"grant_type": "client_credentials", "client_id": ci["client_id"],
                                     "client_secret": "x" * 40, "scope": "uploader"})
    assert status == 401 and body["error"] == "invalid_client", body


def test_passwords_and_client_secrets_are_private_files(cluster: Cluster) -> None:
    for f in (cluster.root / "people").iterdir():
        assert f.stat().st_mode & 0o077 == 0, f


def test_sign_out_revokes_the_token_everywhere(cluster: Cluster, idp: dict[str, Any]) -> None:
    attempt, _, answer = _code(cluster, idp, "bob")
    status, body = _redeem(cluster, attempt.token_form(attempt.code_from(answer)))
    token = body["access_token"]
    bearer = {"Authorization": f"Bearer {token}"}
    assert _call(cluster, "GET", "/api/v1/jobs", headers=bearer)[0] == 200
    assert _call(cluster, "POST", "/api/v1/signout", headers=bearer)[0] == 200
    assert _call(cluster, "GET", "/api/v1/jobs", headers=bearer)[0] == 401
    deadline = time.monotonic() + 10  # the other master learns it through ZooKeeper within seconds
    while _call(cluster, "GET", "/api/v1/jobs", headers=bearer, url=cluster.urls[-1])[0] != 401:
        assert time.monotonic() < deadline, "the other master still accepts a signed-out token"
        time.sleep(0.2)
    assert _call(cluster, "POST", "/api/v1/signout")[0] == 401  # nothing to sign out without a token


def test_receipt_keys_are_public(cluster: Cluster) -> None:
    status, raw = _call(cluster, "GET", "/api/v1/receipts/keys")
    keys = json.loads(raw)["keys"]
    assert status == 200 and keys and all(k.startswith("histo-receipts:") for k in keys)
    assert all("BEGIN PUBLIC KEY" in pem and "PRIVATE" not in pem for pem in keys.values())
