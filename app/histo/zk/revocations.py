"""Revoked bearer-token ids shared by every master: /histo/revoked/<jti>, data = the token's expiry.

Each master mirrors the children into its in-memory set (what every request checks); a revocation
is kept until the token would have expired anyway, then pruned from ZooKeeper by the leader, so
the list does not grow for ever.

    store = RevocationStore(client)
    store.follow(revoked_set)           # keep a RevocationSet equal to the shared list
    store.revoke(jti, exp)              # idempotent
    store.prune()                       # the leader, now and then
"""
from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator
from typing import Callable, Protocol

from kazoo.client import KazooClient
from kazoo.exceptions import NodeExistsError, NoNodeError

from .acl import REVOKED

log = logging.getLogger("histo.revocations")

_JTI = re.compile(r"[A-Za-z0-9_-]{1,64}")


class RevokedSet(Protocol):
    def add(self, jti: str, exp: float) -> None: ...
    def discard(self, jti: str) -> None: ...
    def __iter__(self) -> Iterator[str]: ...  # the jti strings


class RevocationStore:
    def __init__(self, client: KazooClient, clock: Callable[[], float] = time.time) -> None:
        self.zk = client
        self._clock = clock

    @staticmethod
    def valid_jti(jti: str) -> bool:
        return bool(_JTI.fullmatch(jti))

    def revoke(self, jti: str, exp: float) -> None:
        if not self.valid_jti(jti):
            raise ValueError("a token id is 1 to 64 letters, digits, '-' or '_'")
        try:
            self.zk.create(f"{REVOKED}/{jti}", repr(float(exp)).encode())
        except NodeExistsError:
            pass

    def _expiry(self, jti: str) -> float | None:
        try:
            data, _ = self.zk.get(f"{REVOKED}/{jti}")
        except NoNodeError:
            return None
        try:
            return float(data)
        except ValueError:  # unreadable: keep it revoked for the longest a token can live
            return self._clock() + 3600

    def follow(self, revoked: RevokedSet) -> None:
        """Keep `revoked` equal to the shared list, from now on."""
        def sync(children: list[str]) -> None:
            current = set()
            for jti in children:
                exp = self._expiry(jti)
                if exp is not None:
                    current.add(jti)
                    revoked.add(jti, exp)
            for jti in list(revoked):
                if jti not in current:
                    revoked.discard(jti)
        self.zk.ChildrenWatch(REVOKED, sync)

    def prune(self) -> int:
        """Delete revocations of tokens that have expired; how many were deleted."""
        now, dropped = self._clock(), 0
        for jti in self.zk.get_children(REVOKED):
            exp = self._expiry(jti)
            if exp is not None and exp < now:
                try:
                    self.zk.delete(f"{REVOKED}/{jti}")
                    dropped += 1
                except NoNodeError:
                    pass
        return dropped
