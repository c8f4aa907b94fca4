"""zk/jobs.py under a lost connection: each ZooKeeper step is retried by the session's retry policy,
and a step that was applied before its reply was lost is recognised on the retry rather than reported
as a conflict. A fake client (pure logic); tests/integration/test_zk_outage.py restarts the real server."""
from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest
from kazoo.exceptions import BadVersionError, ConnectionLoss, NodeExistsError, NoNodeError, RolledBackError
from kazoo.retry import KazooRetry, RetryFailedError

from histo.zk.jobs import JobStore


class FlakyZk:
    """A tree in a dict; `lose` calls are applied, then their reply is lost (ConnectionLoss)."""

    def __init__(self, lose: int = 0, down: bool = False) -> None:
        self.nodes: dict[str, bytes] = {}
        self.versions: dict[str, int] = {}
        self.lose, self.down = lose, down
        self.calls = 0
        self.connected = True

    def retry(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        return KazooRetry(max_tries=5, delay=0.001, max_delay=0.001, ignore_expire=True)(fn, *args, **kwargs)

    def _step(self, apply: Any) -> Any:
        self.calls += 1
        if self.down:
            raise ConnectionLoss()
        out = apply()
        if self.lose:
            self.lose -= 1
            raise ConnectionLoss()
        return out

    def create(self, path: str, data: bytes = b"") -> str:
        def apply() -> str:
            if path in self.nodes:
                raise NodeExistsError()
            self.nodes[path] = data
            return path
        return self._step(apply)  # type: ignore[no-any-return]

    def get(self, path: str) -> tuple[bytes, Any]:
        return self._step(lambda: (self.nodes[path], SimpleNamespace(version=self.versions.get(path, 0))))  # type: ignore[no-any-return]

    def set(self, path: str, data: bytes, version: int = -1) -> None:
        def apply() -> None:
            if version not in (-1, self.versions.get(path, 0)):
                raise BadVersionError()
            self.nodes[path] = data
            self.versions[path] = self.versions.get(path, 0) + 1
        self._step(apply)

    def delete(self, path: str) -> None:
        def apply() -> None:
            if path not in self.nodes:
                raise NoNodeError()
            del self.nodes[path]
        self._step(apply)

    def transaction(self) -> "Tx":
        return Tx(self)


class Tx:
    def __init__(self, zk: FlakyZk) -> None:
        self.zk, self.ops = zk, []  # type: ignore[var-annotated]

    def create(self, path: str, data: bytes = b"") -> None:
        self.ops.append((path, data))

    def commit(self) -> list[Any]:
        def apply() -> list[Any]:
            if any(p in self.zk.nodes for p, _ in self.ops):
                return [NodeExistsError()] + [RolledBackError()] * (len(self.ops) - 1)
            for p, d in self.ops:
                self.zk.nodes[p] = d
            return [p for p, _ in self.ops]
        return self.zk._step(apply)  # type: ignore[no-any-return]


DOC = {"id": "j1", "owner": "alice", "state": "queued"}


def test_a_create_applied_before_its_reply_was_lost_is_not_a_conflict() -> None:
    zk = FlakyZk()
    store = JobStore(zk)
    store._owner_node("alice")  # the owner's index node exists; the job's transaction is the next call
    zk.lose = 1
    store.create_job("j1", DOC)
    assert json.loads(zk.nodes["/histo/jobs/j1"]) == DOC
    assert zk.calls >= 3  # the lost commit, its retry, and the read that recognised it


def test_a_real_conflict_is_still_reported() -> None:
    zk = FlakyZk()
    store = JobStore(zk)
    store.create_job("j1", DOC)
    with pytest.raises(NodeExistsError):
        store.create_job("j1", {**DOC, "owner": "alice", "state": "running"})


def test_a_call_while_disconnected_is_not_queued_until_the_reconnection() -> None:
    zk = FlakyZk()
    zk.connected = False
    store = JobStore(zk)
    with pytest.raises(RetryFailedError):
        store.get_job("j1")
    assert zk.calls == 0  # refused before kazoo could queue it


def test_zookeeper_away_ends_in_retry_failed_not_a_hang() -> None:
    zk = FlakyZk(down=True)
    store = JobStore(zk)
    with pytest.raises(RetryFailedError):
        store.get_job("j1")
    assert zk.calls == 5  # max_tries: every try met the outage, then it gave up


def test_a_fenced_finish_applied_before_its_reply_was_lost_counts_as_written() -> None:
    """The retry of a compare-and-set meets its own write (a newer version, no longer open): that is
    this run's finish, so the job leaves /histo/active; a finish another run made is refused."""
    zk = FlakyZk()
    store = JobStore(zk)
    store.create_job("j1", {**DOC, "state": "running", "runs": 1})
    open_run_1 = lambda d: d["state"] in ("queued", "running") and d["runs"] == 1  # noqa: E731
    zk.lose = 1  # the set is applied, its reply lost
    done = store.finish("j1", when=open_run_1, state="done", finished=5.0, timings={"total": 0.1})
    assert done["state"] == "done" and done["finished"] == 5.0
    assert "/histo/active/j1" not in zk.nodes
    late = store.finish("j1", when=open_run_1, state="failed", finished=6.0)  # a stale run, after it
    assert late["state"] == "done" and late["finished"] == 5.0
    assert json.loads(zk.nodes["/histo/jobs/j1"])["state"] == "done"
