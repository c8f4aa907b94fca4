"""The leader's job runner: split the work image into row strips, send them to workers over
mTLS, collect results reported back to the internal endpoint, merge, and assemble.

Each task attempt has a random id and an assigned worker; only that worker may report its
result, once. A worker that vanishes from ZooKeeper membership, refuses, or times out has its
task re-assigned to another worker with a new attempt id."""
from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Callable

from ..compute import equalize, tiles
from ..protocol import TaskHeader
from ..rpc import InternalClient, PeerRefused
from ..zk.membership import Member

log = logging.getLogger("histo.scheduler")

MAX_ATTEMPTS = 4


class JobFailed(Exception):
    """The job cannot complete; the message is the reason shown to the user."""


class WorkerLost(Exception):
    pass


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
    future: asyncio.Future
    bands: int = 1


@dataclass
class Outcome:
    result: equalize.Result
    timings: dict[str, float]
    tiles: int
    workers: list[str] = field(default_factory=list)  # the workers whose results were accepted


@dataclass
class RefusedResult:
    reason: str


def result_size_bound(p: Pending) -> int:
    """The largest body a result of `p` can have: the histogram as the worker writes it (JSON list of
    256 * bands counts, each at most width * rows, ", "-separated), or the strip's raw pixels."""
    if p.phase == "hist":
        return 2 + 256 * p.bands * (len(str(p.width * p.rows)) + 2)
    return p.width * p.rows * p.bands


