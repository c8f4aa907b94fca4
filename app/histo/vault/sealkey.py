"""The static seal's key (OpenBao `seal "static"`): 32 random bytes, AES-256-GCM, made once on the
controller (or by local mode) and never replaced: a different key cannot decrypt the root key the
data was sealed with. Rotation is OpenBao's own (`previous_key`), not a new file here."""
from __future__ import annotations

import secrets
from pathlib import Path

from ..files import write_private

KEY_BYTES = 32


def ensure_seal_key(path: Path) -> bool:
    """Make the key file (0600) if it is missing; True if it was made. A file of the wrong size is
    refused rather than replaced: it may be the only copy of a real key."""
    path = Path(path)
    if path.exists():
        if path.stat().st_size != KEY_BYTES:
            raise ValueError(f"{path} is not a {KEY_BYTES}-byte seal key; refusing to replace it")
        return False
    write_private(path, secrets.token_bytes(KEY_BYTES))
    return True
