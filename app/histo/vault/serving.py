"""Whether every Vault node serves a request: the active node itself, a standby by forwarding it.

After the whole cluster restarted (`vagrant halt` / `up`) a standby can be unsealed and report healthy
while it cannot yet forward to the new active node ("tls: internal error" on the cluster port); it then
answers writes itself, with "cannot write to readonly storage", and every AppRole login through it
fails. `sys/health` does not show it (a standby answers it itself); a token's lookup of itself does:
a standby forwards it like any request, and the default policy allows it to every token. (A response-
wrapped nothing would be a write, but OpenBao 2.7's standbys answer sys/wrapping/wrap with an internal
error even when they forward everything else.)"""
from __future__ import annotations

import time
from typing import Callable

import hvac



def serves(url: str, ca: str, token: str, timeout: int = 5) -> str | None:
    """None when `url` (one node) served the token's lookup of itself; else why not, in one line."""
    client = hvac.Client(url=url, verify=ca, token=token, timeout=timeout)
    try:
        resp = client.auth.token.lookup_self()
    except Exception as exc:  # noqa: BLE001 - every failure is an answer: not serving yet
        return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"[:200]
    if not (isinstance(resp, dict) and (resp.get("data") or {}).get("accessor")):
        return "no answer about the token"
    return None


def wait_serving(urls: list[str], ca: str, token: str, timeout: float = 180.0, interval: float = 2.0,
                 probe: Callable[[str, str, str], str | None] = serves) -> dict[str, str | None]:
    """Poll every node until each serves, or `timeout`; each node's last answer (None = serving)."""
    deadline = time.monotonic() + timeout
    last: dict[str, str | None] = {u: "not asked" for u in urls}
    while True:
        for url in urls:
            if last[url] is not None:
                last[url] = probe(url, ca, token)
        if all(v is None for v in last.values()) or time.monotonic() >= deadline:
            return last
        time.sleep(interval)
