"""One sign-in attempt's secrets (RFC 7636 PKCE S256, OIDC state and nonce) and the checks a client
makes on the provider's answer before anything is sent to the master."""
from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import urllib.parse
from dataclasses import dataclass, field
from typing import Mapping


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def challenge_of(verifier: str) -> str:
    return _b64url(hashlib.sha256(verifier.encode()).digest())


class CallbackError(Exception):
    """The provider's redirect is refused (one readable sentence)."""


@dataclass(frozen=True)
class Attempt:
    redirect_uri: str
    verifier: str = field(default_factory=lambda: secrets.token_urlsafe(48))
    state: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    nonce: str = field(default_factory=lambda: secrets.token_urlsafe(24))

    def authorize_url(self, config: Mapping[str, str]) -> str:
        query = {"client_id": config["client_id"], "response_type": "code",
                 "scope": config.get("scope", "openid histo"), "redirect_uri": self.redirect_uri,
                 "state": self.state, "nonce": self.nonce,
                 "code_challenge": challenge_of(self.verifier), "code_challenge_method": "S256"}
        return f"{config['authorization_endpoint']}?{urllib.parse.urlencode(query)}"

    def code_from(self, params: Mapping[str, str]) -> str:
        """The code of the redirect, if its state is this attempt's (else a forged or stale redirect)."""
        if not hmac.compare_digest(str(params.get("state", "")), self.state):
            raise CallbackError("the sign-in answer is not for this attempt (state mismatch); sign in again")
        if params.get("error"):
            why = str(params.get("error_description") or params["error"])[:200]
            raise CallbackError(f"the identity provider refused: {why}")
        code = params.get("code")
        if not code:
            raise CallbackError("the identity provider's answer has no code")
        return str(code)

    def token_form(self, code: str) -> dict[str, str]:
        return {"grant_type": "authorization_code", "code": code, "code_verifier": self.verifier,
                "redirect_uri": self.redirect_uri, "nonce": self.nonce}
