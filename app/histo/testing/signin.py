"""What OpenBao's sign-in page does for a person, without a browser: log in with userpass, then ask
the provider's authorize endpoint for a code (the page calls the same API, then redirects to the
redirect URI). Shared by the sign-in integration tests; the Chromium test uses the page itself."""
from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any


def _call(url: str, ca: str, data: dict[str, Any] | None = None, token: str | None = None) -> tuple[int, Any]:
    req = urllib.request.Request(url, data=json.dumps(data).encode() if data is not None else None,
                                 method="POST" if data is not None else "GET")
    if token:
        req.add_header("X-Vault-Token", token)
    try:
        with urllib.request.urlopen(req, context=ssl.create_default_context(cafile=ca), timeout=10) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def person_token(vault_url: str, ca: str, name: str, password: str) -> str:
    status, body = _call(f"{vault_url}/v1/auth/userpass/login/{name}", ca, {"password": password})
    if status != 200:
        raise AssertionError(f"userpass login of {name} failed: {status} {body}")
    return str(body["auth"]["client_token"])


def authorize(vault_url: str, ca: str, token: str, authorize_url: str) -> tuple[int, dict[str, Any]]:
    """The provider's answer to the authorize request behind `authorize_url` (the UI's address):
    {code, state} or {error, error_description}."""
    parsed = urllib.parse.urlsplit(authorize_url)
    api = parsed.path.replace("/ui/vault/", "/v1/", 1)
    status, body = _call(f"{vault_url}{api}?{parsed.query}", ca, token=token)
    return status, body if isinstance(body, dict) else {}


def password_of(root: Path, name: str) -> str:
    return (root / "people" / f"{name}.password").read_text().strip()
