"""Admission by cost on the leader: what an upload costs is its pixels, not its bytes (a 200 KB PNG
can declare 64 Mpx), so work is admitted against

- a pixel budget per principal: `pixels` decoded pixels per `window` seconds (a token bucket in
  pixels, charged from the image header before any pixel is decoded), 429 when over it;
- a bound on concurrent decodes (each holds a full image in memory): `decodes` slots in all and at
  most `decodes - 1` (at least 1) for one principal, so one principal never holds every slot; a
  request waits up to `wait` seconds for a slot, then 503;
- a bound on jobs running at once, 503 when reached, and half of it for one principal (429);
- at most `reads` upload bodies of one principal being read (held in memory) at once on a master (429).

Every refusal carries Retry-After. The leader is the one place where work is admitted, so the budget
is one per principal across all masters (a standby forwards, it does not count)."""
from __future__ import annotations

import asyncio
import math
import threading
import time
from collections import OrderedDict
from contextlib import asynccontextmanager, contextmanager
from typing import AsyncIterator, Callable, Iterator

MAX_KEYS = 10_000


class Refused(Exception):
    """Not admitted: `status` (429 principal over budget, 503 cluster busy), a code, a message and
    the seconds after which a retry may succeed."""

    def __init__(self, status: int, code: str, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.retry_after = max(1, math.ceil(retry_after))


class PixelBudget:
    """A token bucket of pixels per principal: `pixels` at once, refilled over `window` seconds."""

    def __init__(self, pixels: int, window: float, clock: Callable[[], float] = time.monotonic,
                 max_keys: int = MAX_KEYS) -> None:
        if pixels < 1 or window <= 0:
            raise ValueError("pixel budget: pixels >= 1 and window > 0")
        self.capacity, self.rate, self.clock, self.max_keys = float(pixels), pixels / window, clock, max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def _level(self, key: str, now: float) -> float:
        level, last = self._buckets.pop(key, (self.capacity, now))
        return min(self.capacity, level + max(0.0, now - last) * self.rate)

    def charge(self, key: str, pixels: int) -> float:
        """Take `pixels` from `key`'s budget: 0.0 if taken, else the seconds until they would be.
        A single image larger than the whole budget is never admitted (math.inf)."""
        if pixels > self.capacity:
            return math.inf
        now = self.clock()
        with self._lock:
            level = self._level(key, now)
            wait = 0.0
            if level >= pixels:
                level -= pixels
            else:
                wait = (pixels - level) / self.rate
            self._buckets[key] = (level, now)
            while len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        return wait

    def refund(self, key: str, pixels: int) -> None:
        """Give back a charge whose work never happened (e.g. refused as cluster busy)."""
        now = self.clock()
        with self._lock:
            self._buckets[key] = (min(self.capacity, self._level(key, now) + pixels), now)


class Admission:
    def __init__(self, pixels: int, window: float, decodes: int, jobs: int, wait: float = 5.0,
                 reads: int = 4, clock: Callable[[], float] = time.monotonic) -> None:
        if decodes < 1 or jobs < 1:
            raise ValueError("admission: decodes >= 1 and jobs >= 1")
        self.budget = PixelBudget(pixels, window, clock)
        self.decodes, self.jobs, self.wait = decodes, jobs, wait
        self.per_principal = max(1, decodes - 1)
        self._slots: asyncio.Semaphore | None = None
        self._held: dict[str, int] = {}
        self.reads = max(1, reads)
        self._reading: dict[str, int] = {}
        self.decoding = 0

    def _sem(self) -> asyncio.Semaphore:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.decodes)
        return self._slots

    def check_jobs(self, running: int, mine: int = 0) -> None:
        """`running` jobs in all, `mine` of them the caller's: one principal may hold half the slots."""
        if running >= self.jobs:
            raise Refused(503, "busy", "the cluster is running as many jobs as it takes; try again shortly", 2)
        if mine >= max(1, self.jobs // 2):
            raise Refused(429, "too_many_jobs", "too many of your jobs are running; wait for one to finish", 2)

    @contextmanager
    def reading(self, principal: str) -> Iterator[None]:
        """At most `reads` upload bodies of one principal read (held in memory) at once on this master."""
        if self._reading.get(principal, 0) >= self.reads:
            raise Refused(429, "too_many_uploads", "too many of your uploads are in progress; wait for one to "
                          "finish", 1)
        self._reading[principal] = self._reading.get(principal, 0) + 1
        try:
            yield
        finally:
            n = self._reading.get(principal, 1) - 1
            if n > 0:
                self._reading[principal] = n
            else:
                self._reading.pop(principal, None)

    def charge(self, principal: str, pixels: int) -> None:
        wait = self.budget.charge(principal, pixels)
        if wait == math.inf:
            raise Refused(429, "over_budget", f"{pixels} pixels is more than the {int(self.budget.capacity)} "
                          "pixels a principal may have decoded per window", 3600)
        if wait > 0:
            raise Refused(429, "over_budget", "pixel budget exhausted: too many pixels uploaded lately; "
                          "slow down", wait)

    @asynccontextmanager
    async def decode_slot(self, principal: str) -> AsyncIterator[None]:
        """Hold one decode slot; Refused (503) if none frees up within `wait` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.wait
        while self._held.get(principal, 0) >= self.per_principal:  # this principal's share is in use
            if loop.time() >= deadline:
                raise Refused(503, "busy", "this principal's uploads are being decoded; try again shortly", 1)
            await asyncio.sleep(0.05)
        self._held[principal] = self._held.get(principal, 0) + 1
        try:
            try:
                await asyncio.wait_for(self._sem().acquire(), max(0.0, deadline - loop.time()))
            except asyncio.TimeoutError:
                raise Refused(503, "busy", "every decoder is busy; try again shortly", 1) from None
            self.decoding += 1
            try:
                yield
            finally:
                self.decoding -= 1
                self._sem().release()
        finally:
            n = self._held.get(principal, 1) - 1
            if n > 0:
                self._held[principal] = n
            else:
                self._held.pop(principal, None)
