"""The audit log: one JSON line per security decision, append-only, rotated, 0600, no secrets."""
from __future__ import annotations

import json
import logging
import logging.handlers
import os
import re
from datetime import datetime, timezone
from pathlib import Path

_SECRETISH = re.compile(r"(eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*|(?:hvs|hvb|s)\.[A-Za-z0-9]{20,}"
                        r"|Bearer\s+[A-Za-z0-9._~+/=-]+)")


def redact(text: str) -> str:
    return _SECRETISH.sub("[redacted]", text)


class AuditLog:
    def __init__(self, path: Path, max_bytes: int = 10 * 1024 * 1024, backups: int = 5) -> None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not path.exists():
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
        self.path = path
        self._log = logging.getLogger(f"histo.audit.{path}")
        self._log.propagate = False
        self._log.setLevel(logging.INFO)
        if not self._log.handlers:
            handler = logging.handlers.RotatingFileHandler(path, mode="a", maxBytes=max_bytes, backupCount=backups)
            handler.setFormatter(logging.Formatter("%(message)s"))
            self._log.addHandler(handler)

    def record(self, *, who: str, role: str, what: str, where: str, decision: str, why: str) -> None:
        entry = {"ts": datetime.now(timezone.utc).isoformat(timespec="milliseconds"), "who": who, "role": role,
                 "what": what, "where": where, "decision": decision, "why": why}
        # Redact field by field, before encoding, so the line stays valid JSON.
        self._log.info(json.dumps({k: redact(str(v)) for k, v in entry.items()}, separators=(",", ":")))
