"""The operator's env file (`.histo/<mode>/env`, 0600): HISTO_URL, HISTO_URLS, HISTO_CA and
short-lived tokens for the three roles, signed by Vault's transit key with an issuer token.
One writer for `make local` and `make up` (`histo env write`), so both files say the same."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from .edge.tokens import issue_token
from .files import write_private

# The accounts the env file carries a token for: role -> subject.
ACCOUNTS = {"admin": "admin", "uploader": "alice", "viewer": "victor"}


def render(urls: list[str], ca: Path, tokens: Mapping[str, str], extra: Mapping[str, str] | None = None,
           public_url: str | None = None) -> str:
    """HISTO_URL is the cluster's one public address (held by a healthy master) when it has one, else
    the first master's; HISTO_URLS lists every master's own address."""
    if not urls:
        raise ValueError("at least one master URL is needed")
    env = {"HISTO_URL": public_url or urls[0], "HISTO_URLS": ",".join(urls), "HISTO_CA": str(Path(ca).resolve()),
           **(extra or {})}
    env.update({f"HISTO_TOKEN_{role.upper()}": tok for role, tok in tokens.items()})
    for key, value in env.items():
        if "\n" in value or "=" in key:
            raise ValueError(f"{key}: a value of the env file cannot hold a newline")
    return "".join(f"{k}={v}\n" for k, v in env.items())


def write_env(path: Path, urls: list[str], ca: Path, signer: Any, ttl_seconds: int,
              extra: Mapping[str, str] | None = None, public_url: str | None = None) -> dict[str, str]:
    """Issue one token per account with `signer` (an hvac client holding an issuer token) and write
    the env file atomically, 0600. Returns the tokens by role."""
    tokens = {role: issue_token(signer, role=role, subject=sub, ttl_seconds=ttl_seconds)
              for role, sub in ACCOUNTS.items()}
    write_private(Path(path), render(urls, ca, tokens, extra, public_url))
    return tokens
