"""One hvac client over every node of an OpenBao raft cluster.

A Vault address in histo's configuration may name several nodes, comma-separated
(`https://192.168.56.10:8200,https://192.168.56.16:8200,https://192.168.56.17:8200`). Any unsealed
node serves a request (a standby forwards it to the active node), so the client keeps to the node
that answered last and moves on when a node cannot take the request: the connection is refused,
reset or times out, or it answers 5xx (sealed, no active node while raft elects one, not yet
joined). With more than one node it rides through an election, cycling for up to `ride_through`
seconds, so a caller sees the new active node instead of an error; with a single node it fails at
once, as before.

A request the server answered (2xx, 4xx) is never repeated. A connection lost after the request
was sent is repeated on the next node: the one write of histo that is not idempotent, unwrapping a
secret_id, then reports "already used" and the service asks for a new delivery (docs/SECURITY.md).

    client = failover_client("https://a:8200,https://b:8200", verify="/ca.pem")
"""
from __future__ import annotations

import threading
import time
from typing import Any

import hvac
import requests
from hvac import adapters
from hvac import exceptions as hx

# The node could not take this request; another node may: the connection refused, reset or timed out
# (a killed or partitioned node), 5xx (sealed; no active node while raft elects one; 501: a node
# started again with no state, not yet joined).
_NODE_TROUBLE = (requests.ConnectionError, requests.Timeout, hx.VaultDown, hx.VaultNotInitialized,
                 hx.InternalServerError, hx.BadGateway)
RIDE_THROUGH = 15.0  # seconds: a raft election with production timings takes a few (docs/PERFORMANCE.md)


def split_urls(value: str) -> list[str]:
    """`a,b , c` → [a, b, c]; trailing slashes dropped; at least one."""
    urls = [u.strip().rstrip("/") for u in str(value).split(",") if u.strip()]
    if not urls:
        raise ValueError("no Vault address given")
    return urls


class FailoverAdapter(adapters.JSONAdapter):
    """`base_uri` is the node that answered last (where the next request starts), shared by every
    thread; the node a request is being tried on is the calling thread's own, so concurrent requests
    (a master's uploads, each asking for a data key) never send one another to a node they did not
    pick, nor skip a node of their round."""

    def __init__(self, base_uri: str = "https://127.0.0.1:8200", *args: Any, ride_through: float = RIDE_THROUGH,
                 **kwargs: Any) -> None:
        self._trying = threading.local()
        self.urls = split_urls(base_uri)
        self.ride_through = ride_through if len(self.urls) > 1 else 0.0
        super().__init__(self.urls[0], *args, **kwargs)

    @property
    def base_uri(self) -> str:
        return getattr(self._trying, "url", None) or self._preferred

    @base_uri.setter
    def base_uri(self, value: str) -> None:
        self._preferred = value

    def request(self, *args: Any, **kwargs: Any) -> Any:
        deadline = time.monotonic() + self.ride_through
        preferred = self._preferred
        start = self.urls.index(preferred) if preferred in self.urls else 0
        try:
            while True:
                last: Exception | None = None
                for i in range(len(self.urls)):
                    url = self.urls[(start + i) % len(self.urls)]
                    self._trying.url = url
                    try:
                        resp = super().request(*args, **kwargs)
                    except _NODE_TROUBLE as exc:
                        last = exc
                        continue
                    self._preferred = url
                    return resp
                if time.monotonic() >= deadline:
                    assert last is not None
                    raise last
                time.sleep(0.25)
        finally:
            self._trying.url = None


def failover_client(url: str, verify: str | bool, token: str | None = None,
                    session: requests.Session | None = None, timeout: int = 10,
                    ride_through: float = RIDE_THROUGH) -> hvac.Client:
    """An hvac client over the nodes named in `url` (one, or several comma-separated)."""
    return hvac.Client(url=url, verify=verify, token=token, session=session, timeout=timeout,
                       adapter=FailoverAdapter, ride_through=ride_through)
