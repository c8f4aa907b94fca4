"""What a master does about the hosts SecOps quarantined (secops/contain.py writes the record in
Vault KV, `histo quarantine release` removes it): read the list every POLL seconds and enforce it.

For a quarantined host, every master
- refuses it at the mTLS check and hangs up on its live connections, whatever certificate it holds
  (tls/revocation.py `deny_hosts`; its serials reach every peer's CRL as well);
- schedules nothing on it: a worker's tasks in flight fail over to another worker now
  (scheduler.workers_lost) and its membership slot is removed, so only a master, for the identity of
  a certificate it accepts, could make it again;
- removes a quarantined master's membership and election nodes (another master leads).

While Vault is away the last list stays in force: an outage never releases anyone."""
from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable

from kazoo.client import KazooClient
from kazoo.exceptions import NoNodeError, NotEmptyError

from ..vault.quarantine import list_quarantined
from ..zk.acl import ELECTION, MASTERS, worker_slot

log = logging.getLogger("histo.quarantine")

POLL = 2.0  # seconds between reads of the list (as the CRL's)


def remove_member(zk: KazooClient, role: str, host: str) -> list[str]:
    """Remove a quarantined host's nodes from the coordination tree (masters administer it); the paths
    removed. A worker's slot goes with its member node; a master's election contender goes too."""
    removed = []
    paths = [worker_slot(host)] if role == "worker" else [f"{MASTERS}/{host}"]
    if role == "master":
        for child in zk.get_children(ELECTION):
            try:
                data, _ = zk.get(f"{ELECTION}/{child}")
            except NoNodeError:
                continue
            if data.decode(errors="replace") == host:
                paths.append(f"{ELECTION}/{child}")
    for path in paths:
        try:
            zk.delete(path, recursive=True)
            removed.append(path)
        except (NoNodeError, NotEmptyError):
            continue
    return removed


OnChange = Callable[[frozenset[str], dict[str, dict[str, Any]]], None]


class QuarantineFollower:
    """Reads the list every POLL seconds and calls `on_change(hosts, records)` when it changes."""

    def __init__(self, client: Callable[[], Any], on_change: OnChange, interval: float = POLL) -> None:
        self._client, self.on_change, self.interval = client, on_change, interval
        self.hosts: frozenset[str] = frozenset()
        self.records: dict[str, dict[str, Any]] = {}
        self.error = ""

    def poll(self) -> bool:
        """One read (blocking); True if the list changed. Keeps the last list when Vault cannot answer."""
        try:
            records = list_quarantined(self._client())  # raises when Vault cannot say
        except Exception as exc:  # Vault away or refusing: the last list stays in force
            error = f"{type(exc).__name__}: {exc}"[:200]
            if error != self.error:
                log.warning("quarantine list unreadable (the last one stays in force): %s", error)
            self.error = error
            return False
        if self.error:
            log.info("quarantine list readable again")
        self.error = ""
        changed = frozenset(records) != self.hosts
        if changed:
            log.warning("quarantined hosts: %s (were %s)", sorted(records) or "none", sorted(self.hosts) or "none")
        self.hosts, self.records = frozenset(records), records
        return changed

    async def follow(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if await loop.run_in_executor(None, self.poll):
                self.on_change(self.hosts, self.records)
            await asyncio.sleep(self.interval)

    def as_dict(self) -> dict[str, Any]:
        return {"hosts": sorted(self.hosts), "error": self.error or None}
