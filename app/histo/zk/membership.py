"""Ephemeral membership nodes (/histo/masters/<name>, /histo/workers/<name>) that carry each
service's endpoint, identity and certificate expiry; re-created after a session expiry."""
from __future__ import annotations

import json
import logging
import threading
from typing import Callable

from kazoo.client import KazooClient, KazooState
from kazoo.exceptions import NodeExistsError, NoNodeError

from .acl import ROOT

log = logging.getLogger("histo.membership")


def _path(kind: str, name: str) -> str:
    return f"{ROOT}/{kind}/{name}"


def register(client: KazooClient, kind: str, name: str, info: dict) -> None:
    """Create our ephemeral node, now or as soon as a previous incarnation's node (a crashed
    process whose session has not expired yet) goes away; re-create it after a session loss."""
    path = _path(kind, name)
    data = json.dumps(info).encode()

    def ensure() -> None:
        while True:
            try:
                client.create(path, data, ephemeral=True)
                return
            except NodeExistsError:
                stat = client.exists(path)
                if stat is not None and stat.ephemeralOwner == client.client_id[0]:
                    return  # already ours
                gone = threading.Event()
                if client.exists(path, watch=lambda _event, gone=gone: gone.set()) is not None:
                    log.info("%s still held by an expiring session; waiting", path)
                    gone.wait(60)
            except Exception as exc:  # connection trouble: the state listener calls us again
                log.warning("cannot register %s: %s", path, exc)
                return

    def listener(state: str) -> None:
        if state == KazooState.CONNECTED:
            client.handler.spawn(ensure)

    client.add_listener(listener)
    client.handler.spawn(ensure)


def update(client: KazooClient, kind: str, name: str, info: dict) -> None:
    try:
        client.set(_path(kind, name), json.dumps(info).encode())
    except NoNodeError:
        register(client, kind, name, info)


def list_members(client: KazooClient, kind: str) -> dict[str, dict]:
    out = {}
    for child in client.get_children(f"{ROOT}/{kind}"):
        try:
            data, _ = client.get(_path(kind, child))
            out[child] = json.loads(data or b"{}")
        except (NoNodeError, ValueError):
            continue
    return out


def watch(client: KazooClient, kind: str, callback: Callable[[dict[str, dict]], None]) -> None:
    """Call `callback(members)` now and whenever a member joins, leaves or changes its data."""
    watched: set[str] = set()

    def refresh(*_args) -> None:
        try:
            callback(list_members(client, kind))
        except Exception as exc:
            log.warning("membership refresh failed: %s", exc)

    def on_children(children: list[str]) -> None:
        for child in children:
            if child not in watched:
                watched.add(child)

                def on_data(data, stat, event=None, child=child):
                    if data is None:
                        watched.discard(child)
                        return False
                    refresh()
                client.DataWatch(_path(kind, child), on_data)
        refresh()
    client.ChildrenWatch(f"{ROOT}/{kind}", on_children)
