"""Job and task state in ZooKeeper: small JSON documents, never pixels.

    /histo/jobs/<id>                 the job's document (a tombstone once deleted or expired)
    /histo/jobs/<id>/tasks/<n>       the last attempt assigned (worker, attempt id; retries with their error;
                                     the job's own document says when it is done; gone with the job)
    /histo/owners/<owner key>        {"bytes": stored bytes of that owner} (the storage quota)
    /histo/owners/<owner key>/<id>   the owner's index: GET /api/v1/jobs reads a page of it
    /histo/active/<id>               jobs not finished yet: what a new leader resumes

Job ids start with the creation time (12 hex digits of milliseconds), so a listing sorted by name is
sorted by age: a page is a slice of one owner's index, and retention scans only the oldest names.
Every node goes when retention ends (job_retention after a job finishes, and again after its
tombstone): the tree holds at most a few nodes per job of the retention window."""
from __future__ import annotations

import hashlib
import json
import secrets
import time
from typing import Any, Callable

from kazoo.client import KazooClient
from kazoo.exceptions import BadVersionError, NodeExistsError, NoNodeError, NotEmptyError

from .acl import ACTIVE, JOBS, OWNERS
from .client import call


Doc = dict[str, Any]  # a job document as stored in its znode
DELETED = "deleted"  # the state of a tombstone: what is left of a job its owner (or an admin) deleted
EXPIRED = "expired"  # a tombstone's `reason` when retention removed the job


def is_tombstone(doc: Doc | None) -> bool:
    return doc is not None and doc.get("state") == DELETED


def new_job_id(now: float | None = None) -> str:
    """32 hex digits: the creation time in milliseconds (12), then 80 random bits."""
    ms = int((time.time() if now is None else now) * 1000)
    return f"{ms:012x}{secrets.token_hex(10)}"


def created_of(job_id: str) -> float | None:
    """The creation time a job id carries (None for an id of the older, random-only form)."""
    if len(job_id) != 32:
        return None
    try:
        return int(job_id[:12], 16) / 1000
    except ValueError:
        return None


def _used(data: bytes | None, delta: int) -> int:
    """An owner node's stored bytes after `delta` (never below 0; an unreadable node counts as 0)."""
    try:
        return max(0, int(json.loads(data or b"{}").get("bytes", 0)) + delta)
    except (ValueError, AttributeError):
        return max(0, delta)


def owner_key(owner: str) -> str:
    """An owner's index node name: any principal name, never a path component of its own."""
    return hashlib.sha256(owner.encode()).hexdigest()[:32]


