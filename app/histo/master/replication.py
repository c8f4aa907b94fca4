"""Replication of sealed blobs between masters, over the internal mTLS listener (port 8443).

    PUT    /internal/v1/store/<job>/<kind>   body: the sealed blob; X-Histo-Sha256: its integrity tag
    GET    /internal/v1/store/<job>/<kind>   the blob and its tag (404: not held here)
    (a PUT of an upload to the leader may carry X-Histo-Data-Key: the job's data key, base64, which
    the master that accepted the upload hands over so that the leader need not unwrap it: datakeys.py)
    DELETE /internal/v1/store/<job>          every blob of the job (its wrapped key with them)

Only master identities reach these routes (master/internal.py's peer_check). A receiver stores a blob
only if its SHA-256 is the tag it came with and it parses as a sealed blob of that job and kind; a
reader checks what it fetched against the tag recorded in the job's znode, so a corrupted or forged
copy is never stored, served or propagated. A write is acknowledged once `quorum` masters (this one
included) hold the blob; Replicator.write raises QuorumNotReached otherwise."""
from __future__ import annotations

import asyncio
import base64
import logging
import threading
import time
from collections import OrderedDict
from typing import Callable, Protocol

from ..rpc import InternalClient
from ..zk.membership import Member
from .blobstore import BlobStore
from .envelope import BlobError, digest, parse

log = logging.getLogger("histo.replication")

STORE_PREFIX = "/internal/v1/store"
TAG_HEADER = "X-Histo-Sha256"
KEY_HEADER = "X-Histo-Data-Key"
RECENT_BYTES = 64 << 20  # sealed uploads the leader keeps in memory from their PUT until their job starts
RECENT_MAX_AGE = 30.0


class QuorumNotReached(RuntimeError):
    """Fewer masters than the quorum hold a blob; the message names how many and why."""


class Transport(Protocol):
    """How a master reaches its peers' stores (mTLS in the service, a fake in unit tests)."""

    def peers(self) -> list[str]: ...
    async def put(self, peer: str, job: str, kind: str, blob: bytes, tag: str, key: bytes | None = None) -> bool: ...
    async def get(self, peer: str, job: str, kind: str) -> bytes | None: ...
    async def delete(self, peer: str, job: str) -> bool: ...


class MtlsTransport:
    """Transport over the internal listener; `peers` returns the other live masters."""

    def __init__(self, client: Callable[[], InternalClient | None], peers: Callable[[], dict[str, Member]],
                 timeout: float = 30.0, max_blob: int = 1 << 30) -> None:
        self._client, self._peers, self.timeout, self.max_blob = client, peers, timeout, max_blob

    def peers(self) -> list[str]:
        return sorted(self._peers())

    def _url(self, peer: str, path: str) -> str | None:
        member = self._peers().get(peer)
        return member.endpoint + STORE_PREFIX + path if member else None

    async def _call(self, peer: str, method: str, path: str, **kw: object) -> tuple[int, bytes, dict[str, str]]:
        url, client = self._url(peer, path), self._client()
        if url is None or client is None:
            return 0, b"", {}
        try:
            reply = await client.request(method, url, ("master",), expect_host=peer, timeout=self.timeout,
                                         max_body=self.max_blob, **kw)  # type: ignore[arg-type]
        except Exception as exc:  # a peer down or refusing is counted, never fatal
            log.warning("store %s %s on %s failed: %s: %s", method, path, peer, type(exc).__name__, exc)
            return 0, b"", {}
        return reply.status, reply.body, dict(reply.headers)

    async def put(self, peer: str, job: str, kind: str, blob: bytes, tag: str, key: bytes | None = None) -> bool:
        headers = {TAG_HEADER: tag, "Content-Type": "application/octet-stream"}
        if key is not None:
            headers[KEY_HEADER] = base64.b64encode(key).decode()
        status, body, _ = await self._call(peer, "PUT", f"/{job}/{kind}", data=blob, headers=headers)
        if status != 201:
            log.warning("replica of %s/%s not stored on %s: %s %r", job, kind, peer, status, body[:120])
        return status == 201

    async def get(self, peer: str, job: str, kind: str) -> bytes | None:
        status, body, _ = await self._call(peer, "GET", f"/{job}/{kind}")
        return body if status == 200 else None

    async def delete(self, peer: str, job: str) -> bool:
        status, _, _ = await self._call(peer, "DELETE", f"/{job}")
        return status == 200


