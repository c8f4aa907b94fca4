"""Sign-in on the deployed cluster (issue 19), from the controller as the operator's browser would be:
OpenBao on vault:8200 (allowed from the controller by the matrix) is the identity provider, the masters
are the relying party. Standard library only: the sign-in page's part is its API (userpass login, then
the provider's authorize endpoint), which is what the page itself calls."""
from __future__ import annotations

import base64
import hashlib
import json
import secrets
import ssl
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import pytest

from attack.deployed import DeployedCluster

from .api import request


def _vault(cluster: DeployedCluster, method: str, path: str, body: dict[str, Any] | None = None,
           token: str | None = None) -> tuple[int, dict[str, Any]]:
    vault = cluster.group("vault")[0]
    ctx = ssl.create_default_context(cafile=str(cluster.state / "vault-tls" / "ca.pem"))
    req = urllib.request.Request(f"https://{vault.address}:{cluster.ports['vault']}{path}", method=method,
                                 data=json.dumps(body).encode() if body is not None else None)
    if token:
        req.add_header("X-Vault-Token", token)
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=30) as resp:
            return resp.status, _json(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, _json(exc.read())


def _json(raw: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(raw or b"{}")
    except ValueError:  # the UI's HTML
        return {}
    return doc if isinstance(doc, dict) else {}


def _first_account(cluster: DeployedCluster) -> tuple[str, str]:
    name, _groups, path = (cluster.state / "people" / "accounts").read_text().splitlines()[0].split(" ", 2)
    return name, open(path).read().strip()


def _form(cluster: DeployedCluster, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
    status, raw, _ = request(cluster, "POST", "/api/v1/oauth/token", body=urllib.parse.urlencode(form).encode(),
                             headers={"Content-Type": "application/x-www-form-urlencoded"})
    return status, json.loads(raw)


def test_signin_url_is_openbaos_page_on_the_vault_machine(cluster: DeployedCluster) -> None:
    status, raw, _ = request(cluster, "GET", "/api/v1/signin")
    assert status == 200, raw
    conf = json.loads(raw)
    vault = cluster.group("vault")[0]
    assert conf["authorization_endpoint"] == (f"https://{vault.address}:{cluster.ports['vault']}"
                                              "/ui/vault/identity/oidc/provider/histo/authorize")
    status, _ = _vault(cluster, "GET", "/ui/")
    assert status == 200  # the page is served (ui = true) and reachable from the controller


@pytest.mark.drill
def test_first_account_signs_in_and_an_unregistered_redirect_is_refused(cluster: DeployedCluster) -> None:
    for f in (cluster.state / "people").iterdir():
        assert f.stat().st_mode & 0o077 == 0, f
    conf = json.loads(request(cluster, "GET", "/api/v1/signin")[1])
    name, password = _first_account(cluster)
    status, login = _vault(cluster, "POST", f"/v1/auth/userpass/login/{name}", {"password": password})
    assert status == 200
    token = login["auth"]["client_token"]
    verifier, state, nonce = secrets.token_urlsafe(48), secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()

    def authorize(redirect: str) -> tuple[int, dict[str, Any]]:
        q = urllib.parse.urlencode({"client_id": conf["client_id"], "response_type": "code", "scope": conf["scope"],
                                    "redirect_uri": redirect, "state": state, "nonce": nonce,
                                    "code_challenge": challenge, "code_challenge_method": "S256"})
        return _vault(cluster, "GET", f"/v1/identity/oidc/provider/histo/authorize?{q}", token=token)

    status, answer = authorize("https://attacker.invalid/")
    assert status == 400 and answer["error"] == "invalid_redirect_uri"
    redirect = cluster.env["HISTO_URL"] + "/"
    status, answer = authorize(redirect)
    assert status == 200 and answer["state"] == state
    status, body = _form(cluster, {"grant_type": "authorization_code", "code": answer["code"],
                                   "code_verifier": verifier, "redirect_uri": redirect, "nonce": nonce})
    assert status == 200 and body["sub"] == name, body
    assert request(cluster, "GET", "/api/v1/jobs", body["access_token"])[0] in (200, 403)


@pytest.mark.drill
def test_machine_client_gets_its_scopes_only(cluster: DeployedCluster) -> None:
    client_file = cluster.state / "people" / "ci.client"
    ci = json.loads(client_file.read_text())
    ok, body = _form(cluster, {"grant_type": "client_credentials", **ci, "scope": "uploader"})
    assert ok == 200 and body["role"] == "uploader", body
    refused, body = _form(cluster, {"grant_type": "client_credentials", **ci, "scope": "admin"})
    assert refused == 403 and body["error"] == "insufficient_scope"
