"""GET /api/v1/receipts/keys (anyone): the public keys of every version of the receipt key
(transit `histo-receipts`; masters may read its public keys, never the private ones, which do not
leave Vault). `histo get` saves them beside a receipt so `histo verify` checks it offline; every
version stays in the ring, so receipts signed before a rotation still verify."""
from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from aiohttp import web

from ..edge.middleware import json_error
from ..edge.receipts import KEY, MOUNT
from ..edge.tokens import vault_public_keys

if TYPE_CHECKING:
    from .service import Master

CACHE_SECONDS = 60.0  # a rotation shows here within a minute; a flood of requests is one Vault read a minute


class ReceiptKeys:
    def __init__(self, master: "Master") -> None:
        self.m = master
        self._cached: tuple[float, dict[str, str]] | None = None

    def _read(self) -> dict[str, str]:
        now = time.monotonic()
        if self._cached is None or now - self._cached[0] > CACHE_SECONDS:
            self._cached = (now, vault_public_keys(self.m.rt.vault.client, key=KEY, mount=MOUNT))
        return self._cached[1]

    async def get(self, request: web.Request) -> web.Response:
        if self.m.auth is not None:
            self.m.auth.gate(request)
        try:
            keys = await asyncio.get_running_loop().run_in_executor(None, self._read)
        except Exception as exc:  # Vault away and nothing cached yet
            why = f"the receipt keys cannot be read right now ({type(exc).__name__})"
            raise json_error(503, "vault_unavailable", why, headers={"Retry-After": "5"}) from None
        return web.json_response({"key": KEY, "keys": keys}, headers={"Cache-Control": "max-age=60"})


def add_routes(app: web.Application, master: "Master", prefix: str) -> None:
    app.router.add_get(prefix + "/api/v1/receipts/keys", ReceiptKeys(master).get)
