"""The SecOps record's refusals on the masters: what the collector's relay (secops/relay.py) pushes to
POST /internal/v1/secops/events, checked, kept in a bounded buffer for GET /api/v1/secops/events and
published on the dashboard's EventBus.

The pusher is authenticated by its certificate (the `secops` identity only: internal.py's peer check),
but it is still a machine that may be compromised, so what it sends is judged like any input: a fixed
schema per event (edge/openapi.py SECOPS_EVENT: no free-form field), at most SECOPS_MAX_BATCH events and
MAX_BODY bytes per request, a rate per collector, and every text redacted again. Receipt is idempotent
by record sequence: an event at or below the highest sequence already taken from that collector is a
duplicate (the relay is at least once) and is acknowledged, not published again."""
from __future__ import annotations

import json
import math
import re
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

from ..edge.events import SEVERITIES, plain
from ..edge.openapi import SECOPS_EVENT, SECOPS_MAX_BATCH, SECOPS_MAX_BODY
from ..edge.ratelimit import RateLimiter
from ..edge.validation import problem

MAX_BODY = SECOPS_MAX_BODY  # bytes of one push (the relay cuts its batches to fit)
RATE = 100.0  # events per second per collector, sustained ...
BURST = 1000  # ... and at once (a backlog after a master restart, a burst of drops)
CAPACITY = 2000  # events a master keeps for the API (the dashboard's window of minutes, not an archive)
MAX_PAGE = 500
DEFAULT_PAGE = 100
INCIDENTS_KEPT = 200  # incidents remembered (their latest decision)
INCIDENT_WINDOW = 3600.0  # seconds an alerted incident stays on the panel after its last decision
RECORDS_KEPT = 4  # record ids remembered per collector (a collector whose record was started anew)
RECORD = re.compile(r"[0-9a-f]{64}")
USAGE = (f"JSON {{\"record\": <hash of the record's first entry>, \"events\": [SecopsEvent, ...]}} with 1 to "
         f"{SECOPS_MAX_BATCH} events, at most {MAX_BODY} bytes")


class FeedRefused(Exception):
    """A push that is not taken; `status` (4xx), `code` and `message` make its JSON error."""

    def __init__(self, status: int, code: str, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.retry_after = status, code, message, retry_after


@dataclass
class Pushed:
    accepted: int
    duplicates: int
    high: int  # the highest record sequence taken from this collector: the relay's acknowledgement


def parse_batch(raw: bytes) -> tuple[str, list[dict[str, Any]]]:
    """The record id and events of a push body, each event checked against SECOPS_EVENT; else
    FeedRefused (400/413). The record id (its first entry's hash) tells a record started anew from the
    one sequences were counted in, so a new record's entry 1 is not taken for a duplicate."""
    if len(raw) > MAX_BODY:
        raise FeedRefused(413, "too_large", f"a push is at most {MAX_BODY} bytes")
    try:
        value = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError):
        raise FeedRefused(400, "bad_request", f"the body is not JSON; send {USAGE}") from None
    if (not isinstance(value, dict) or set(value) != {"record", "events"} or not isinstance(value["events"], list)
            or not isinstance(value["record"], str) or not RECORD.fullmatch(value["record"])):
        raise FeedRefused(400, "bad_request", f"send {USAGE}")
    events = value["events"]
    if not 1 <= len(events) <= SECOPS_MAX_BATCH:
        raise FeedRefused(400, "bad_request", f"a push carries 1 to {SECOPS_MAX_BATCH} events, not {len(events)}")
    for i, ev in enumerate(events):
        why = problem(SECOPS_EVENT, ev, f"events[{i}]")
        if why:
            raise FeedRefused(400, "bad_request", why)
    seqs = [ev["record_seq"] for ev in events]
    if seqs != sorted(set(seqs)):  # the relay sends the record in order: anything else is not the record
        raise FeedRefused(400, "bad_request", "events must be in increasing record_seq order")
    return value["record"], [dict(ev, record_seq=int(ev["record_seq"])) for ev in events]


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


