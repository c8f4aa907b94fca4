"""The leader's scheduler: it places a job's pixel work on a worker and binds what comes back.

The master never decodes nor encodes. A job is one task on one worker (compute/work.py): the master
sends the upload's bytes; the worker decodes, counts the histogram, derives the table, applies it,
encodes and draws the plot, and posts the framed result (image, histograms, plot). The master accepts
it only if it is the job's image (format, size, bands) and its after-histogram is exactly what the table
the master derives from its before-histogram makes of it (equalize.equalized_histogram): the reduce is
checked on the master without a pixel. Why one worker per job in one exchange and not row strips over
several, or a histogram and a table in two: docs/ARCHITECTURE.md.

A result's pixels are what no header or histogram shows: a sample of jobs (`verify_fraction`, drawn
unpredictably, and the task looks like any other) is computed again by another worker, and the two
framed results must be the same bytes (the work is deterministic: compute/work.py). When they differ a
third worker decides: the one outvoted is reported (`on_refused`: the forged-task-result rule) and the
majority's result is the job's; with no third worker, or no majority, nothing is delivered and the job
fails as disputed (`on_disputed`: an alert naming each worker).

Each task attempt has a random id and an assigned worker; only that worker may report its result,
once. A worker that vanishes from ZooKeeper membership, refuses, or times out has its task re-assigned
to another worker with a new attempt id; a worker whose memory budget is full (503 busy) is passed
over without counting an attempt."""
from __future__ import annotations

import asyncio
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from ..compute import equalize, frame, imageio, tiles
from ..compute.work import result_bound
from ..protocol import TaskHeader
from ..rpc import InternalClient, PeerRefused
from ..zk.membership import Member

log = logging.getLogger("histo.scheduler")

MAX_ATTEMPTS = 4
TIMEOUT_PIXELS = 16_000_000  # a task may take task_timeout per this many pixels (a 4096² job: one)
BUSY_BACKOFF = 0.2  # seconds before asking again when every worker's budget is full
FAILED_HEADER = "X-Histo-Failed"  # a worker reports that the image itself cannot be processed


class JobFailed(Exception):
    """The job cannot complete; the message is the reason shown to the user."""


class WorkerLost(Exception):
    pass


class WorkerBusy(Exception):
    pass


class NoOtherWorker(Exception):
    """Every worker but those a verification must avoid is gone or failed."""


@dataclass(frozen=True)
class Spec:
    """What the master knows of a job's image without decoding it (the job's znode, from the header)."""
    mode: str
    fmt: str
    width: int
    height: int
    work_mode: str

    @classmethod
    def of(cls, doc: dict[str, Any]) -> "Spec":
        return cls(mode=str(doc["mode"]), fmt=str(doc["format"]), width=int(doc["width"]),
                   height=int(doc["height"]), work_mode=str(doc.get("work_mode") or "L"))

    @property
    def bands(self) -> int:
        return tiles.bands_of(self.work_mode)


@dataclass
class Pending:
    job: str
    task: int
    phase: str
    attempt: str
    worker: str
    image_mode: str
    width: int
    rows: int
    future: asyncio.Future[Any]
    bands: int = 1
    fmt: str = ""
    mode: str = "luma"  # the equalization mode: which channel names a result may carry


@dataclass
class Outcome:
    result: equalize.Result
    timings: dict[str, float]
    tiles: int
    workers: list[str] = field(default_factory=list)  # the workers whose results were accepted
    framed: bytes | None = None  # the result as the worker framed it (image, histograms, plot)


@dataclass
class RefusedResult:
    reason: str


def result_size_bound(p: Pending) -> int:
    """The largest body a result of `p` can have: the framed result of an image of its size."""
    return result_bound(p.width, p.rows)


