"""The response to an incident (secops/detect.py), off the collector's ingest path: a rule's `alert` is
recorded; its `quarantine` contains the host (vault/quarantine.py contain) unless a guard rail says
no — then it is an alert that says why. Every decision and every action goes into the tamper-evident
record as an event of its own (`incident_contained`, `incident_alerted`), after the `incident_opened`
the collector wrote when the rule fired.

    responder = Responder(contain=lambda host, inc: contain(vault(), host, inc),
                          guard=lambda host, held: guard(hosts, held, host), record=collector.record)
    responder.start()
    responder.submit(incident)
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any, Callable, Protocol

log = logging.getLogger("histo.secops.respond")


class Incident(Protocol):
    id: str
    rule: str
    host: str
    response: str
    first_seen: float
    detected: float
    actions: list[dict[str, Any]]
    state: str

    def as_event(self) -> dict[str, Any]: ...


class Responder:
    def __init__(self, contain: Callable[[str, dict[str, Any]], dict[str, Any]],
                 guard: Callable[[str, set[str]], str | None], record: Callable[[dict[str, Any]], object],
                 held: set[str] | None = None, clock: Callable[[], float] = time.time, dry_run: bool = False) -> None:
        self._contain, self._guard, self.record, self._clock = contain, guard, record, clock
        self.dry_run = dry_run  # every quarantine decided, none carried out (rules tried on live traffic)
        self.held: set[str] = set(held or ())  # hosts quarantined now (read at start, then ours)
        self._queue: queue.Queue[Incident | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self.decided: list[dict[str, Any]] = []  # every decision's event, in order (tests, the bench)

    def submit(self, incident: Incident) -> None:
        self._queue.put(incident)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="secops-respond", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            incident = self._queue.get()
            if incident is None:
                return
            try:
                self.handle(incident)
            except Exception:  # one incident's failure must not end the responder
                log.exception("incident %s: response failed", incident.id)

    def handle(self, incident: Incident) -> dict[str, Any]:
        """Decide and act (blocking); the decision's event, also recorded."""
        why = None
        if incident.response == "quarantine":
            why = "already quarantined" if incident.host in self.held else self._guard(incident.host, self.held)
            if why is None and self.dry_run:
                why = "dry run: this rule would quarantine the host (the collector responds with alerts only)"
        if incident.response != "quarantine" or why is not None:
            incident.state = "alerted"
            incident.actions.append({"name": "alert", "ok": True,
                                     "detail": why or "the rule's response is alert (record only)"})
            kind = "incident_alerted"
        else:
            out = self._contain(incident.host, incident.as_event())
            incident.actions.extend(out.get("actions", []))
            ok = all(a.get("ok") for a in incident.actions)
            incident.state = "contained" if ok else "containment_partial"
            if ok:
                self.held.add(incident.host)
            kind = "incident_contained"
        now = self._clock()
        event = {**incident.as_event(), "kind": kind, "severity": "critical", "decided": now,
                 "to_detect": round(incident.detected - incident.first_seen, 3),
                 "to_contain": round(now - incident.first_seen, 3) if kind == "incident_contained" else None}
        self.record(event)
        self.decided.append(event)
        log.warning("incident %s (%s, %s): %s", incident.id, incident.rule, incident.host, incident.state)
        return event