class JobStore:
    def __init__(self, client: KazooClient) -> None:
        self.zk = client

    def _r(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """One ZooKeeper round trip (zk/client.py call: retried while the session survives). Each step
        is safe to repeat: a create that already happened meets NodeExistsError, a delete NoNodeError,
        a compare-and-set BadVersionError, and each caller handles those."""
        return call(self.zk, fn, *args, **kwargs)

    def create_job(self, job_id: str, doc: Doc) -> None:
        """The job's node, its tasks folder, its entry in its owner's index and in the active jobs:
        one transaction."""
        owner = self._owner_node(str(doc.get("owner")))
        data = json.dumps(doc).encode()

        def commit() -> list[Any]:  # a transaction commits once: a retry builds a new one
            tx = self.zk.transaction()
            tx.create(f"{JOBS}/{job_id}", data)
            tx.create(f"{JOBS}/{job_id}/tasks", b"")
            tx.create(f"{owner}/{job_id}", b"")
            tx.create(f"{ACTIVE}/{job_id}", b"")
            return list(tx.commit())
        results = self._r(commit)
        if results and isinstance(results[0], NodeExistsError) and self._holds(f"{JOBS}/{job_id}", data):
            return  # the first attempt was applied before its connection was lost
        for r in results:
            if isinstance(r, Exception):
                raise r

    def _holds(self, path: str, data: bytes) -> bool:
        try:
            return bool(self._r(self.zk.get, path)[0] == data)
        except NoNodeError:
            return False

    def _owner_node(self, owner: str) -> str:
        """The owner's node, made if it is missing. Looked up first: a create that meets an existing
        node is still a write ZooKeeper logs (an error transaction), and the node exists for every
        owner but on their first upload."""
        path = f"{OWNERS}/{owner_key(owner)}"
        if self._r(self.zk.exists, path) is not None:
            return path
        try:
            self._r(self.zk.create, path, json.dumps({"bytes": 0}).encode())
        except NodeExistsError:
            pass
        return path

    # -- the storage quota ---------------------------------------------------------------------
    def usage(self, owner: str) -> int:
        try:
            data, _ = self._r(self.zk.get, f"{OWNERS}/{owner_key(owner)}")
        except NoNodeError:
            return 0
        try:
            return max(0, int(json.loads(data).get("bytes", 0)))
        except (ValueError, AttributeError):
            return 0

    def add_usage(self, owner: str, delta: int) -> int:
        path = f"{OWNERS}/{owner_key(owner)}"
        while True:
            try:
                data, stat = self._r(self.zk.get, path)
            except NoNodeError:
                self._owner_node(owner)
                continue
            used = _used(data, delta)
            try:
                self._r(self.zk.set, path, json.dumps({"bytes": used}).encode(), version=stat.version)
                return used
            except BadVersionError:
                continue

    # -- listing ----------------------------------------------------------------------------------
    def page(self, owner: str | None, limit: int, cursor: str | None = None) -> tuple[list[Doc], str | None]:
        result: tuple[list[Doc], str | None] = self._r(self._page, owner, limit, cursor)  # read-only: whole
        return result

    def _page(self, owner: str | None, limit: int, cursor: str | None) -> tuple[list[Doc], str | None]:
        """Up to `limit` jobs, newest first, older than `cursor` (a job id); the next cursor or None.
        An owner's page reads that owner's index only; owner None (an admin) reads the job names."""
        parent = JOBS if owner is None else f"{OWNERS}/{owner_key(owner)}"
        try:
            names = self.zk.get_children(parent)
        except NoNodeError:
            return [], None
        names = sorted((n for n in names if cursor is None or n < cursor), reverse=True)
        docs: list[Doc] = []
        pos = 0
        while len(docs) < limit and pos < len(names):  # tombstones (admin's listing) are skipped
            chunk = names[pos:pos + limit - len(docs)]
            pos += len(chunk)
            asyncs = [self.zk.get_async(f"{JOBS}/{n}") for n in chunk]
            for a in asyncs:
                try:
                    data, _ = a.get()
                except NoNodeError:
                    continue
                doc = json.loads(data)
                if not is_tombstone(doc):
                    docs.append(doc)
        more = pos < len(names)
        return docs, (docs[-1]["id"] if docs and more else None)

    def active(self) -> list[str]:
        return sorted(self._r(self.zk.get_children, ACTIVE))

    def job_names(self) -> list[str]:
        return sorted(self._r(self.zk.get_children, JOBS))

    def finish(self, job_id: str, when: Callable[[Doc], bool] | None = None, usage: tuple[str, int] | None = None,
               **fields: Any) -> Doc:
        """The job's last update (done or failed): its active entry goes (its task attempts stay, a
        few small nodes, until the job is removed) and, with `usage` (owner, bytes), the bytes it added
        are charged to its owner, all in one transaction (one write, one fsync: the job is never done
        without its bytes counted, nor counted twice). With `when`, only if the stored document passes
        it (a run another master took over, or a job already finished, writes nothing, removes nothing
        and charges nothing)."""
        path, active = f"{JOBS}/{job_id}", f"{ACTIVE}/{job_id}"
        owner_path = f"{OWNERS}/{owner_key(usage[0])}" if usage is not None else None
        stored = json.loads(json.dumps(fields))  # as they read back
        drop_active = True  # until a commit says the entry is gone already
        while True:  # compare-and-set on the job's (and the owner's) node version, like _merge
            data, stat = self._r(self.zk.get, path)
            doc: Doc = json.loads(data)
            if is_tombstone(doc):
                return doc
            if when is not None and not when(doc):
                # our own commit, applied before a lost connection made the retry see a newer version
                if all(doc.get(k) == v for k, v in stored.items()):
                    self._delete_quietly(active)
                return doc
            doc.update(fields)
            ops: list[tuple[str, str, bytes, int]] = [("set", path, json.dumps(doc).encode(), stat.version)]
            if drop_active:
                ops.append(("delete", active, b"", -1))
            if owner_path is not None and usage is not None:
                try:
                    owner_data, owner_stat = self._r(self.zk.get, owner_path)
                except NoNodeError:
                    self._owner_node(usage[0])
                    continue
                ops.append(("set", owner_path, json.dumps({"bytes": _used(owner_data, usage[1])}).encode(),
                            owner_stat.version))
            results = self._r(self._commit, ops)
            if not any(isinstance(r, Exception) for r in results):
                return doc
            if drop_active and isinstance(results[1], NoNodeError):
                drop_active = False  # the active entry went already (deactivated): commit without it
            # else a version moved (a concurrent update of the job or the owner's bytes): read again

    def _commit(self, ops: list[tuple[str, str, bytes, int]]) -> list[Any]:
        """One transaction of (set|delete, path, data, version) steps; its results. A transaction
        commits once: a retry (self._r) calls this again and builds a new one."""
        tx = self.zk.transaction()
        for op, path, data, version in ops:
            if op == "set":
                tx.set_data(path, data, version=version)
            else:
                tx.delete(path, version=version)
        return list(tx.commit())

    def deactivate(self, job_id: str) -> None:
        """Drop a stale entry of the active jobs (its job ended or is gone)."""
        self._delete_quietly(f"{ACTIVE}/{job_id}")

    def _delete_quietly(self, path: str) -> None:
        try:
            self._r(self.zk.delete, path)
        except NoNodeError:
            pass

    def remove(self, job_id: str, owner: str | None) -> None:
        """Forget a job entirely (its tombstone's retention is over)."""
        if owner is not None:
            self._delete_quietly(f"{OWNERS}/{owner_key(owner)}/{job_id}")
        self._delete_quietly(f"{ACTIVE}/{job_id}")
        try:
            self._r(self.zk.delete, f"{JOBS}/{job_id}", recursive=True)
        except NoNodeError:
            pass

    def count_nodes(self, path: str = "/histo") -> int:
        """Every znode under `path` (for tests and the bench: the tree stays bounded)."""
        n: int = self._r(self._count, path)
        return n

    def _count(self, path: str) -> int:
        stat = self.zk.exists(path)
        if stat is None:
            return 0
        return 1 + sum(self._count(f"{path}/{c}".replace("//", "/")) for c in self.zk.get_children(path))

    def get_job(self, job_id: str) -> Doc | None:
        try:
            data, _ = self._r(self.zk.get, f"{JOBS}/{job_id}")
        except NoNodeError:
            return None
        doc: Doc = json.loads(data)
        return doc

    def update_job(self, job_id: str, when: Callable[[Doc], bool] | None = None, **fields: Any) -> Doc:
        """Merge `fields` into the job's document; the document as stored afterwards. A tombstone is
        never written over (a job finishing after its deletion stays deleted), nor a document `when`
        refuses: both come back unchanged."""
        return self._merge(job_id, when, fields)[0]

    def _merge(self, job_id: str, when: Callable[[Doc], bool] | None, fields: dict[str, Any]) -> tuple[Doc, bool]:
        path = f"{JOBS}/{job_id}"
        stored = json.loads(json.dumps(fields))  # as they read back
        while True:  # compare-and-set on the node version: no lost update, `when` sees what is replaced
            data, stat = self._r(self.zk.get, path)
            doc: Doc = json.loads(data)
            if is_tombstone(doc):
                return doc, False
            if when is not None and not when(doc):
                # our own write, applied before a lost connection made the retry see a newer version
                return doc, all(doc.get(k) == v for k, v in stored.items())
            doc.update(fields)
            try:
                self._r(self.zk.set, path, json.dumps(doc).encode(), version=stat.version)
                return doc, True
            except BadVersionError:
                continue

    def put_task(self, job_id: str, n: int, doc: Doc) -> None:
        path = f"{JOBS}/{job_id}/tasks/{n}"
        data = json.dumps(doc).encode()
        try:
            self._r(self.zk.create, path, data)
        except NodeExistsError:
            self._r(self.zk.set, path, data)

    def put_tasks(self, docs: dict[tuple[str, int], Doc], created: set[tuple[str, int]]) -> None:
        """Write many task documents in one transaction (one ZooKeeper write, one fsync)."""
        def commit() -> list[Any]:
            tx = self.zk.transaction()
            for (job_id, n), doc in docs.items():
                path, data = f"{JOBS}/{job_id}/tasks/{n}", json.dumps(doc).encode()
                if (job_id, n) in created:
                    tx.set_data(path, data)
                else:
                    tx.create(path, data)
            return list(tx.commit())
        if any(isinstance(r, Exception) for r in self._r(commit)):
            for (job_id, n), doc in docs.items():  # one stale assumption fails the batch: go one by one
                try:
                    self.put_task(job_id, n, doc)
                except NoNodeError:
                    pass  # the job was deleted meanwhile
        created.update(docs)

    def get_tasks(self, job_id: str) -> dict[int, Doc]:
        out = {}
        for child in self._r(self.zk.get_children, f"{JOBS}/{job_id}/tasks"):
            data, _ = self._r(self.zk.get, f"{JOBS}/{job_id}/tasks/{child}")
            out[int(child)] = json.loads(data)
        return out

    def delete_job(self, job_id: str) -> None:
        self._r(self.zk.delete, f"{JOBS}/{job_id}", recursive=True)

    def tombstone(self, job_id: str, by: str, reason: str = "deleted") -> tuple[Doc, Doc] | None:
        """Replace the job's document by a small tombstone (id, owner, when, by whom); its task nodes
        go with drop_tasks() once the job is stopped. Returns (the job as it was, the tombstone); None
        for an unknown job; for a job already deleted, (tombstone, tombstone). The tombstone lets the
        owner be told 410 Gone."""
        path = f"{JOBS}/{job_id}"
        while True:  # compare-and-set, like update_job: a concurrent update cannot resurrect the job
            try:
                data, stat = self._r(self.zk.get, path)
            except NoNodeError:
                return None
            doc = json.loads(data)
            if is_tombstone(doc):
                return doc, doc
            stone = {"id": job_id, "owner": doc.get("owner"), "state": DELETED, "created": doc.get("created"),
                     "deleted": time.time(), "deleted_by": by, "reason": reason}
            try:
                self._r(self.zk.set, path, json.dumps(stone).encode(), version=stat.version)
                break
            except BadVersionError:
                continue
        # listed no more, resumed no more (the tombstone itself answers 410 until its retention ends)
        if doc.get("owner") is not None:
            self._delete_quietly(f"{OWNERS}/{owner_key(str(doc['owner']))}/{job_id}")
        self._delete_quietly(f"{ACTIVE}/{job_id}")
        return doc, stone

    def drop_tasks(self, job_id: str, attempts: int = 20) -> None:
        """Remove a deleted job's task nodes. A runner stopping meanwhile may still write one (then
        the parent is not empty yet: try again); once the parent is gone, no task node can appear."""
        for _ in range(attempts):
            try:
                self._r(self.zk.delete, f"{JOBS}/{job_id}/tasks", recursive=True)
                return
            except NoNodeError:
                return
            except NotEmptyError:
                time.sleep(0.05)
