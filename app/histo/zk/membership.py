"""Ephemeral membership nodes (/histo/masters/<name>, /histo/workers/<name>/member): who is in
the cluster, where it listens, which identity and certificate expiry it has. A worker's node lives
in the slot a master made for its certificate (zk/acl.py), so it can be nobody else's.

A node is a typed `Member` before any logic sees it. Each process start has its own random
`incarnation`, written into its node and answered by its status endpoint: a node whose incarnation
the process at its endpoint does not answer is a previous process's (alive in ZooKeeper only
until its session expires), and never counts as a live member.

`Membership` is one service's own node, kazoo-recipe style: `join()` and `update()` are idempotent
and keep the latest info, which is what a node re-created after a session loss carries.

    me = Membership(client, "workers", "worker1")
    me.join(info)                       # now, or once a predecessor's node is gone
    me.update(cert_not_after=...)       # after a certificate rotation
"""
from __future__ import annotations

import json
import logging
import threading
from dataclasses import asdict, dataclass, replace
from typing import Any, Callable

from kazoo.client import KazooClient, KazooState
from kazoo.exceptions import BadVersionError, NodeExistsError, NoNodeError
from kazoo.protocol.states import ZnodeStat

from .acl import ROOT

log = logging.getLogger("histo.membership")


def _path(kind: str, name: str) -> str:
    if kind == "workers":
        return f"{ROOT}/workers/{name}/member"
    return f"{ROOT}/{kind}/{name}"


@dataclass(frozen=True)
class Member:
    name: str
    endpoint: str
    spiffe_id: str
    incarnation: str
    started: float = 0.0
    cert_not_after: float | None = None
    public: str | None = None
    session: int = 0  # the ZooKeeper session that owns the node (from its stat, not its data)

    @classmethod
    def from_node(cls, name: str, data: bytes | None, stat: ZnodeStat | None) -> "Member":
        """ValueError for a node that is not a member record (a worker cannot write another's node,
        but a garbled one must not crash a master)."""
        try:
            doc = json.loads(data or b"{}")
        except ValueError:
            raise ValueError(f"membership node {name}: not JSON") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("endpoint"), str):
            raise ValueError(f"membership node {name}: no endpoint")
        if doc.get("name", name) != name:
            raise ValueError(f"membership node {name} claims to be {doc.get('name')!r}")
        not_after = doc.get("cert_not_after")
        return cls(name=name, endpoint=doc["endpoint"], spiffe_id=str(doc.get("spiffe_id", "")),
                   incarnation=str(doc.get("incarnation", "")), started=float(doc.get("started") or 0.0),
                   cert_not_after=float(not_after) if isinstance(not_after, (int, float)) else None,
                   public=doc.get("public") if isinstance(doc.get("public"), str) else None,
                   session=stat.ephemeralOwner if stat is not None else 0)

    def to_data(self) -> bytes:
        doc = {k: v for k, v in asdict(self).items() if k not in ("name", "session") and v is not None}
        return json.dumps({"name": self.name, **doc}).encode()