class Replicator:
    def __init__(self, name: str, store: BlobStore, transport: Transport, quorum: int,
                 on_event: Callable[..., None] | None = None) -> None:
        self.name, self.store, self.transport, self.quorum = name, store, transport, max(1, quorum)
        self._emit = on_event or (lambda kind, **kw: None)
        # (job, kind) -> (when, blob, tag): blobs a peer just PUT here, checked against their tag then,
        # that this master is about to read (the leader, an upload a standby accepted); see keep()
        self._recent: OrderedDict[tuple[str, str], tuple[float, bytes, str]] = OrderedDict()
        self._recent_lock = threading.Lock()

    def keep(self, job: str, kind: str, blob: bytes, tag: str) -> None:
        """Hold a blob just stored here (its bytes hashed to `tag` on arrival) in memory, so the read
        that follows (the leader starting a job a standby accepted) needs neither the disk nor a
        second hash. Sealed bytes only; at most RECENT_BYTES, each at most RECENT_MAX_AGE seconds."""
        if len(blob) > RECENT_BYTES:
            return
        with self._recent_lock:
            self._recent[(job, kind)] = (time.monotonic(), blob, tag)
            self._trim()

    def _trim(self) -> None:
        oldest, held = time.monotonic() - RECENT_MAX_AGE, sum(len(b) for _, b, _ in self._recent.values())
        while self._recent and (held > RECENT_BYTES or next(iter(self._recent.values()))[0] < oldest):
            _, (_, blob, _) = self._recent.popitem(last=False)
            held -= len(blob)

    def expire_recent(self) -> None:
        """Let go of the kept blobs past their age now (the master's upkeep), not at the next keep()."""
        with self._recent_lock:
            self._trim()

    def drop_recent(self, job: str) -> None:
        with self._recent_lock:
            for kind in ("upload", "result"):
                self._recent.pop((job, kind), None)

    def _take_recent(self, job: str, kind: str, want: str) -> bytes | None:
        with self._recent_lock:
            self._trim()
            item = self._recent.pop((job, kind), None)
        return item[1] if item is not None and item[2] == want else None

    async def write(self, job: str, kind: str, blob: bytes, tag: str | None = None, key: bytes | None = None,
                    key_to: str | None = None) -> list[str]:
        """Store `blob` here and on every peer; the masters holding it once the quorum has it. `tag`:
        its integrity tag when the caller has it already (digest(blob), not computed twice). `key`:
        the blob's data key, handed over to the peer `key_to` only (the leader, for an upload)."""
        tag = digest(blob) if tag is None else tag
        peers = self.transport.peers()
        # this master's fsynced write and the peers' at once: a job waits for the slowest, not the sum
        here, *oks = await asyncio.gather(
            asyncio.get_running_loop().run_in_executor(None, self.store.put, job, kind, blob),
            *(self.transport.put(p, job, kind, blob, tag, key if p == key_to else None) for p in peers),
            return_exceptions=True)
        stored_here = not isinstance(here, BaseException)
        if not stored_here:  # our own disk failed: one holder fewer, the quorum decides (repair fetches it)
            log.warning("%s of job %s not stored here: %s", kind, job, here)
        holders = ([self.name] if stored_here else []) + [p for p, ok in zip(peers, oks) if ok is True]
        if len(holders) < self.quorum:
            missing = [p for p, ok in zip(peers, oks) if ok is not True] + ([] if stored_here else [self.name])
            why = f"{', '.join(missing)} did not store it" if missing else "no other master is available"
            raise QuorumNotReached(f"stored on {len(holders)} master(s), {self.quorum} needed ({why})")
        return holders

    def local(self, job: str, kind: str, want: str) -> bytes | None:
        """This master's copy if it is intact (its tag is `want`); a corrupted copy is reported and None."""
        blob = self.store.get(job, kind)
        if blob is not None and digest(blob) != want:
            log.warning("local %s of job %s is corrupted (tag mismatch): replacing it", kind, job)
            self._emit("replica_corrupted", severity="warning", job=job, blob=kind, held_by=self.name)
            return None
        return blob

    async def fetch(self, job: str, kind: str, want: str) -> bytes | None:
        """A good copy from a peer (its tag must be `want`), stored here in place of a missing or
        corrupted one; None if no peer has one."""
        for peer in self.transport.peers():
            blob = await self.transport.get(peer, job, kind)
            if blob is None:
                continue
            if digest(blob) != want:
                self._emit("replica_corrupted", severity="warning", job=job, blob=kind, held_by=peer)
                continue
            try:
                parse(blob)
            except BlobError:
                continue
            await asyncio.get_running_loop().run_in_executor(None, self.store.put, job, kind, blob)
            self._emit("replica_repaired", severity="info", job=job, blob=kind, source=peer)
            return blob
        return None

    async def read(self, job: str, kind: str, want: str) -> bytes | None:
        """An intact copy: the one a peer just PUT here (keep()), this master's, else a peer's (then
        kept here too)."""
        blob = self._take_recent(job, kind, want)
        if blob is not None:
            return blob
        blob = await asyncio.get_running_loop().run_in_executor(None, self.local, job, kind, want)
        return blob if blob is not None else await self.fetch(job, kind, want)

    async def delete(self, job: str) -> list[str]:
        """Remove every blob of `job` here and on every peer; the peers that could not be reached
        (their repair pass removes it when they are back: the job's znode is a tombstone or gone)."""
        self.drop_recent(job)
        await asyncio.get_running_loop().run_in_executor(None, self.store.delete, job)
        peers = self.transport.peers()
        oks = await asyncio.gather(*(self.transport.delete(p, job) for p in peers))
        return [p for p, ok in zip(peers, oks) if not ok]
