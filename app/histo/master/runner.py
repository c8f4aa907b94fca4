"""The job lifecycle, in one place: submit, store, run, resume, fail, retain, delete, and reading a
result back. HTTP handlers (master/api.py) translate requests into these calls and RunnerError into
JSON errors; the service (master/service.py) only wires the parts in.

The invariants it keeps:

- **Accepted is durable.** submit() answers (and the API says 202) only once the upload, sealed with
  the job's own data key, is held by `quorum` masters and the job's znode names its integrity tag.
- **A master's death is never the job's failure.** A job cancelled by a lost leadership or a stopping
  process stays queued/running in ZooKeeper (and in /histo/active); the next leader resumes it from
  a stored copy of its upload (resume_all), and the computation is deterministic, so the result is
  bit-identical. A job interrupted `max_runs` times is failed with that reason (a poison pill must not
  take down every leader in turn).
- **Done means kept.** A job is `done` only once its sealed result (image, histograms, plot) is held by
  `quorum` masters; any master serves it (result()), from its own copy or, if that is missing or its
  tag does not match, from a peer's (then kept here: read repair).
- **Removed only by retention or by its owner.** retain() (the leader) turns jobs finished more than
  `retention` seconds ago into tombstones (410 for their owner) and removes their blobs everywhere;
  tombstones go after another `retention`. delete() does the same at once for the owner or an admin.
- **Catch-up.** repair() (every master) fetches the blobs it misses or holds corrupted, and removes
  the blobs of jobs that no longer exist."""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Protocol

from ..compute.equalize import Result
from ..compute.imageio import Header
from ..zk.client import COORDINATION_LOST
from ..zk.jobs import EXPIRED, created_of, is_tombstone, new_job_id
from .datakeys import KeyService, KeysUnavailable
from ..compute.frame import pack_result
from .envelope import BlobError, DataKey, digest, open_blob, parse, seal, unpack_result
from .replication import QuorumNotReached, Replicator
from .scheduler import JobFailed, Outcome, Spec

Doc = dict[str, Any]  # a job document as stored in its znode
log = logging.getLogger("histo.runner")

ENVELOPE_OVERHEAD = 512  # bytes a sealed blob adds to its plaintext (header, wrapped key, GCM tag), at most
ORPHAN_GRACE = 600.0  # seconds a blob without a job znode is kept (its upload may still be in progress)


def _run_of(run: int | None) -> Callable[[Doc], bool]:
    """A job document still open (queued or running) and, with `run`, still in that run: the fence that
    keeps a run cancelled by a lost leadership (its ZooKeeper writes may land late) from writing over
    the run that took the job over, or a finished job from running again."""
    def check(doc: Doc) -> bool:
        return doc.get("state") in ("queued", "running") and (run is None or int(doc.get("runs", 1)) == run)
    return check


def _sealed(key: DataKey, job_id: str, owner: str, framed: bytes) -> tuple[bytes, str]:
    """The result sealed and its integrity tag (one trip to the executor)."""
    blob = seal(key, job_id, owner, "result", framed)
    return blob, digest(blob)