class SecopsFeed:
    """The bounded buffer and the idempotent receipt; `publish(kind, **fields)` puts an event on the
    dashboard's stream (the master's emit)."""

    def __init__(self, publish: Callable[..., Any], capacity: int = CAPACITY, rate: float = RATE,
                 burst: int = BURST) -> None:
        self._publish = publish
        self.events: deque[dict[str, Any]] = deque(maxlen=capacity)
        self.high: dict[tuple[str, str], int] = {}  # (collector, record) -> highest record_seq taken
        self._limit = RateLimiter(rate, burst)  # per collector (a batch of n costs n; n <= the burst)
        self._rate = rate
        self._lock = threading.Lock()
        self.duplicates = 0
        # incident id -> its latest decision as pushed (the dashboard's incidents panel: open and alerted
        # ones; contained ones come from Vault's quarantine records, the authority on who is held)
        self.incidents: dict[str, dict[str, Any]] = {}

    def push(self, collector: str, record: str, events: list[dict[str, Any]]) -> Pushed:
        """Take a parsed batch from `collector` (the host its certificate names), or FeedRefused(429)."""
        with self._lock:
            allowed, wait = self._limit.check(collector, len(events))
            if not allowed:  # nothing taken: the relay sends the same batch again later
                raise FeedRefused(429, "rate_limited", f"at most {self._rate:g} SecOps events a second from "
                                  f"{collector}", retry_after=max(1, math.ceil(wait)))
            key = (collector, record)
            if key not in self.high:
                mine = [k for k in self.high if k[0] == collector]
                for old in mine[:max(0, len(mine) + 1 - RECORDS_KEPT)]:
                    del self.high[old]
            high = self.high.get(key, 0)
            fresh = [ev for ev in events if ev["record_seq"] > high]
            now = time.time()
            kept = []
            for ev in fresh:
                # the schema bounds every field; redaction again, as for every event that reaches a browser
                item = {k: plain(v) for k, v in ev.items()}
                item.update(collector=collector, record=record[:16], received=round(now, 3))
                self.events.append(item)
                kept.append(item)
                if item.get("incident") and str(item["kind"]).startswith("incident_"):
                    self.incidents.pop(item["incident"], None)  # newest last: the bound drops the oldest
                    self.incidents[item["incident"]] = item
                    while len(self.incidents) > INCIDENTS_KEPT:
                        del self.incidents[next(iter(self.incidents))]
            self.high[key] = fresh[-1]["record_seq"] if fresh else high
            self.duplicates += len(events) - len(fresh)
            result = Pushed(len(fresh), len(events) - len(fresh), self.high[key])
        for item in kept:  # outside the lock: publish may log
            fields = {k: v for k, v in item.items() if k not in ("kind", "ts", "received")}
            self._publish(item["kind"], source="collector", record_ts=item["ts"], **fields)
        return result

    def open_incidents(self, within: float = INCIDENT_WINDOW, now: float | None = None) -> list[dict[str, Any]]:
        """Incidents not contained whose latest decision came within `within` seconds: opened (no
        decision yet) or alerted (a dry run, a guard rail, a rule that only alerts)."""
        now = time.time() if now is None else now
        with self._lock:
            items = list(self.incidents.values())
        out = []
        for ev in items:
            if ev["kind"] == "incident_contained" or now - float(ev.get("received") or 0) > within:
                continue
            out.append({"host": ev["host"], "incident": ev["incident"], "rule": ev.get("rule"),
                        "state": "alerted" if ev["kind"] == "incident_alerted" else "open",
                        "since": ev.get("ts"), "severity": ev.get("severity"), "response": ev.get("what"),
                        "decision": ev.get("why"), "spiffe": ev.get("spiffe"), "address": ev.get("address")})
        return out

    def query(self, since: int = 0, layer: str | None = None, host: str | None = None,
              severity: str | None = None, limit: int = DEFAULT_PAGE) -> dict[str, Any]:
        """Events of a record_seq above `since`, in the order they came (the record's), `limit` at most;
        `next_since` continues."""
        floor = SEVERITIES.index(severity) if severity in SEVERITIES else 0
        with self._lock:
            items = list(self.events)
        head = max((ev["record_seq"] for ev in items), default=0)
        match = [ev for ev in items if ev["record_seq"] > since and (layer is None or ev["layer"] == layer)
                 and (host is None or ev["host"] == host)
                 and SEVERITIES.index(ev.get("severity", "info")) >= floor]
        page = match[:limit]
        return {"events": page, "next_since": page[-1]["record_seq"] if page else since, "head": head,
                "more": len(match) > len(page)}