class Scheduler:
    def __init__(self, client: InternalClient, reply_to: str, workers: Callable[[], dict[str, Member]],
                 on_task_state: Callable[[str, int, dict], None], on_progress: Callable[[str, float], None],
                 task_timeout: float, tiles_per_worker: int, min_tile_pixels: int = 1) -> None:
        self.client = client
        self.reply_to = reply_to
        self.workers = workers
        self.on_task_state = on_task_state
        self.on_progress = on_progress
        self.task_timeout = task_timeout
        self.tiles_per_worker = tiles_per_worker
        self.min_tile_pixels = max(1, min_tile_pixels)
        self.pending: dict[tuple[str, int, str], Pending] = {}
        self.done: set[tuple[str, int, str, str]] = set()
        # attempts of jobs cancelled (deleted, leadership lost) while a worker had them -> that worker
        self.abandoned: dict[tuple[str, int, str, str], str] = {}
        self._rr = 0

    # -- the job ---------------------------------------------------------------------------
    async def run(self, job_id: str, prepared: equalize.Prepared, timings: dict[str, float]) -> Outcome:
        """Run one decoded, prepared job through the workers; `timings` already holds receive/decode."""
        loop = asyncio.get_running_loop()
        t = time.perf_counter()
        work = prepared.work
        width, height = work.size
        raw = await loop.run_in_executor(None, work.tobytes)
        bands = tiles.bands_of(work.mode)
        alive = self.workers()
        if not alive:
            raise JobFailed("no workers available")
        parts = min(len(alive) * self.tiles_per_worker, (width * height) // self.min_tile_pixels)
        ranges = tiles.row_ranges(height, max(1, parts))
        parts = tiles.split_rows(raw, width, bands, ranges)
        timings["split"] = time.perf_counter() - t

        t = time.perf_counter()
        holders: dict[int, str] = {}
        computed_by: set[str] = set()
        hist_results = await self._phase(job_id, "hist", work.mode, width, ranges, parts, None, holders,
                                         computed_by)
        hist_before = equalize.merge_histograms(hist_results)
        lut = equalize.lut_from_histogram(hist_before)
        timings["histogram"] = time.perf_counter() - t
        self.on_progress(job_id, 0.5)

        t = time.perf_counter()
        out_parts = await self._phase(job_id, "apply", work.mode, width, ranges, parts, bytes(lut), holders,
                                      computed_by)
        timings["apply"] = time.perf_counter() - t

        t = time.perf_counter()
        equalized = await loop.run_in_executor(None, tiles.assemble, out_parts, work.mode, (width, height))
        result = await loop.run_in_executor(None, equalize.finish_result, prepared, equalized, hist_before)
        timings["encode"] = time.perf_counter() - t
        return Outcome(result=result, timings=timings, tiles=len(ranges), workers=sorted(computed_by))

    async def _phase(self, job: str, phase: str, image_mode: str, width: int, ranges, parts,
                     lut: bytes | None, holders: dict[int, str], computed_by: set[str]) -> list:
        coros = [self._drive(job, n, phase, image_mode, width, r1 - r0, parts[n], lut, holders, computed_by)
                 for n, (r0, r1) in enumerate(ranges)]
        return await asyncio.gather(*coros)

    def _pick(self, prefer: str | None, avoid: set[str]) -> tuple[str, Member]:
        alive = self.workers()
        if prefer in alive and prefer not in avoid:
            return prefer, alive[prefer]
        names = sorted(n for n in alive if n not in avoid) or sorted(alive)
        if not names:
            raise JobFailed("no workers available")
        self._rr += 1
        name = names[self._rr % len(names)]
        return name, alive[name]

    async def _drive(self, job: str, n: int, phase: str, image_mode: str, width: int, rows: int,
                     tile: memoryview, lut: bytes | None, holders: dict[int, str], computed_by: set[str]):
        avoid: set[str] = set()
        last_error = ""
        cached = phase == "apply"
        for _ in range(MAX_ATTEMPTS):
            prefer = holders.get(n) if phase == "apply" else None
            worker, info = self._pick(prefer, avoid)
            use_cache = cached and worker == prefer
            attempt = secrets.token_urlsafe(12)
            hdr = TaskHeader(job=job, task=n, attempt=attempt, phase=phase, image_mode=image_mode,
                             width=width, rows=rows, reply_to=self.reply_to, cached=use_cache)
            fut = asyncio.get_running_loop().create_future()
            key = (job, n, phase)
            self.pending[key] = Pending(job, n, phase, attempt, worker, image_mode, width, rows, fut,
                                        tiles.bands_of(image_mode))
            self.on_task_state(job, n, {"phase": phase, "attempt": attempt, "worker": worker, "state": "assigned"})
            body = lut + bytes(tile) if (phase == "apply" and not use_cache) else (lut if use_cache else tile)
            try:
                status, resp, *_ = await self.client.request(
                    "POST", info.endpoint + "/internal/v1/tasks", ("worker",),
                    headers=hdr.to_headers(), data=body, expect_host=worker)
                if status == 409 and use_cache:
                    cached = False  # the worker lost the tile: resend it with the table
                    last_error = "tile not cached"
                    continue
                if status != 202:
                    raise WorkerLost(f"{worker} answered {status}: {resp[:120]!r}")
                result = await asyncio.wait_for(fut, self.task_timeout)
                if phase == "hist":
                    holders[n] = worker
                computed_by.add(worker)
                self.on_task_state(job, n, {"phase": phase, "attempt": attempt, "worker": worker, "state": "done"})
                return result
            except asyncio.CancelledError:
                if len(self.abandoned) > 10_000:
                    self.abandoned.clear()
                self.abandoned[(job, n, phase, attempt)] = worker
                raise
            except (WorkerLost, PeerRefused, asyncio.TimeoutError, OSError, Exception) as exc:
                if isinstance(exc, JobFailed):
                    raise
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
        most bytes this attempt's result can be (a histogram's JSON, or the strip's pixels)."""
        p = self._attempt(hdr, worker)
        if p is None:
            return 0  # a cancelled job's late result: dropped quietly, unread (accept_result records it)
        if isinstance(p, RefusedResult):
            return p
        return result_size_bound(p)

    def accept_result(self, hdr: TaskHeader, worker: str, payload: bytes) -> RefusedResult | None:
        """Bind a reported result to its pending task attempt; anything else is refused."""
        done_key = (hdr.job, hdr.task, hdr.phase, hdr.attempt)
        p = self._attempt(hdr, worker)
        if p is None:  # its job was cancelled: the late result is dropped quietly
            del self.abandoned[done_key]
            self.done.add(done_key)
            return None
        if isinstance(p, RefusedResult):
            return p
        try:
            value = self._parse(p, payload)
        except ValueError as exc:
            return RefusedResult(f"malformed result: {exc}")
        self.done.add(done_key)
        if len(self.done) > 100_000:
            self.done.clear()
        p.future.set_result(value)
        return None

    @staticmethod
    def _parse(p: Pending, payload: bytes):
        if p.phase == "hist":
            hist = json.loads(payload)
            if (not isinstance(hist, list) or len(hist) != 256 * p.bands
                    or not all(isinstance(v, int) and 0 <= v <= p.width * p.rows for v in hist)
                    or sum(hist) != p.width * p.rows * p.bands):
                raise ValueError("histogram does not match the tile")
            return hist
        if len(payload) != p.width * p.rows * p.bands:
            raise ValueError("tile size mismatch")
        return payload

    def workers_lost(self, names: set[str]) -> None:
        """Called when workers leave membership: fail their attempts so they are re-assigned now."""
        for p in list(self.pending.values()):
            if p.worker in names and not p.future.done():
                p.future.set_exception(WorkerLost(f"{p.worker} left the cluster"))