class RunnerError(Exception):
    """A refusal the API shows as a JSON error: HTTP status, error code, a message that says why."""

    def __init__(self, status: int, code: str, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.retry_after = status, code, message, retry_after


class JobRecords(Protocol):
    """What the runner needs of ZooKeeper (zk/jobs.py JobStore; a Doc-backed fake in unit tests)."""

    def create_job(self, job_id: str, doc: Doc) -> None: ...
    def get_job(self, job_id: str) -> Doc | None: ...
    def update_job(self, job_id: str, when: Callable[[Doc], bool] | None = None, **fields: Any) -> Doc: ...
    def finish(self, job_id: str, when: Callable[[Doc], bool] | None = None,
               usage: tuple[str, int] | None = None, **fields: Any) -> Doc: ...
    def tombstone(self, job_id: str, by: str, reason: str = ...) -> tuple[Doc, Doc] | None: ...
    def drop_tasks(self, job_id: str, attempts: int = ...) -> None: ...
    def remove(self, job_id: str, owner: str | None) -> None: ...
    def active(self) -> list[str]: ...
    def deactivate(self, job_id: str) -> None: ...
    def job_names(self) -> list[str]: ...
    def usage(self, owner: str) -> int: ...
    def add_usage(self, owner: str, delta: int) -> int: ...


@dataclass(frozen=True)
class Settings:
    retention: float = 86400.0
    quota: int = 2 << 30
    job_timeout: float = 120.0
    max_runs: int = 3
    store_timeout: float = 600.0  # how long a finished job waits for the quorum to store its result


Compute = Callable[[str, bytes, Spec, dict[str, float]], Awaitable[Outcome]]
Receipt = Callable[[Doc, Outcome, float], Awaitable[Doc]]


def _mb(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


class JobRunner:
    def __init__(self, name: str, jobs: JobRecords, replicas: Replicator, keys: KeyService, compute: Compute,
                 plot: Callable[[Result, str], bytes], receipt: Receipt,
                 settings: Settings, emit: Callable[..., None] | None = None,
                 clock: Callable[[], float] = time.time, leader: Callable[[], str | None] = lambda: None) -> None:
        self.name, self.jobs, self.replicas, self.keys = name, jobs, replicas, keys
        self.compute, self.plot, self.receipt = compute, plot, receipt
        self.settings, self.clock = settings, clock
        self.leader = leader  # the leader's name as this master knows it (an upload's key is handed to it)
        self._emit = emit or (lambda kind, **kw: None)
        self.running: dict[str, asyncio.Task[None]] = {}
        self.owners: dict[str, str] = {}  # job id -> owner, for the jobs running here
        self._submitting: set[str] = set()
        self._complete: set[str] = set()  # jobs whose blobs repair() found all present and intact

    @staticmethod
    async def _z(fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(None, fn, *args)

    # -- submit -----------------------------------------------------------------------------------
    async def check_quota(self, owner: str, size: int) -> None:
        used = int(await self._z(self.jobs.usage, owner))
        need = size + ENVELOPE_OVERHEAD
        if used + need > self.settings.quota:
            raise RunnerError(413, "quota_exceeded",
                              f"your stored jobs use {_mb(used)} of your {_mb(self.settings.quota)} storage quota "
                              f"and this upload needs {_mb(need)}: delete jobs you no longer need "
                              "(DELETE /api/v1/jobs/{id}) or wait until their retention ends")

    async def submit(self, owner: str, data: bytes, mode: str, header: Header, upload_sha256: str,
                     timings: dict[str, float], start: bool = True) -> Doc:
        """Store the upload on the quorum, record the job and, on the leader (`start`), start it; the job's
        document. A job another master accepted is queued in /histo/active, where the leader's watch
        picks it up (resume_all): its znode has no `master` and `runs` 0 until then."""
        await self.check_quota(owner, len(data))
        try:
            key: DataKey = await self._z(self.keys.new_key)
        except KeysUnavailable as exc:
            raise RunnerError(503, "vault_unavailable", f"uploads are stored encrypted and {exc}; "
                              "try again shortly", retry_after=5) from None
        job_id = new_job_id(self.clock())
        self._submitting.add(job_id)
        try:
            blob: bytes = await self._z(seal, key, job_id, owner, "upload", data)
            # queued for the leader: its data key goes along with the leader's replica (datakeys.py),
            # so that the leader starting the job need not ask Vault to unwrap it
            key_to = None if start else self.leader()
            key_to = None if key_to == self.name else key_to
            try:
                await self.replicas.write(job_id, "upload", blob, key=key.plaintext if key_to else None, key_to=key_to)
            except QuorumNotReached as exc:
                await self.replicas.delete(job_id)
                raise RunnerError(503, "not_durable", f"the upload could not be stored durably: {exc}; "
                                  "try again shortly", retry_after=5) from None
            doc = {"id": job_id, "owner": owner, "state": "queued", "mode": mode, "format": header.fmt,
                   "width": header.width, "height": header.height, "work_mode": header.work_mode(mode),
                   "progress": 0.0, "tiles": 0, "reason": None, "timings": timings, "created": self.clock(),
                   "finished": None, "master": self.name if start else None, "received_by": self.name,
                   "upload_sha256": upload_sha256, "blobs": {"upload": digest(blob)}, "bytes": len(blob),
                   "runs": 1 if start else 0}
            try:
                await self._z(self.jobs.create_job, job_id, doc)
            except BaseException:
                await self.replicas.delete(job_id)
                raise
            await self._z(self.jobs.add_usage, owner, len(blob))
            if start:
                self._start(job_id, owner, data, timings, doc, key, started=False)
        finally:
            self._submitting.discard(job_id)
        return doc

    def _start(self, job_id: str, owner: str, upload: bytes, timings: dict[str, float], doc: Doc,
               key: DataKey, started: bool) -> None:
        """`started`: `doc` is already this run's `running` document (resume() wrote it)."""
        task = asyncio.get_running_loop().create_task(self._run(job_id, owner, upload, timings, doc, key, started))
        self.running[job_id] = task
        self.owners[job_id] = owner

    def is_mine(self, job_id: str) -> bool:
        """The job runs here, or this master is accepting it (its own submit starts it)."""
        return job_id in self.running or job_id in self._submitting

    def owned_running(self, owner: str) -> int:
        return sum(1 for j, o in self.owners.items() if o == owner and j in self.running)

    # -- run ----------------------------------------------------------------------------------------
    async def _run(self, job_id: str, owner: str, upload: bytes, timings: dict[str, float], doc: Doc,
                   key: DataKey, started: bool = False) -> None:
        run = int(doc.get("runs", 1))
        ours = _run_of(run)
        try:
            if not started:  # a job this master accepted: resume() wrote `running` for the others
                now = await self._z(lambda: self.jobs.update_job(job_id, when=ours, state="running"))
                if not ours(now):
                    log.info("job %s: run %d on %s stands down (the job is %s, run %s)", job_id, run, self.name,
                             now.get("state"), now.get("runs"))
                    return
            self._emit("job_progress", severity="info", job=job_id, progress=0.05, state="running", audience=owner)
            outcome = await asyncio.wait_for(self.compute(job_id, upload, Spec.of(doc), timings),
                                             self.settings.job_timeout)
            del upload
            framed = outcome.framed  # as the worker framed it (and the scheduler checked it)
            if framed is None:
                plot = await self._z(self.plot, outcome.result, job_id)
                framed = pack_result(outcome.result, plot)
            blob, tag = await self._z(_sealed, key, job_id, owner, framed)
            del framed
            now = await self._z(self.jobs.get_job, job_id)
            if now is None or not ours(now):  # taken over (or finished) while this run computed
                log.info("job %s: run %d on %s computed, but the job moved on; its result is dropped", job_id,
                         run, self.name)
                return
            timings.update(outcome.timings)
            timings["total"] = sum(v for k, v in timings.items() if k != "total")
            finished = self.clock()
            # the receipt (a Vault signature over the result's hash) is signed while the result is stored
            # on the quorum: neither waits for the other; the job is done only once both are, and a result
            # that cannot be stored gets no receipt
            signing = asyncio.ensure_future(self.receipt(doc, outcome, finished))
            try:
                await self._store_result(job_id, blob, tag)
            except BaseException:
                signing.cancel()
                raise
            receipt = await signing
            blobs = {**doc.get("blobs", {}), "result": tag}
            size = len(blob)
            del blob
            # done, out of /histo/active and the result's bytes charged to its owner: one transaction
            stored = await self._z(lambda: self.jobs.finish(
                job_id, when=ours, usage=(owner, size), state="done", progress=1.0, tiles=outcome.tiles,
                timings=timings, finished=finished, blobs=blobs, bytes=int(doc.get("bytes", 0)) + size, **receipt))
            if is_tombstone(stored):  # deleted while it ran: keep nothing of it
                await self.replicas.delete(job_id)
                return
            if stored.get("finished") != finished:  # another run holds the job now: its result counts
                log.info("job %s: run %d on %s was overtaken by run %s", job_id, run, self.name, stored.get("runs"))
                return
            self._emit("job_progress", severity="info", job=job_id, progress=1.0, state="done", audience=owner)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if not getattr(task, "histo_deleted", False):
                # leadership lost or this process stopping: the job stays queued/running for the next leader
                log.info("job %s interrupted on %s; the next leader resumes it", job_id, self.name)
            raise
        except asyncio.TimeoutError:
            await self._fail(job_id, owner, f"job exceeded {self.settings.job_timeout:.0f}s", run)
        except JobFailed as exc:
            await self._fail(job_id, owner, str(exc), run)
        except COORDINATION_LOST as exc:
            # ZooKeeper away longer than a session's retries: not the job's fault. It stays in
            # /histo/active and the leader's next resume pass (or the next leader) runs it again.
            log.warning("job %s paused on %s: ZooKeeper unavailable (%s); resumed later", job_id, self.name,
                        type(exc).__name__)
        except Exception:
            log.exception("job %s failed", job_id)
            await self._fail(job_id, owner, "internal error while running the job", run)
        finally:
            self.running.pop(job_id, None)
            self.owners.pop(job_id, None)

    async def _store_result(self, job_id: str, blob: bytes, tag: str) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.store_timeout
        while True:
            try:
                await self.replicas.write(job_id, "result", blob, tag)
                return
            except QuorumNotReached as exc:
                if loop.time() > deadline:
                    raise JobFailed(f"the result could not be stored durably: {exc}") from None
                log.warning("result of job %s not on the quorum yet: %s", job_id, exc)
                await asyncio.sleep(1.0)

    async def _fail(self, job_id: str, owner: str, reason: str, run: int | None = None) -> None:
        """Fail the job, unless it already ended or (`run` given) another run took it over."""
        finished = self.clock()
        try:
            stored = await self._z(lambda: self.jobs.finish(job_id, when=_run_of(run), state="failed", reason=reason,
                                                            finished=finished))
        except Exception as exc:  # ZooKeeper gone: the job stays active and the next leader resumes it
            log.warning("cannot record failure of job %s: %s", job_id, exc)
            return
        if stored.get("finished") != finished:
            log.info("job %s: not failed (%s): it is %s, run %s", job_id, reason, stored.get("state"),
                     stored.get("runs"))
            return
        self._emit("job_failed", severity="warning", job=job_id, reason=reason, audience=owner)

    # -- resume (a new leader) -----------------------------------------------------------------------
    async def resume_all(self, active: list[str] | None = None) -> list[str]:
        """Resume every queued or running job no task here runs; the ids resumed. `active`: the list of
        active jobs when the caller has just read it (the leader's watch), else it is read here."""
        resumed = []
        for job_id in (active if active is not None else await self._z(self.jobs.active)):
            if self.is_mine(job_id):
                continue
            doc = await self._z(self.jobs.get_job, job_id)
            if self.is_mine(job_id):
                continue
            if doc is None or is_tombstone(doc) or doc.get("state") not in ("queued", "running"):
                await self._z(self.jobs.deactivate, job_id)
                continue
            if await self.resume(doc):
                resumed.append(job_id)
        return resumed

    async def resume(self, doc: Doc) -> bool:
        job_id, owner = str(doc["id"]), str(doc["owner"])
        runs = int(doc.get("runs", 1))
        if runs >= self.settings.max_runs:
            await self._fail(job_id, owner, f"the job was interrupted {runs} times while it ran (each time its "
                             "master stopped); it is not started again")
            return False
        want = (doc.get("blobs") or {}).get("upload")
        if not want:
            await self._fail(job_id, owner, "the job was accepted before uploads were stored; its image is gone")
            return False
        blob = await self.replicas.read(job_id, "upload", want)
        if blob is None:
            log.warning("job %s: no master holding its upload answers; resumed later", job_id)
            return False
        try:
            header = parse(blob)
            opened = await self._open_handed(job_id, owner, header.wrapped_key, blob)
            if opened is None:
                plaintext_key = await self._z(self.keys.unwrap, header.wrapped_key)
                key = DataKey(plaintext=plaintext_key, wrapped=header.wrapped_key)
                data = await self._z(open_blob, key.plaintext, blob, job_id, owner, "upload")
            else:
                key, data = opened
        except KeysUnavailable as exc:
            log.warning("job %s resumed later: %s", job_id, exc)
            return False
        except BlobError as exc:
            await self._fail(job_id, owner, f"the stored upload cannot be opened ({exc})")
            return False
        # compare-and-set on the run number: of two masters resuming the same run, one starts it; the
        # same write marks it running (the run's fence, as _run would write it, one write fewer)
        doc = await self._z(lambda: self.jobs.update_job(job_id, when=_run_of(runs), runs=runs + 1, master=self.name,
                                                         state="running"))
        if (is_tombstone(doc) or int(doc.get("runs", 1)) != runs + 1 or doc.get("master") != self.name
                or doc.get("state") != "running"):
            return False
        timings = {k: v for k, v in (doc.get("timings") or {}).items() if k in ("receive", "header")}
        self._start(job_id, owner, data, timings, doc, key, started=True)
        if runs:  # runs 0: a job another master accepted, started here for the first time
            self._emit("job_resumed", severity="warning", job=job_id, master=self.name, run=runs + 1,
                       audience=owner)
        return True

    async def _open_handed(self, job_id: str, owner: str, wrapped: str, blob: bytes) -> tuple[DataKey, bytes] | None:
        """The upload opened with the key the accepting master handed over with it (datakeys.py), and
        that key; None if none was handed over or it does not open the upload (AES-GCM: a key is
        used only once it has opened its blob), and the caller asks Vault to unwrap it as before."""
        handed = self.keys.offered(wrapped)
        if handed is None:
            return None
        try:
            data: bytes = await self._z(open_blob, handed, blob, job_id, owner, "upload")
        except BlobError:
            log.warning("job %s: the data key handed over with its upload does not open it; asking Vault", job_id)
            return None
        # for this run only, never into the cache shared by every job: the key proved it opens this
        # blob, not that it is what the wrapped key names (a master may seal its own upload with a key of
        # its choosing under another job's wrapped key, which must not change what that key unwraps to)
        return DataKey(plaintext=handed, wrapped=wrapped), data

    # -- read back ------------------------------------------------------------------------------------
    async def result(self, doc: Doc) -> tuple[Result, bytes]:
        """The job's result and plot, from this master's copy or a peer's; RunnerError if unavailable."""
        job_id, owner = str(doc["id"]), str(doc["owner"])
        want = (doc.get("blobs") or {}).get("result")
        if not want:
            raise RunnerError(410, "result_expired", "this job finished before results were stored durably; its "
                              "result is gone")
        for _ in range(2):
            blob = await self.replicas.read(job_id, "result", want)
            if blob is None:
                raise RunnerError(503, "result_unavailable", "no master holding this result answers right now; "
                                  "try again shortly", retry_after=5)
            try:
                header = parse(blob)
                key = await self._z(self.keys.unwrap, header.wrapped_key)
                plaintext = await self._z(open_blob, key, blob, job_id, owner, "result")
                result: tuple[Result, bytes] = unpack_result(plaintext)
                return result
            except KeysUnavailable as exc:
                raise RunnerError(503, "vault_unavailable", f"the result is stored encrypted and {exc}; try again "
                                  "shortly", retry_after=5) from None
            except BlobError as exc:  # intact bytes that do not open: drop this copy, fetch another
                log.warning("result of job %s does not open (%s): fetching another copy", job_id, exc)
                await self._z(self.replicas.store.delete, job_id)
        raise RunnerError(503, "result_unavailable", "the stored result cannot be opened right now")

    # -- delete and retention -------------------------------------------------------------------------------
    async def _remove_blobs(self, job_id: str) -> None:
        held = await self._z(self.replicas.store.get, job_id, "upload")
        if held is not None:
            try:
                self.keys.forget(parse(held).wrapped_key)
            except BlobError:
                pass
        unreachable = await self.replicas.delete(job_id)
        if unreachable:
            log.warning("job %s: blobs on %s removed when they are back (repair)", job_id, ", ".join(unreachable))

    async def delete(self, job_id: str, by: str, reason: str = "deleted") -> tuple[Doc, Doc, bool] | None:
        """Tombstone the job, cancel it if it runs here, remove its blobs (and wrapped key) from every
        master: (the job as it was, its tombstone, cancelled); None for an unknown job."""
        stoned = await self._z(lambda: self.jobs.tombstone(job_id, by, reason))
        if stoned is None:
            return None
        before, stone = stoned
        if before is stone:
            return stone, stone, False
        task = self.running.get(job_id)
        cancelled = task is not None and not task.done()
        if task is not None and cancelled:
            task.histo_deleted = True  # type: ignore[attr-defined]
            task.cancel()
        await self._remove_blobs(job_id)
        await self._z(self.jobs.drop_tasks, job_id)
        if before.get("owner") is not None and before.get("bytes"):
            await self._z(self.jobs.add_usage, str(before["owner"]), -int(before["bytes"]))
        return before, stone, cancelled

    async def retain(self) -> dict[str, int]:
        """The leader, now and then: jobs finished more than `retention` ago expire (tombstone, blobs
        removed everywhere); tombstones older than `retention` go. Reads only the documents of jobs
        created before the cutoff (job ids carry their creation time)."""
        cutoff = self.clock() - self.settings.retention
        expired = removed = 0
        for job_id in await self._z(self.jobs.job_names):
            created = created_of(job_id)
            if created is not None and created >= cutoff:
                continue
            doc = await self._z(self.jobs.get_job, job_id)
            if doc is None:
                continue
            if is_tombstone(doc):
                if float(doc.get("deleted") or 0) < cutoff:
                    await self._z(self.jobs.remove, job_id, doc.get("owner"))
                    removed += 1
            elif doc.get("state") in ("done", "failed") and float(doc.get("finished") or 0) < cutoff:
                await self.delete(job_id, "retention", EXPIRED)
                expired += 1
        return {"expired": expired, "removed": removed}

    # -- catch-up and repair (every master) ---------------------------------------------------------------
    async def repair(self) -> dict[str, int]:
        """Fetch the blobs this master misses or holds corrupted; remove those of jobs that are gone."""
        names = set(await self._z(self.jobs.job_names))
        entries = await self._z(lambda: list(self.replicas.store.entries()))
        now = self.clock()
        dropped = fetched = missing = 0
        for e in entries:
            if e.job not in names and now - e.mtime > ORPHAN_GRACE and e.job not in self._submitting:
                dropped += await self._z(self.replicas.store.delete, e.job) > 0
        self._complete &= names
        for job_id in sorted(names - self._complete):
            doc = await self._z(self.jobs.get_job, job_id)
            if doc is None:
                continue
            if is_tombstone(doc):
                await self._z(self.replicas.store.delete, job_id)
                self._complete.add(job_id)
                continue
            complete = True
            for kind, want in (doc.get("blobs") or {}).items():
                if await self._z(self.replicas.local, job_id, kind, want) is not None:
                    continue
                if await self.replicas.fetch(job_id, kind, want) is not None:
                    fetched += 1
                else:
                    missing += 1
                    complete = False
            if complete and doc.get("state") in ("done", "failed"):
                self._complete.add(job_id)
        return {"fetched": fetched, "missing": missing, "dropped": dropped}
