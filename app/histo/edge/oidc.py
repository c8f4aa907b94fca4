"""The master as an OIDC relying party of OpenBao's identity provider (vault/people.py configures it).

People: the browser (or `histo login`) runs authorization code + PKCE (S256) with `state` and
`nonce`; it checks `state` itself and hands code, verifier, redirect URI and nonce to the master,
which redeems the code at OpenBao's token endpoint with the web client's secret and accepts the ID
token only if it verifies against the provider's JWKS and names the provider (`iss`), histo's
client (`aud`), a time not past (`exp`) and the nonce of this sign-in. OpenBao itself refuses an
unregistered redirect URI, a missing or wrong verifier and a code used twice.

Scripts: client credentials. OpenBao lets any of its clients ask for any scope, so the scope a
script may have is histo's decision: the grants vault-setup wrote (client_id -> roles).

Either way the outcome is an Identity (a subject and one histo role); the master then issues its own
short-lived API token, signed by Vault transit, exactly as for any other caller."""
from __future__ import annotations

import hmac
import re
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import jwt

ROLE_ORDER = ("admin", "uploader", "viewer")  # a person in several histo groups gets the first
GROUP_PREFIX = "histo-"
ALGORITHMS = ["ES256"]  # the provider's key (vault/people.py); never "none", never HMAC
LEEWAY = 5
KEYS_REFRESH = 60.0  # seconds: an unknown kid is looked up again at most this often
MAX_FIELD = 2048
_NAME = re.compile(r"[a-z][a-z0-9_.-]{0,31}")
_VERIFIER = re.compile(r"[A-Za-z0-9._~-]{43,128}")  # RFC 7636 section 4.1


