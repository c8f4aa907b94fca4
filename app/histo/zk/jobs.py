"""Job and task state in ZooKeeper: small JSON documents, never pixels."""
from __future__ import annotations

import json
import time

from kazoo.client import KazooClient
from kazoo.exceptions import BadVersionError, NodeExistsError, NoNodeError, NotEmptyError

from .acl import JOBS


DELETED = "deleted"  # the state of a tombstone: what is left of a job its owner (or an admin) deleted


def is_tombstone(doc: dict | None) -> bool:
    return doc is not None and doc.get("state") == DELETED


class JobStore:
    def __init__(self, client: KazooClient) -> None:
        self.zk = client

    def create_job(self, job_id: str, doc: dict) -> None:
        tx = self.zk.transaction()
        tx.create(f"{JOBS}/{job_id}", json.dumps(doc).encode())
        tx.create(f"{JOBS}/{job_id}/tasks", b"")
        results = tx.commit()
        for r in results:
            if isinstance(r, Exception):
                raise r

    def get_job(self, job_id: str) -> dict | None:
        try:
            data, _ = self.zk.get(f"{JOBS}/{job_id}")
        except NoNodeError:
            return None
        return json.loads(data)

    def update_job(self, job_id: str, **fields) -> dict:
        """Merge `fields` into the job's document. A tombstone is never written over: the
        tombstone comes back unchanged, so a job finishing after its deletion stays deleted."""
        path = f"{JOBS}/{job_id}"
        while True:  # compare-and-set on the node version: no lost update
            data, stat = self.zk.get(path)
            doc = json.loads(data)
            if is_tombstone(doc):
                return doc
            doc.update(fields)
            try:
                self.zk.set(path, json.dumps(doc).encode(), version=stat.version)
                return doc
            except BadVersionError:
                continue

    def list_jobs(self) -> list[dict]:
        out = []
        for child in self.zk.get_children(JOBS):
            doc = self.get_job(child)
            if doc is not None:
                out.append(doc)
        return out

    def put_task(self, job_id: str, n: int, doc: dict) -> None:
        path = f"{JOBS}/{job_id}/tasks/{n}"
        data = json.dumps(doc).encode()
        try:
            self.zk.create(path, data)
        except NodeExistsError:
            self.zk.set(path, data)

    def put_tasks(self, docs: dict[tuple[str, int], dict], created: set[tuple[str, int]]) -> None:
        """Write many task documents in one transaction (one ZooKeeper write, one fsync)."""
        tx = self.zk.transaction()
        for (job_id, n), doc in docs.items():
            path, data = f"{JOBS}/{job_id}/tasks/{n}", json.dumps(doc).encode()
            if (job_id, n) in created:
                tx.set_data(path, data)
            else:
                tx.create(path, data)
        if any(isinstance(r, Exception) for r in tx.commit()):
            for (job_id, n), doc in docs.items():  # one stale assumption fails the batch: go one by one
                try:
                    self.put_task(job_id, n, doc)
                except NoNodeError:
                    pass  # the job was deleted meanwhile
        created.update(docs)

    def get_tasks(self, job_id: str) -> dict[int, dict]:
        out = {}
        for child in self.zk.get_children(f"{JOBS}/{job_id}/tasks"):
            data, _ = self.zk.get(f"{JOBS}/{job_id}/tasks/{child}")
            out[int(child)] = json.loads(data)
        return out

    def delete_job(self, job_id: str) -> None:
        self.zk.delete(f"{JOBS}/{job_id}", recursive=True)

    def tombstone(self, job_id: str, by: str) -> tuple[dict, dict] | None:
        """Replace the job's document by a small tombstone (id, owner, when, by whom); its task nodes
        go with drop_tasks() once the job is stopped. Returns (the job as it was, the tombstone); None
        for an unknown job; for a job already deleted, (tombstone, tombstone). The tombstone lets the
        owner be told 410 Gone."""
        path = f"{JOBS}/{job_id}"
        while True:  # compare-and-set, like update_job: a concurrent update cannot resurrect the job
            try:
                data, stat = self.zk.get(path)
            except NoNodeError:
                return None
            doc = json.loads(data)
            if is_tombstone(doc):
                return doc, doc
            stone = {"id": job_id, "owner": doc.get("owner"), "state": DELETED, "created": doc.get("created"),
                     "deleted": time.time(), "deleted_by": by}
            try:
                self.zk.set(path, json.dumps(stone).encode(), version=stat.version)
                break
            except BadVersionError:
                continue
        return doc, stone

    def drop_tasks(self, job_id: str, attempts: int = 20) -> None:
        """Remove a deleted job's task nodes. A runner stopping meanwhile may still write one (then
        the parent is not empty yet: try again); once the parent is gone, no task node can appear."""
        for _ in range(attempts):
            try:
                self.zk.delete(f"{JOBS}/{job_id}/tasks", recursive=True)
                return
            except NoNodeError:
                return
            except NotEmptyError:
                time.sleep(0.05)
