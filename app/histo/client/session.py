"""The signed-in user's token file (0600, written atomically by files.write_private): which cluster,
which CA, the API token and when it expires. Commands read the token from here, never from the
command line, where other users could see it in the process list."""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ..files import private_dir, write_private


class SessionError(Exception):
    """No usable token file (one readable sentence)."""


def default_path() -> Path:
    env = os.environ.get("HISTO_TOKEN_FILE")
    if env:
        return Path(env)
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "histo" / "token.json"


@dataclass(frozen=True)
class Session:
    url: str
    ca: str
    access_token: str
    expires_at: float
    sub: str
    role: str

    def save(self, path: Path) -> None:
        private_dir(path.parent)
        write_private(path, json.dumps(asdict(self), indent=1) + "\n")

    @classmethod
    def load(cls, path: Path) -> "Session":
        try:
            doc = json.loads(path.read_text())
            session = cls(**{k: doc[k] for k in ("url", "ca", "access_token", "expires_at", "sub", "role")})
        except FileNotFoundError:
            raise SessionError(f"not signed in ({path} does not exist): run `histo login`") from None
        except (OSError, ValueError, KeyError, TypeError):
            raise SessionError(f"{path} is not a histo token file: run `histo login` again") from None
        if path.stat().st_mode & 0o077:
            raise SessionError(f"{path} is readable by others: chmod 600 it, or run `histo login` again")
        if session.expires_at <= time.time():
            raise SessionError(f"the token of {session.sub} has expired: run `histo login` again")
        return session
