"""The audit log: one JSON line per security decision, append-only, rotated, mode 0600, and never a
token or a secret in it (every field is redacted before it is encoded)."""
from __future__ import annotations

import io
import json
import logging
import logging.handlers
import os
import re
from datetime import datetime, timezone
from pathlib import Path

_SECRETISH = re.compile(
    r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*"      # a JWT / JWS (its header starts '{"')
    r"|\b(?:hvs|hvb|hvr|s|b|r)\.[A-Za-z0-9_-]{20,}"                 # Vault / OpenBao tokens
    r"|(?i:bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}"                  # Authorization header values
    r"|(?i:\b(?:token|secret_id|secret|password|passwd|client_token|wrapping_token|api_key)"
    r"(?:\s*=\s*|[\"']\s*:\s*[\"']?))[^\s\"',;&]+"                 # key=value, "key": "value"
    r"|\bdigest[:,]'?[^:\s,']{1,64}:[A-Za-z0-9+/]{27}="             # a ZooKeeper digest id (SHA-1 of name:password)
)
REDACTED = "[redacted]"
DECISIONS = ("allow", "deny")


def redact(text: str) -> str:
    """Replace anything that looks like a bearer token, a JWT or a secret assignment."""
    return _SECRETISH.sub(_replace, text)


def _replace(m: re.Match[str]) -> str:
    s = m.group(0)
    if s.startswith(("digest:", "digest,")):
        return s[: s.rindex(":") + 1] + REDACTED  # the name stays: whose digest it was
    # keep the name of a `key=value` pair so the line still says what was there
    kv = re.match(r"(?i)(\w+(?:\s*=\s*|[\"']\s*:\s*[\"']?))", s)
    return (kv.group(1) + REDACTED) if kv and not s.lower().startswith(("bearer", "basic", "eyj")) else REDACTED


class _PrivateRotatingHandler(logging.handlers.RotatingFileHandler):
    """RotatingFileHandler whose files (the live one and every new one after a rollover) are
    created 0600 and opened append-only, whatever the process umask."""

    def _open(self) -> io.TextIOWrapper:
        fd = os.open(self.baseFilename, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.fchmod(fd, 0o600)  # also tightens a file that was created before with a wider mode
        return os.fdopen(fd, "a", encoding=self.encoding or "utf-8", errors=self.errors)


class AuditLog:
    def __init__(self, path: Path, max_bytes: int = 10 * 1024 * 1024, backups: int = 5) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path = path
        self._handler = _PrivateRotatingHandler(path, mode="a", maxBytes=max_bytes, backupCount=backups,
                                                encoding="utf-8")
        self._handler.setFormatter(logging.Formatter("%(message)s"))
        # a private logger object (not registered by name): two logs never share a handler
        self._log = logging.Logger(f"histo.audit:{path}", logging.INFO)  # noqa: LOG001
        self._log.propagate = False
        self._log.addHandler(self._handler)

    def record(self, *, who: str | None, role: str | None, what: str, where: str | None, decision: str,
               why: str = "") -> None:
        if decision not in DECISIONS:
            raise ValueError(f"decision must be one of {DECISIONS}")
        entry = {"ts": datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                 "who": who or "-", "role": role or "-", "what": what, "where": where or "-",
                 "decision": decision, "why": why}
        # Redact field by field, before encoding, so the line stays valid JSON; cap each field so a
        # hostile path cannot blow up a line.
        self._log.info(json.dumps({k: redact(str(v))[:1000] for k, v in entry.items()}, separators=(",", ":")))

    def allow(self, **fields: str) -> None:
        self.record(decision="allow", **fields)

    def deny(self, **fields: str) -> None:
        self.record(decision="deny", **fields)

    def close(self) -> None:
        self._log.removeHandler(self._handler)
        self._handler.close()
