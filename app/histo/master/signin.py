"""Sign-in routes of the master (edge/oidc.py is the logic):

  GET  /api/v1/signin          what a browser or `histo login` needs to start (public, nothing secret)
  POST /api/v1/signout         the caller's token revoked on every master (Sign out)
  POST /api/v1/oauth/token     form: grant_type=authorization_code (code, code_verifier, redirect_uri,
                               nonce) or grant_type=client_credentials (client_id, client_secret or
                               HTTP Basic, scope = a histo role); answers a histo API token

Every refusal is a JSON error, an audit line and an `auth_failure` SecOps event, and counts against
the caller's address like a bad bearer token does."""
from __future__ import annotations

import asyncio
import base64
import binascii
from typing import TYPE_CHECKING, Any, Mapping

from aiohttp import web

from ..edge.middleware import json_error
from ..edge.oidc import Identity, RelyingParty, SignInError
from ..edge.tokens import issue_token
from ..vault import people
from . import receiptkeys

if TYPE_CHECKING:
    from .auth import Authenticator
    from .service import Master

TOKEN_TTL = 900  # seconds: a signed-in person's API token (sign in again after)
FORM_MAX = 8192


def relying_party(master: "Master") -> RelyingParty:
    vault = master.rt.vault

    def session() -> Any:
        return vault.client.session

    def post(url: str, form: Mapping[str, str]) -> tuple[int, dict[str, Any]]:
        resp = session().post(url, data=dict(form), timeout=10)
        try:
            body = resp.json()
        except ValueError:
            body = {}
        return resp.status_code, body if isinstance(body, dict) else {}

    def get(url: str) -> dict[str, Any]:
        resp = session().get(url, timeout=10)
        resp.raise_for_status()
        body = resp.json()
        return body if isinstance(body, dict) else {}

    def web_client() -> tuple[str, str]:
        resp: Any = vault.client.read(f"identity/oidc/client/{people.WEB_CLIENT}")
        data = resp["data"]
        return str(data["client_id"]), str(data["client_secret"])

    def grants() -> Mapping[str, Any]:
        data = vault.client.secrets.kv.v2.read_secret_version(people.MACHINE_CLIENTS_KV, mount_point="secret",
                                                               raise_on_deleted_version=True)["data"]["data"]
        clients = data.get("clients") if isinstance(data, dict) else None
        return clients if isinstance(clients, dict) else {}

    return RelyingParty(provider_url(vault.url), web_client, grants, post, get)


def provider_url(vault_url: str) -> str:
    """OpenBao's provider `<vault>/v1/identity/oidc/provider/histo` as the master reaches it. A Vault
    address may list several nodes, comma-separated (a raft cluster): the provider is the first one,
    the node vault_config names as the issuer (roles/vault_config: `issuer`), never the list pasted
    into one URL (which made every sign-in answer 503 on a three-node Vault)."""
    first = next((u.strip() for u in str(vault_url).split(",") if u.strip()), "")
    return f"{first.rstrip('/')}/v1/identity/oidc/provider/{people.PROVIDER}"


def _basic(request: web.Request) -> tuple[str, str] | None:
    header = request.headers.get("Authorization", "")
    if not header.startswith("Basic "):
        return None
    try:
        user, sep, password = base64.b64decode(header[6:], validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        raise json_error(400, "invalid_request", "malformed Basic authorization") from None
    return (user, password) if sep else None


class SignIn:
    def __init__(self, master: "Master") -> None:
        self.m = master
        self._rp: RelyingParty | None = None

    @property
    def rp(self) -> RelyingParty:
        if self._rp is None:
            self._rp = relying_party(self.m)
        return self._rp

    async def _blocking(self, fn: Any, *args: Any) -> Any:
        try:
            return await asyncio.get_running_loop().run_in_executor(None, fn, *args)
        except SignInError:
            raise
        except Exception as exc:  # Vault away or not configured for sign-in
            raise json_error(503, "signin_unavailable", f"sign-in is unavailable right now ({type(exc).__name__})",
                             headers={"Retry-After": "5"}) from None

    @property
    def auth(self) -> "Authenticator":
        auth = self.m.auth
        if auth is None:  # routes are served only once the master is set up
            raise json_error(503, "not_ready", "this master is starting", headers={"Retry-After": "2"})
        return auth

    async def config(self, request: web.Request) -> web.Response:
        self.auth.gate(request)
        return web.json_response(await self._blocking(self.rp.public_config))

    async def token(self, request: web.Request) -> web.Response:
        auth = self.auth
        addr = auth.gate(request)
        if request.content_length is not None and request.content_length > FORM_MAX:
            raise json_error(400, "invalid_request", f"body larger than {FORM_MAX} bytes")
        if request.content_type != "application/x-www-form-urlencoded":
            raise json_error(400, "invalid_request", "send the fields form-encoded (application/x-www-form-urlencoded)")
        form = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
        grant = form.get("grant_type")
        try:
            if grant == "authorization_code":
                who: Identity = await self._blocking(self.rp.redeem, form)
            elif grant == "client_credentials":
                cred = _basic(request) or (form.get("client_id", ""), form.get("client_secret", ""))
                if not cred[0] or not cred[1]:
                    raise SignInError(401, "invalid_client", "client_id and client_secret are required")
                who = await self._blocking(self.rp.client_credentials, cred[0], cred[1], form.get("scope", ""))
            else:
                raise SignInError(400, "unsupported_grant_type",
                                  "grant_type must be authorization_code or client_credentials")
        except SignInError as exc:
            auth.failed(request, addr, f"sign-in refused: {exc.code}")
            raise json_error(exc.status, exc.code, str(exc)) from None
        token = await self._blocking(self._issue, who)
        self.m.audit.record(who=who.sub, role=who.role, what="POST /api/v1/oauth/token", where=addr,
                            decision="allow", why=f"signed in ({who.how})")
        self.m.emit("signed_in", severity="info", who=who.sub, role=who.role, how=who.how, where=addr)
        return web.json_response({"access_token": token, "token_type": "Bearer", "expires_in": TOKEN_TTL,
                                  "sub": who.sub, "role": who.role},
                                 headers={"Cache-Control": "no-store", "Pragma": "no-cache"})

    async def signout(self, request: web.Request) -> web.Response:
        """Sign out: the caller's own token is revoked on every master (any role may end its own)."""
        principal = await self.auth.require(request, ("uploader", "viewer", "admin"))
        await asyncio.get_running_loop().run_in_executor(None, self.auth.revoke, principal.jti, principal.exp)
        self.m.audit_decision(principal, request, "sign out", True, f"jti {principal.jti}")
        self.m.emit("signed_out", severity="info", who=principal.sub)
        return web.json_response({"revoked": principal.jti})

    def _issue(self, who: Identity) -> str:
        return issue_token(self.m.rt.vault.client, role=who.role, subject=who.sub, ttl_seconds=TOKEN_TTL)


def add_routes(app: web.Application, master: "Master", prefix: str) -> None:
    receiptkeys.add_routes(app, master, prefix)
    s = SignIn(master)
    app.router.add_get(prefix + "/api/v1/signin", s.config)
    app.router.add_post(prefix + "/api/v1/oauth/token", s.token)
    app.router.add_post(prefix + "/api/v1/signout", s.signout)
