"""The SecOps and job event stream of the dashboard: thread-safe publish (kazoo callbacks run in
their own threads), asyncio subscribers with bounded queues (a slow one loses its oldest events,
never slows the others), and the recent history replayed to new subscribers."""
from __future__ import annotations

import asyncio
import itertools
import json
import logging
import logging.handlers
import os
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, AsyncGenerator, Callable

from .audit import redact

log = logging.getLogger("histo.events")

Event = dict[str, Any]  # JSON-safe and redacted (see _plain)

SEVERITIES = ("info", "warning", "critical")
SECOPS = "secops"
# Default severity per kind; a publisher may always say otherwise with severity=...
DEFAULT_SEVERITY = {
    "auth_failure": "warning", "auth_throttled": "critical", "forbidden": "warning",
    "mtls_rejected": "warning", "tls_handshake_refused": "warning", "zk_auth_failure": "critical",
    "rate_limited": "warning", "result_refused": "warning", "vault_unavailable": "warning", "worker_left": "warning",
    "job_failed": "warning", "result_disputed": "critical",
}
# Kinds that concern one job: their audience is the job's owner (given as audience=<sub>).
JOB_KINDS = ("job_progress", "job_failed", "job_done")


def _plain(value: Any, depth: int = 0) -> Any:
    """JSON-safe and secret-free: an event goes to browsers and logs."""
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str):
        return redact(value)[:2000]
    if depth < 3 and isinstance(value, dict):
        return {str(k): _plain(v, depth + 1) for k, v in list(value.items())[:50]}
    if depth < 3 and isinstance(value, (list, tuple, set, frozenset)):
        return [_plain(v, depth + 1) for v in list(value)[:50]]
    return redact(str(value))[:2000]


plain = _plain  # the same rules for events collected from elsewhere (secops/collector.py)


class EventFile:
    """This service's own security events (never info, never relayed ones) as JSON lines in one file,
    which the machine's log shipper sends to the SecOps collector (roles/logship, tag histo-events).
    Bounded: rotated at `max_bytes`, `backups` old files kept; created 0640 (rsyslog reads as root)."""

    def __init__(self, path: str | Path, max_bytes: int = 8 << 20, backups: int = 2) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
            os.close(fd)
        self._handler = logging.handlers.RotatingFileHandler(self.path, maxBytes=max_bytes, backupCount=backups,
                                                             encoding="utf-8")
        self._handler.setFormatter(logging.Formatter("%(message)s"))

    def write(self, event: Event) -> None:
        line = json.dumps({k: v for k, v in event.items() if k != "audience"}, separators=(",", ":"),
                          sort_keys=True)
        try:
            self._handler.emit(logging.makeLogRecord({"msg": line, "levelno": logging.WARNING}))
        except Exception:  # noqa: BLE001 - a full disk must not take the request path down with it
            log.debug("security event not written to %s", self.path)

    def close(self) -> None:
        self._handler.close()


def shipped(event: Event) -> bool:
    """What goes to the event file: this service's own refusals and warnings. Not a relayed worker
    event (the worker ships its own), not one the collector pushed (master/secopsfeed.py: shipping it
    back would feed the record its own entries, again and again), not info (rotations and the like
    stay on the dashboard)."""
    return (event.get("severity") != "info" and event.get("audience") == SECOPS and "relayed_from" not in event
            and "record_seq" not in event and event.get("source") != "collector")


class EventBus:
    def __init__(self, history: int = 200, queue_size: int = 500,
                 sink: Callable[[Event], None] | None = None) -> None:
        self._sink = sink  # EventFile.write: what the machine's shipper sends to the collector
        self._loop: asyncio.AbstractEventLoop | None = None
        self._subs: set[asyncio.Queue[Event]] = set()
        self.history: deque[Event] = deque(maxlen=history)
        self._queue_size = queue_size
        self._seq = itertools.count(1)
        self._seq_lock = threading.Lock()
        self.dropped = 0  # events lost by slow subscribers, for the operator

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """The loop that owns the subscribers; publish() from any other thread hops onto it."""
        self._loop = loop

    @property
    def subscribers(self) -> int:
        return len(self._subs)

    def make_event(self, kind: str, /, **fields: Any) -> Event:
        severity = fields.pop("severity", None) or DEFAULT_SEVERITY.get(kind, "info")
        if severity not in SEVERITIES:
            severity = "warning"
        audience = fields.pop("audience", None) or SECOPS
        with self._seq_lock:
            seq = next(self._seq)
        event = {"ts": time.time(), "seq": seq, "kind": str(kind), "severity": severity, "audience": str(audience)}
        for k, v in fields.items():
            if k not in event:  # the bus's own fields are never overwritten by a publisher
                event[k] = _plain(v)
        return event

    def publish(self, kind: str, /, **fields: Any) -> Event:
        event = self.make_event(kind, **fields)
        if event["severity"] != "info" and event["audience"] == SECOPS:
            log.warning("secops %s %s", kind, {k: v for k, v in event.items() if k not in ("ts", "kind", "seq")})
        if self._sink is not None and shipped(event):
            self._sink(event)
        loop = self._loop
        if loop is None or loop.is_closed():
            self.history.append(event)  # deque.append is atomic; no subscriber can exist without a loop
            return event
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._deliver(event)
        else:
            try:
                loop.call_soon_threadsafe(self._deliver, event)
            except RuntimeError:  # the loop closed in between: keep it in the history at least
                self.history.append(event)
        return event

    def _deliver(self, event: Event) -> None:
        self.history.append(event)
        for q in list(self._subs):
            if q.full():  # a slow subscriber loses its oldest event, never blocks the others
                q.get_nowait()
                self.dropped += 1
            q.put_nowait(event)

    def recent(self, n: int | None = None) -> list[Event]:
        items = list(self.history)
        return items if n is None else items[-n:] if n > 0 else []

    async def subscribe(self, replay: bool = True) -> AsyncGenerator[Event, None]:
        """Yields events as they come, starting with the recent history (as much as the queue holds)."""
        q: asyncio.Queue[Event] = asyncio.Queue(self._queue_size)
        if replay:
            for event in self.recent(self._queue_size):
                q.put_nowait(event)
        self._subs.add(q)
        try:
            while True:
                yield await q.get()
        finally:
            self._subs.discard(q)
