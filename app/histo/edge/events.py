"""The SecOps and job event stream: thread-safe publish (kazoo callbacks run in threads),
asyncio subscribers with bounded queues, and the recent history for new subscribers."""
from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import AsyncIterator

log = logging.getLogger("histo.events")

SEVERITY = {"info", "warning", "critical"}


class EventBus:
    def __init__(self, history: int = 200, queue_size: int = 500) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._subs: set[asyncio.Queue] = set()
        self.history: deque[dict] = deque(maxlen=history)
        self._queue_size = queue_size

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def publish(self, kind: str, **fields) -> None:
        event = {"ts": time.time(), "kind": kind, "severity": fields.pop("severity", "info"), **fields}
        if event["severity"] != "info" and kind != "job_progress":
            log.warning("secops %s %s", kind, {k: v for k, v in event.items() if k not in ("ts", "kind")})
        loop = self._loop
        if loop is None or loop.is_closed():
            self.history.append(event)
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._deliver(event)
        else:
            loop.call_soon_threadsafe(self._deliver, event)

    def _deliver(self, event: dict) -> None:
        self.history.append(event)
        for q in list(self._subs):
            if q.full():  # a slow subscriber loses its oldest events, never blocks the others
                q.get_nowait()
            q.put_nowait(event)

    async def subscribe(self, replay: bool = True) -> AsyncIterator[dict]:
        q: asyncio.Queue = asyncio.Queue(self._queue_size)
        if replay:  # the most recent events, as many as the queue holds
            for event in list(self.history)[-min(50, self._queue_size):]:
                q.put_nowait(event)
        self._subs.add(q)
        try:
            while True:
                yield await q.get()
        finally:
            self._subs.discard(q)
