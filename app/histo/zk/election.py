"""Leader election among masters with kazoo's Election recipe. A leader that loses its
ZooKeeper session steps down at once (its lock node may already belong to nobody)."""
from __future__ import annotations

import logging
import threading
from typing import Callable

from kazoo.client import KazooClient, KazooState
from kazoo.exceptions import BadVersionError, NoNodeError
from kazoo.recipe.election import Election

from .acl import ELECTION

log = logging.getLogger("histo.election")


class LeaderElection:
    def __init__(self, client: KazooClient, name: str, on_elected: Callable[[], None],
                 on_lost: Callable[[], None]) -> None:
        self.client, self.name = client, name
        self.on_elected, self.on_lost = on_elected, on_lost
        self.election = Election(client, ELECTION, identifier=name)
        self.is_leader = False
        self._stop = threading.Event()
        self._resign = threading.Event()
        self._thread = threading.Thread(target=self._run, name="election", daemon=True)
        client.add_listener(self._state)

    def _state(self, state: str) -> None:
        if state != KazooState.CONNECTED and self.is_leader:
            # SUSPENDED may be followed by LOST: stop acting as leader now rather than too late.
            self._resign.set()
            self.is_leader = False
            self.on_lost()

    def _lead(self) -> None:
        self.is_leader = True
        self._resign.clear()
        log.info("%s won the election", self.name)
        self.on_elected()
        while not (self._stop.is_set() or self._resign.is_set()):
            self._stop.wait(0.5)
        self.is_leader = False

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.election.run(self._lead)
            except Exception as exc:  # session trouble: contend again once reconnected
                log.warning("election interrupted: %s", exc)
            self._stop.wait(0.5)

    def start(self) -> None:
        """Contend, after removing our predecessor's contender nodes: a restarted master's previous
        process (same name, another session) would otherwise stay "leader" until its session expires."""
        try:
            self._clear_predecessors()
        except Exception as exc:  # not fatal: the stale node goes when its session expires
            log.warning("cannot clear a previous session's election node: %s", exc)
        self._thread.start()

    def _clear_predecessors(self) -> None:
        mine = self.client.client_id[0]
        for child in self.client.get_children(ELECTION):
            path = f"{ELECTION}/{child}"
            try:
                data, stat = self.client.get(path)
                if data.decode(errors="replace") == self.name and stat.ephemeralOwner != mine:
                    self.client.delete(path, version=stat.version)
                    log.info("removed %s, left by a previous process of %s", path, self.name)
            except (NoNodeError, BadVersionError):
                continue

    def stop(self) -> None:
        self._stop.set()
        self.election.cancel()

    def leader(self) -> str | None:
        contenders = self.election.contenders()
        return contenders[0] if contenders else None