class SignInError(Exception):
    """Sign-in refused: `status` and `code` for the JSON error, the message one readable sentence."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code = status, code


@dataclass(frozen=True)
class Identity:
    sub: str
    role: str
    how: str  # "oidc" or "client_credentials"


HttpPost = Callable[[str, Mapping[str, str]], tuple[int, dict[str, Any]]]
HttpGet = Callable[[str], dict[str, Any]]


def role_for(groups: Any) -> str | None:
    """The histo role of a person from their OpenBao groups (histo-admin, histo-uploader, histo-viewer)."""
    names = {g for g in groups if isinstance(g, str)} if isinstance(groups, list) else set()
    return next((r for r in ROLE_ORDER if GROUP_PREFIX + r in names), None)


def _field(form: Mapping[str, str], name: str) -> str:
    value = form.get(name, "")
    if not isinstance(value, str) or not value or len(value) > MAX_FIELD:
        raise SignInError(400, "invalid_request", f"the field {name!r} is missing or too long")
    return value


class RelyingParty:
    """`provider_url` is OpenBao's `<vault>/v1/identity/oidc/provider/<name>` as the master reaches it;
    the issuer the tokens must name comes from its discovery document (fetched over the master's
    verified TLS channel to Vault)."""

    def __init__(self, provider_url: str, web_client: Callable[[], tuple[str, str]],
                 grants: Callable[[], Mapping[str, Any]], post: HttpPost, get: HttpGet,
                 clock: Callable[[], float] = time.time) -> None:
        self.provider_url = provider_url.rstrip("/")
        self._web_client, self._grants, self._post, self._get = web_client, grants, post, get
        self._clock = clock
        self._lock = threading.Lock()
        self._discovery: dict[str, Any] | None = None
        self._keys: dict[str, jwt.PyJWK] = {}
        self._keys_at = 0.0

    # -- provider metadata -------------------------------------------------------------------
    def discovery(self) -> dict[str, Any]:
        with self._lock:
            if self._discovery is None:
                self._discovery = self._get(self.provider_url + "/.well-known/openid-configuration")
            return self._discovery

    @property
    def issuer(self) -> str:
        return str(self.discovery()["issuer"])

    def public_config(self) -> dict[str, Any]:
        """What a browser or `histo login` needs to start a sign-in (nothing secret)."""
        d = self.discovery()
        return {"authorization_endpoint": d["authorization_endpoint"], "issuer": d["issuer"],
                "client_id": self._web_client()[0], "scope": "openid histo", "code_challenge_method": "S256"}

    def _key(self, kid: str) -> jwt.PyJWK:
        with self._lock:
            if kid not in self._keys and self._clock() - self._keys_at >= KEYS_REFRESH or not self._keys:
                jwks = self._get(self.provider_url + "/.well-known/keys")
                self._keys = {k["kid"]: jwt.PyJWK(k) for k in jwks.get("keys", [])
                              if isinstance(k, dict) and k.get("kid") and k.get("alg") in ALGORITHMS}
                self._keys_at = self._clock()
            key = self._keys.get(kid)
        if key is None:
            raise SignInError(401, "invalid_token", "the ID token is signed by a key the provider does not publish")
        return key

    def verify_jwt(self, token: str, audience: str, nonce: str | None) -> dict[str, Any]:
        """Signature (JWKS), iss, aud, exp (our clock) and, for an ID token, the nonce."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise SignInError(401, "invalid_token", "the ID token is not a JWT") from None
        if header.get("alg") not in ALGORITHMS or not isinstance(header.get("kid"), str):
            raise SignInError(401, "invalid_token", f"the ID token's algorithm {header.get('alg')!r} is refused")
        try:
            claims: dict[str, Any] = jwt.decode(
                token, self._key(header["kid"]), algorithms=ALGORITHMS, audience=audience, issuer=self.issuer,
                options={"require": ["iss", "aud", "exp", "iat", "sub"], "verify_exp": False, "verify_iat": False})
        except jwt.InvalidAudienceError:
            raise SignInError(401, "invalid_token", "the ID token was issued for another client") from None
        except jwt.InvalidIssuerError:
            raise SignInError(401, "invalid_token", "the ID token was issued by another provider") from None
        except jwt.PyJWTError:
            raise SignInError(401, "invalid_token", "the ID token's signature or claims do not verify") from None
        exp = claims.get("exp")
        if isinstance(exp, bool) or not isinstance(exp, (int, float)) or exp <= self._clock() - LEEWAY:
            raise SignInError(401, "invalid_token", "the ID token has expired; sign in again")
        if nonce is not None and not hmac.compare_digest(str(claims.get("nonce", "")), nonce):
            raise SignInError(401, "invalid_token", "the ID token's nonce is not this sign-in's")
        return claims

    def _token(self, form: dict[str, str]) -> dict[str, Any]:
        status, body = self._post(self.provider_url + "/token", form)
        if status != 200:
            err = str(body.get("error") or "invalid_grant")
            what = str(body.get("error_description") or "the provider refused")
            code = 401 if err == "invalid_client" else 400
            raise SignInError(code, err if re.fullmatch(r"[a-z_]{1,40}", err) else "invalid_grant",
                              f"the identity provider refused: {what[:200]}")
        return body

    # -- people: authorization code + PKCE --------------------------------------------------------
    def redeem(self, form: Mapping[str, str]) -> Identity:
        code, verifier = _field(form, "code"), _field(form, "code_verifier")
        redirect_uri, nonce = _field(form, "redirect_uri"), _field(form, "nonce")
        if not _VERIFIER.fullmatch(verifier):
            raise SignInError(400, "invalid_request", "code_verifier must be 43-128 characters (RFC 7636)")
        client_id, secret = self._web_client()
        body = self._token({"grant_type": "authorization_code", "code": code, "code_verifier": verifier,
                            "redirect_uri": redirect_uri, "client_id": client_id, "client_secret": secret})
        id_token = body.get("id_token")
        if not isinstance(id_token, str):
            raise SignInError(401, "invalid_token", "the identity provider answered without an ID token")
        claims = self.verify_jwt(id_token, client_id, nonce)
        name = claims.get("username")
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise SignInError(403, "no_histo_account", "this OpenBao identity is not a histo account")
        role = role_for(claims.get("groups"))
        if role is None:
            raise SignInError(403, "no_histo_role", f"{name} signed in, but is in no histo group (uploader, "
                                                    "viewer or admin): ask an administrator to add you to one")
        return Identity(sub=name, role=role, how="oidc")

    # -- scripts: client credentials ---------------------------------------------------------------
    def client_credentials(self, client_id: str, client_secret: str, scope: str) -> Identity:
        if scope not in ROLE_ORDER:
            raise SignInError(400, "invalid_scope", f"scope must be one of {', '.join(ROLE_ORDER)}")
        body = self._token({"grant_type": "client_credentials", "client_id": client_id,
                            "client_secret": client_secret, "scope": "openid"})
        token = body.get("access_token")
        if not isinstance(token, str):
            raise SignInError(401, "invalid_token", "the identity provider answered without an access token")
        claims = self.verify_jwt(token, client_id, None)
        grant = self._grants().get(str(claims["sub"]))
        if not isinstance(grant, dict) or claims["sub"] != client_id:
            raise SignInError(403, "unauthorized_client", "this client has no histo grant")
        if scope not in (grant.get("roles") or []):
            allowed = ", ".join(grant.get("roles") or []) or "nothing"
            raise SignInError(403, "insufficient_scope",
                              f"client {grant.get('name')} may not ask for {scope}; it may ask for {allowed}")
        return Identity(sub=f"client.{grant['name']}", role=scope, how="client_credentials")