class Membership:
    """This process's own membership node."""

    def __init__(self, client: KazooClient, kind: str, name: str, take_over: bool = False) -> None:
        # take_over: delete a predecessor's node (another session, same name) instead of waiting for
        # its session to expire — for masters, which administer the tree; a worker cannot delete.
        self.client, self.kind, self.name, self.take_over = client, kind, name, take_over
        self.path = _path(kind, name)
        self._member: Member | None = None
        self._lock = threading.Lock()
        self._listening = False

    @property
    def member(self) -> Member | None:
        return self._member

    def join(self, member: Member) -> None:
        """Publish `member` now, or as soon as a predecessor's node (a crashed process whose
        session has not expired yet) goes away; re-publish it after every session loss."""
        with self._lock:
            self._member = member
            if not self._listening:
                self._listening = True
                self.client.add_listener(self._state)
        self.client.handler.spawn(self._ensure)

    def update(self, **fields: Any) -> None:
        """Change our record (the latest one is what a re-created node carries)."""
        with self._lock:
            if self._member is None:
                raise RuntimeError("join() first")
            self._member = replace(self._member, **fields)
        self.client.handler.spawn(self._ensure)

    def leave(self) -> None:
        with self._lock:
            self._member = None
        try:
            stat = self.client.exists(self.path)
            if stat is not None and stat.ephemeralOwner == self.client.client_id[0]:
                self.client.delete(self.path, version=stat.version)
        except Exception as exc:  # the session ends with the process anyway
            log.debug("leave %s: %s", self.path, exc)

    def _state(self, state: str) -> None:
        if state == KazooState.CONNECTED and self._member is not None:
            self.client.handler.spawn(self._ensure)

    def _ensure(self) -> None:
        while True:
            member = self._member
            if member is None:
                return
            data = member.to_data()
            try:
                self.client.create(self.path, data, ephemeral=True)
                return
            except NodeExistsError:
                pass
            except Exception as exc:  # connection trouble: the state listener calls us again
                log.warning("cannot register %s: %s", self.path, exc)
                return
            try:
                current, stat = self.client.get(self.path)
                if stat.ephemeralOwner == self.client.client_id[0]:
                    if current != data:
                        self.client.set(self.path, data, version=stat.version)
                    return
                if self.take_over:
                    log.info("%s held by a previous session of %s: taking it over", self.path, self.name)
                    self.client.delete(self.path, version=stat.version)
                    continue
                # A previous incarnation's node: wait until its session expires, or until a master
                # that found it stale removes it.
                gone = threading.Event()
                if self.client.exists(self.path, watch=lambda _event, gone=gone: gone.set()) is not None:
                    log.info("%s still held by a previous session; waiting", self.path)
                    gone.wait(60)
            except (NoNodeError, BadVersionError):
                continue
            except Exception as exc:
                log.warning("cannot register %s: %s", self.path, exc)
                return


def list_members(client: KazooClient, kind: str) -> dict[str, Member]:
    out: dict[str, Member] = {}
    for child in client.get_children(f"{ROOT}/{kind}"):
        try:
            data, stat = client.get(_path(kind, child))
            out[child] = Member.from_node(child, data, stat)
        except NoNodeError:
            continue
        except ValueError as exc:
            log.warning("%s", exc)
    return out


def remove_stale(client: KazooClient, kind: str, member: Member) -> bool:
    """Delete `member`'s node if it is still the one owned by the same session (a master found that
    the process at its endpoint is another incarnation). True if deleted."""
    try:
        data, stat = client.get(_path(kind, member.name))
        if stat.ephemeralOwner != member.session or Member.from_node(member.name, data, stat) != member:
            return False
        client.delete(_path(kind, member.name), version=stat.version)
        return True
    except (NoNodeError, ValueError):
        return False


def watch(client: KazooClient, kind: str, callback: Callable[[dict[str, Member]], None]) -> None:
    """Call `callback(members)` now and whenever a member joins, leaves or changes its data."""
    watched: set[str] = set()
    lock = threading.Lock()

    def refresh() -> None:
        try:
            callback(list_members(client, kind))
        except Exception as exc:
            log.warning("membership refresh failed: %s", exc)

    def on_children(children: list[str]) -> None:
        for child in children:
            with lock:
                if child in watched:
                    continue
                watched.add(child)

            def on_data(data: bytes | None, stat: ZnodeStat | None, event: object = None,
                        child: str = child) -> bool | None:
                if data is None and stat is None and kind != "workers":
                    with lock:
                        watched.discard(child)
                    refresh()
                    return False  # a master's node is re-created as a new child: watched anew then
                refresh()  # a worker's slot stays: its member node comes and goes inside it
                return None
            client.DataWatch(_path(kind, child), on_data)
        refresh()
    client.ChildrenWatch(f"{ROOT}/{kind}", on_children)
