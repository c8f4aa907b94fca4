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

    def exists(self, path: str) -> Any:
        return self._step(lambda: SimpleNamespace(version=self.versions.get(path, 0)) if path in self.nodes else None)

    def get(self, path: str) -> tuple[bytes, Any]:
        def apply() -> tuple[bytes, Any]:
            if path not in self.nodes:
                raise NoNodeError()
            return self.nodes[path], SimpleNamespace(version=self.versions.get(path, 0))
        return self._step(apply)  # type: ignore[no-any-return]

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
    """All or nothing: the first op that cannot apply fails the commit, the others are rolled back."""

    def __init__(self, zk: FlakyZk) -> None:
        self.zk, self.ops = zk, []  # type: ignore[var-annotated]

    def create(self, path: str, data: bytes = b"") -> None:
        self.ops.append(("create", path, data, -1))

    def set_data(self, path: str, data: bytes, version: int = -1) -> None:
        self.ops.append(("set", path, data, version))

    def delete(self, path: str, version: int = -1) -> None:
        self.ops.append(("delete", path, b"", version))

    def _refusal(self, op: str, path: str, version: int) -> Exception | None:
        nodes = self.zk.nodes
        if op == "create":
            return NodeExistsError() if path in nodes else None
        if path not in nodes:
            return NoNodeError()  # type: ignore[no-any-return]
        stale = version not in (-1, self.zk.versions.get(path, 0))
        return BadVersionError() if stale else None

    def commit(self) -> list[Any]:
        def apply() -> list[Any]:
            for i, (op, path, _, version) in enumerate(self.ops):
                refusal = self._refusal(op, path, version)
                if refusal is not None:
                    return [RolledBackError()] * i + [refusal] + [RolledBackError()] * (len(self.ops) - i - 1)
            for op, path, data, _ in self.ops:
                if op == "delete":
                    del self.zk.nodes[path]
                else:
                    self.zk.nodes[path] = data
                    self.zk.versions[path] = self.zk.versions.get(path, 0) + 1 if op == "set" else 0
            return [path for _, path, _, _ in self.ops]
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


OWNER = "/histo/owners/" + __import__("histo.zk.jobs", fromlist=["owner_key"]).owner_key("alice")


def test_a_finish_charges_its_bytes_once_in_the_same_transaction() -> None:
    """Done, out of /histo/active and the result's bytes charged, in one commit: a commit whose reply
    was lost is recognised on the retry and charges nothing again; a refused run charges nothing."""
    zk = FlakyZk()
    store = JobStore(zk)
    store.create_job("j1", {**DOC, "state": "running", "runs": 1})
    store.add_usage("alice", 100)
    open_run_1 = lambda d: d["state"] in ("queued", "running") and d["runs"] == 1  # noqa: E731
    real_tx, commits = zk.transaction, []  # type: ignore[var-annotated]

    def transaction() -> Tx:  # the first commit is applied and its reply lost
        tx = real_tx()
        real_commit = tx.commit

        def commit() -> list[Any]:
            zk.lose = 0 if commits else 1
            commits.append(tx)
            return real_commit()
        tx.commit = commit  # type: ignore[method-assign]
        return tx
    zk.transaction = transaction  # type: ignore[method-assign]
    calls = zk.calls
    done = store.finish("j1", when=open_run_1, usage=("alice", 40), state="done", finished=5.0)
    steps = zk.calls - calls
    assert done["state"] == "done" and done["finished"] == 5.0 and "/histo/active/j1" not in zk.nodes
    # the retried commit is refused (the job's version moved: it was applied), the read after it
    # recognises this run's own finish: the bytes are charged once
    assert store.usage("alice") == 140 and len(commits) == 2
    assert steps == 6  # job, owner, the lost commit, its refused retry, the job again, a quiet delete
    late = store.finish("j1", when=open_run_1, usage=("alice", 40), state="failed", finished=6.0)
    assert late["state"] == "done" and store.usage("alice") == 140


def test_a_finish_whose_active_entry_went_already_still_commits() -> None:
    zk = FlakyZk()
    store = JobStore(zk)
    store.create_job("j1", {**DOC, "state": "running", "runs": 1})
    store.deactivate("j1")
    done = store.finish("j1", usage=("alice", 7), state="done", finished=1.0)
    assert done["state"] == "done" and json.loads(zk.nodes["/histo/jobs/j1"])["state"] == "done"
    assert store.usage("alice") == 7


def test_a_finish_after_a_concurrent_change_of_the_owners_bytes_counts_both() -> None:
    zk = FlakyZk()
    store = JobStore(zk)
    store.create_job("j1", {**DOC, "state": "running", "runs": 1})
    real_get = zk.get
    raced: list[bool] = []

    def get(path: str) -> tuple[bytes, Any]:  # another master's upload charges alice between read and commit
        out = real_get(path)
        if path == OWNER and not raced:
            raced.append(True)
            store.add_usage("alice", 1000)
        return out
    zk.get = get  # type: ignore[method-assign]
    store.finish("j1", usage=("alice", 5), state="done", finished=1.0)
    assert store.usage("alice") == 1005


def test_a_finish_does_not_write_over_a_tombstone_nor_charge_it() -> None:
    zk = FlakyZk()
    store = JobStore(zk)
    store.create_job("j1", {**DOC, "state": "running", "runs": 1})
    store.tombstone("j1", "alice")
    out = store.finish("j1", usage=("alice", 5), state="done", finished=1.0)
    assert out["state"] == "deleted" and store.usage("alice") == 0


def test_the_owner_node_is_looked_up_before_it_is_created() -> None:
    zk = FlakyZk()
    store = JobStore(zk)
    store.add_usage("alice", 1)
    creates: list[str] = []
    real_create = zk.create

    def create(path: str, data: bytes = b"") -> str:
        creates.append(path)
        return real_create(path, data)
    zk.create = create  # type: ignore[method-assign]
    store.add_usage("alice", 1)
    store.create_job("j2", {**DOC, "id": "j2"})
    assert creates == [] and store.usage("alice") == 2