class Scheduler:
    def __init__(self, client: InternalClient, reply_to: str, workers: Callable[[], dict[str, Member]],
                 on_task_state: Callable[[str, int, dict], None],
                 task_timeout: float, verify_fraction: float = 0.0,
                 on_refused: Callable[[str, str, str], None] | None = None,
                 on_disputed: Callable[[str, list[str], str], None] | None = None) -> None:
        self.client = client
        self.verify_fraction = min(1.0, max(0.0, verify_fraction))
        self.on_refused = on_refused or (lambda job, worker, reason: None)  # a worker outvoted
        self.on_disputed = on_disputed or (lambda job, workers, reason: None)  # no majority
        self.reply_to = reply_to
        self.workers = workers
        self.on_task_state = on_task_state
        self.task_timeout = task_timeout
        self.pending: dict[tuple[str, int, str], Pending] = {}
        self.done: set[tuple[str, int, str, str]] = set()
        # attempts of jobs cancelled (deleted, leadership lost) while a worker had them -> that worker
        self.abandoned: dict[tuple[str, int, str, str], str] = {}
        self._rr = 0

    # -- the job ---------------------------------------------------------------------------
    async def run(self, job_id: str, upload: bytes, spec: Spec, timings: dict[str, float]) -> Outcome:
        """Run one stored upload through a worker; `timings` already holds receive."""
        t = time.perf_counter()
        computed_by: set[str] = set()
        result, framed = await self._drive(job_id, 0, "equalize", spec, upload, computed_by)
        if self._sampled():
            (result, framed), computed_by = await self._verify(job_id, spec, upload, (result, framed),
                                                                next(iter(computed_by)))
        timings["compute"] = time.perf_counter() - t  # decode, count, table, encode and plot, on the worker
        return Outcome(result=result, timings=timings, tiles=1, workers=sorted(computed_by), framed=framed)

    def _sampled(self) -> bool:
        # secrets, not random: which jobs are checked must not be guessable by a worker
        return self.verify_fraction > 0 and secrets.randbelow(1_000_000) < self.verify_fraction * 1_000_000

    async def _verify(self, job: str, spec: Spec, upload: bytes, first: tuple[Any, bytes],
                      by: str) -> tuple[tuple[Any, bytes], set[str]]:
        """The job computed again on another worker; its result, and the workers whose results it is."""
        second, other = await self._again(job, spec, upload, {by})
        if second is None:
            log.warning("job %s: no other worker to verify %s's result; delivered unverified", job, by)
            return first, {by}
        if second[1] == first[1]:
            return first, {by, other}
        third, tiebreak = await self._again(job, spec, upload, {by, other})
        for winner, loser, agreed in ((first, other, by), (second, by, other)):
            if third is not None and third[1] == winner[1]:
                reason = (f"outvoted: its result for job {job} differs from the identical results of "
                          f"{agreed} and {tiebreak}")
                log.warning("job %s: %s %s", job, loser, reason)
                self.on_refused(job, loser, reason)
                return winner, {agreed, tiebreak}
        disputed = sorted(w for w in (by, other, tiebreak) if w)
        reason = (f"workers {', '.join(disputed)} computed different results for job {job}"
                  + ("" if tiebreak else " and no third worker could decide"))
        log.warning("job %s: %s", job, reason)
        self.on_disputed(job, disputed, reason)
        raise JobFailed("workers computed different results for this image, so none was delivered; "
                        "please resubmit")

    async def _again(self, job: str, spec: Spec, upload: bytes,
                     exclude: set[str]) -> tuple[tuple[Any, bytes] | None, str]:
        """The same task on a worker not in `exclude`: (its result, that worker), or (None, "") when no
        such worker can compute it now (a verification then decides nothing)."""
        computed_by: set[str] = set()
        try:
            result = await self._drive(job, 0, "equalize", spec, upload, computed_by, exclude=frozenset(exclude))
        except (NoOtherWorker, JobFailed) as exc:
            log.info("job %s: a verification found no worker beside %s: %s", job, ", ".join(sorted(exclude)), exc)
            return None, ""
        return result, next(iter(computed_by))

    def _pick(self, avoid: set[str], exclude: frozenset[str] = frozenset()) -> tuple[str, Member] | None:
        alive = {n: m for n, m in self.workers().items() if n not in exclude}
        if not alive:
            if exclude:
                raise NoOtherWorker("no worker beside those verified")
            raise JobFailed("no workers available")
        names = sorted(n for n in alive if n not in avoid)
        if not names:
            return None
        self._rr += 1
        name = names[self._rr % len(names)]
        return name, alive[name]

    async def _drive(self, job: str, n: int, phase: str, spec: Spec, upload: bytes, computed_by: set[str],
                     exclude: frozenset[str] = frozenset()) -> Any:
        avoid: set[str] = set()  # failed this task: not asked again
        busy: set[str] = set()  # budget full: asked again after a pause
        last_error = ""
        attempts = 0
        while attempts < MAX_ATTEMPTS:
            picked = self._pick(avoid | busy, exclude)
            if picked is None:
                if not busy:
                    picked = self._pick(set(), exclude)  # everyone failed once: try them again
                else:
                    busy.clear()
                    await asyncio.sleep(BUSY_BACKOFF)
                    continue
            if picked is None:
                raise NoOtherWorker("no worker beside those verified") if exclude else JobFailed("no workers available")
            worker, info = picked
            attempt = secrets.token_urlsafe(12)
            hdr = TaskHeader(job=job, task=n, attempt=attempt, phase=phase, image_mode=spec.work_mode,
                             width=spec.width, rows=spec.height, reply_to=self.reply_to, mode=spec.mode)
            fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            key = (job, n, phase)
            self.pending[key] = Pending(job, n, phase, attempt, worker, spec.work_mode, spec.width, spec.height, fut,
                                        spec.bands, spec.fmt, spec.mode)
            # the last attempt assigned (the job's own document says when it is done: no second write)
            self.on_task_state(job, n, {"phase": phase, "attempt": attempt, "worker": worker, "state": "assigned"})
            try:
                status, resp, *_ = await self.client.request(
                    "POST", info.endpoint + "/internal/v1/tasks", ("worker",),
                    headers=hdr.to_headers(), data=upload, expect_host=worker)
                if status == 503:
                    raise WorkerBusy(f"{worker}: {resp[:120]!r}")
                if status != 202:
                    raise WorkerLost(f"{worker} answered {status}: {resp[:120]!r}")
                # decode, encode and plot in one task: its time grows with the pixels
                timeout = self.task_timeout * max(1.0, spec.width * spec.height / TIMEOUT_PIXELS)
                result = await asyncio.wait_for(fut, timeout)
                computed_by.add(worker)
                return result
            except asyncio.CancelledError:
                self._abandon(job, n, phase, attempt, worker)
                raise
            except (JobFailed, NoOtherWorker):
                raise
            except WorkerBusy as exc:
                busy.add(worker)
                self.on_task_state(job, n, {"phase": phase, "attempt": attempt, "worker": worker,
                                            "state": "busy", "error": str(exc)[:200]})
            except (WorkerLost, PeerRefused, asyncio.TimeoutError, OSError, Exception) as exc:
                attempts += 1
                # its worker may still report it (slow, back in membership): dropped quietly then, an
                # honest worker's late result is no refusal
                self._abandon(job, n, phase, attempt, worker)
                last_error = f"{worker}: {type(exc).__name__}: {exc}"
                log.warning("job %s task %d %s attempt on %s failed: %s", job, n, phase, worker, last_error)
                avoid.add(worker)
                self.on_task_state(job, n, {"phase": phase, "attempt": attempt, "worker": worker,
                                            "state": "retrying", "error": last_error[:200]})
            finally:
                p = self.pending.get(key)
                if p is not None and p.attempt == attempt:
                    del self.pending[key]
        # The user is told what failed, not which worker or which exception (that is in the log).
        log.warning("job %s task %d %s gave up: %s", job, n, phase, last_error)
        raise JobFailed(f"task {n} ({phase}) failed after {MAX_ATTEMPTS} attempts; please resubmit")

    def _abandon(self, job: str, n: int, phase: str, attempt: str, worker: str) -> None:
        if len(self.abandoned) > 10_000:
            self.abandoned.clear()
        self.abandoned[(job, n, phase, attempt)] = worker

    # -- results reported by workers --------------------------------------------------------
    def _attempt(self, hdr: TaskHeader, worker: str) -> Pending | RefusedResult | None:
        """The pending attempt `hdr` reports for `worker`, a refusal, or None for a late result of a
        cancelled job from the worker it went to (dropped quietly). The one check both steps share."""
        done_key = (hdr.job, hdr.task, hdr.phase, hdr.attempt)
        if done_key in self.done:
            return RefusedResult("replayed result: this task attempt already reported")
        if self.abandoned.get(done_key) == worker:
            return None
        p = self.pending.get((hdr.job, hdr.task, hdr.phase))
        if p is None or p.attempt != hdr.attempt:
            return RefusedResult("no such task attempt pending (stale or forged)")
        if p.worker != worker:
            return RefusedResult(f"task attempt assigned to {p.worker}, reported by {worker}")
        if p.future.done():
            return RefusedResult("task attempt already completed")
        return p

    def admit_result(self, hdr: TaskHeader, worker: str) -> RefusedResult | int:
        """Judged from the headers alone, before any byte of the body is read: the refusal, or the
        most bytes this attempt's result can be (the framed result of an image of its size)."""
        p = self._attempt(hdr, worker)
        if p is None:
            return 0  # a cancelled job's late result: dropped quietly, unread (accept_result records it)
        if isinstance(p, RefusedResult):
            return p
        return result_size_bound(p)

    def accept_result(self, hdr: TaskHeader, worker: str, payload: bytes,
                      failed: str | None = None) -> RefusedResult | None:
        """Bind a reported result (or `failed`: the worker's report that the image cannot be processed,
        `payload` its reason) to its pending task attempt; anything else is refused."""
        done_key = (hdr.job, hdr.task, hdr.phase, hdr.attempt)
        p = self._attempt(hdr, worker)
        if p is None:  # its job was cancelled: the late result is dropped quietly
            del self.abandoned[done_key]
            self.done.add(done_key)
            return None
        if isinstance(p, RefusedResult):
            return p
        if failed is not None:
            reason = "".join(c for c in payload[:300].decode("utf-8", "replace") if c.isprintable())
            value: Any = JobFailed(f"the image cannot be processed: {reason or failed}")
        else:
            try:
                value = self._parse(p, payload)
            except ValueError as exc:
                return RefusedResult(f"malformed result: {exc}")
        self.done.add(done_key)
        if len(self.done) > 100_000:
            self.done.clear()
        if isinstance(value, JobFailed):
            p.future.set_exception(value)
        else:
            p.future.set_result(value)
        return None

    @staticmethod
    def _parse(p: Pending, payload: bytes) -> Any:
        try:
            result, _plot = frame.unpack_result(payload)
        except frame.FrameError as exc:
            raise ValueError(str(exc)) from None
        channels = result.channels
        # the mode's channel names (equalize owns them), or "L" alone for a grayscale input (Prepared.channels)
        allowed = [names for names in (equalize.channel_names(p.mode), ["L"]) if len(names) == p.bands]
        if (result.fmt != p.fmt or (result.width, result.height) != (p.width, p.rows) or channels not in allowed
                or set(result.hist_before) != set(channels) or set(result.hist_after) != set(channels)
                or not all(isinstance(h, list) for h in (*result.hist_before.values(), *result.hist_after.values()))):
            raise ValueError("the result does not match the job's image")
        pixels = p.width * p.rows
        before = [v for c in channels for v in result.hist_before[c]]
        after = [v for c in channels for v in result.hist_after[c]]
        if (len(before) != 256 * p.bands or len(after) != 256 * p.bands
                or not all(type(v) is int and 0 <= v <= pixels for v in before)
                or not all(type(v) is int for v in after)
                or any(sum(result.hist_before[c]) != pixels for c in channels)):
            raise ValueError("the result's histogram does not match the image")
        # the reduce, checked here: the table this master derives from the before-histogram must turn it
        # into exactly the after-histogram the worker reports
        if after != equalize.equalized_histogram(before):
            raise ValueError("the result's equalized histogram is not what its table makes of its histogram")
        # the image itself, from its header only (the master decodes nothing): the job's format and size.
        # Its pixels are the worker's word (bound to its attempt, named in the receipt): docs/SECURITY.md
        try:
            if (imageio.sniff_format(result.image) != p.fmt
                    or imageio.header_size(result.image, p.fmt) != (p.width, p.rows)):
                raise ValueError("the result's image is not the job's format and size")
        except imageio.ImageError:
            raise ValueError("the result's image is not an image of the job's format") from None
        return result, payload

    def workers_lost(self, names: set[str]) -> None:
        """Called when workers leave membership: fail their attempts so they are re-assigned now."""
        for p in list(self.pending.values()):
            if p.worker in names and not p.future.done():
                p.future.set_exception(WorkerLost(f"{p.worker} left the cluster"))
