"""Detection: attributed refusals (sources.classify() output, with the stored event's ts) counted per
rule and identity in a sliding window; a rule's threshold reached opens an Incident for that identity.

One open incident per identity: later evidence joins it (bounded) rather than opening another, so a
machine that keeps misbehaving is one thing to contain, not a flood. An identity the inventory does
not know (an outside address) can only be alerted on, whatever the rule says: nothing to contain.
Pure logic, no I/O: the responder acts on what feed() returns and fills Incident.actions."""
from __future__ import annotations

import hashlib
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

from ..edge.audit import redact
from .rules import NO_IDENTITY, Rule

MAX_EVIDENCE = 20  # items kept per incident; the rest only counted (the record has every event anyway)
MAX_OPEN = 1000  # open incidents kept; beyond, the oldest alert-only one is let go (spoofed sources)
QUIET = 300.0  # seconds without new evidence after which an identity's incident ends (the next one is new)
_SUMMARY = ("address", "target", "path", "operation", "znode", "port", "proto", "reason", "why", "user", "who",
            "scope", "certificate")
_RANK = {"warning": 1, "critical": 2}


@dataclass(frozen=True)
class Identity:
    key: str  # what windows and open incidents are kept by: the host, or outside/<address>
    host: str
    spiffe: str | None
    role: str  # the SPIFFE role, or "outside"
    address: str | None


def identity_of(event: Mapping[str, Any]) -> Identity | None:
    """Whom the event concerns; None when no one is named (no host in the inventory, no address)."""
    host, spiffe = event.get("host"), event.get("spiffe")
    address = event.get("address") if isinstance(event.get("address"), str) and event.get("address") else None
    if isinstance(host, str) and host not in NO_IDENTITY and isinstance(spiffe, str):
        parts = spiffe.removeprefix("spiffe://").split("/")
        if len(parts) == 3 and parts[2] == host:  # spiffe://<domain>/<role>/<host>
            return Identity(host, host, spiffe, parts[1], address)
        return None  # a host and an id that disagree: attribute nothing rather than the wrong machine
    if address is None:
        return None
    return Identity(f"outside/{address}", "outside", None, "outside", address)


def evidence_of(event: Mapping[str, Any], seq: int | None, ts: float) -> dict[str, Any]:
    """A small, secret-free summary: the fields that say what was refused, redacted and cut short."""
    item: dict[str, Any] = {"seq": seq, "ts": ts, "layer": event.get("layer"), "kind": event.get("kind")}
    for key in _SUMMARY:
        value = event.get(key)
        if isinstance(value, bool) or value is None:
            continue
        item[key] = value if isinstance(value, (int, float)) else redact(str(value))[:200]
    return item


@dataclass
class Incident:
    id: str
    rule: str
    host: str
    spiffe: str | None
    severity: str
    response: str  # quarantine | alert
    evidence: list[dict[str, Any]]
    first_seen: float
    detected: float
    actions: list[dict[str, Any]] = field(default_factory=list)  # the responder's, in order
    state: str = "open"
    address: str | None = None  # an outside identity's address (an inventory host's too, when known)
    escalated_from: str | None = None  # the alert rule this incident opened with, before a quarantine rule
    evidence_dropped: int = 0  # items beyond MAX_EVIDENCE
    last_seen: float = 0.0  # the latest evidence's time, kept or not (what `quiet` counts from)
    _seen: set[tuple[Any, ...]] = field(default_factory=set, repr=False, compare=False)

    def add(self, items: Iterable[dict[str, Any]]) -> None:
        for item in items:
            mark = (item.get("seq"), item.get("ts"), item.get("kind"))
            if mark in self._seen:  # one event that matched two rules is one piece of evidence
                continue
            self._seen.add(mark)
            self.last_seen = max(self.last_seen, float(item.get("ts") or 0.0))
            if len(self.evidence) < MAX_EVIDENCE:
                self.evidence.append(item)
            else:
                self.evidence_dropped += 1

    def as_event(self) -> dict[str, Any]:
        """What the tamper-evident record gets: no secret (evidence is redacted when taken)."""
        return {"kind": "incident_escalated" if self.escalated_from else "incident_opened", "layer": "secops",
                "incident": self.id, "rule": self.rule, "host": self.host, "spiffe": self.spiffe,
                "address": self.address, "severity": self.severity, "response": self.response,
                "state": self.state, "first_seen": self.first_seen, "detected": self.detected,
                "escalated_from": self.escalated_from, "evidence": [dict(e) for e in self.evidence],
                "evidence_dropped": self.evidence_dropped, "actions": [dict(a) for a in self.actions]}


class Detector:
    def __init__(self, rules: list[Rule], clock: Callable[[], float] = time.time, quiet: float = QUIET) -> None:
        self.rules, self.clock, self.quiet = list(rules), clock, quiet
        self._windows: dict[tuple[str, str], deque[dict[str, Any]]] = {}
        self._open: dict[str, Incident] = {}  # identity key -> its open incident
        # the open incident the last event joined as evidence (without opening or escalating it), and
        # that evidence: the collector records it, so the record ties every later refusal to its incident
        self.joined: tuple[Incident, dict[str, Any]] | None = None

    @property
    def open_incidents(self) -> list[Incident]:
        return list(self._open.values())

    def close(self, incident_id: str, state: str = "closed") -> Incident | None:
        """The identity may open a new incident after this (e.g. once it is re-admitted)."""
        for key, inc in list(self._open.items()):
            if inc.id == incident_id:
                inc.state = state
                del self._open[key]
                return inc
        return None

    def feed(self, event: Mapping[str, Any], seq: int | None = None, at: float | None = None) -> list[Incident]:
        """The incidents this event opens or escalates (alert -> quarantine); [] for an event no rule
        matches, one no identity is named in, or more evidence for an identity's open incident."""
        self.joined = None
        who = identity_of(event)
        if who is None:
            return []
        # quarantine rules first: an event that also matches an alert rule opens one quarantine incident
        matched = sorted((r for r in self.rules if r.matches(event, who.role)),
                         key=lambda r: r.response != "quarantine")
        if not matched:
            return []
        ts = event.get("ts")
        t = at if at is not None else float(ts) if isinstance(ts, (int, float)) and not isinstance(ts, bool) \
            else self.clock()
        item = evidence_of(event, seq, t)
        out: list[Incident] = []
        current = self._open.get(who.key)
        if current is not None and t - current.last_seen > self.quiet:
            self.close(current.id, "quiet")  # nothing for `quiet` seconds: what comes now is a new incident
            current = None
        if current is not None:
            current.add([item])
        for rule in matched:
            window = self._windows.setdefault((rule.name, who.key), deque())
            window.append(item)
            while window and window[0]["ts"] <= t - rule.within:  # expired: older than `within`
                window.popleft()
            if len(window) < rule.count:
                continue
            items = list(window)
            del self._windows[(rule.name, who.key)]  # the next firing needs `count` new events
            inc = self._fire(rule, who, items)
            if inc is not None and inc not in out:
                out.append(inc)
        self._sweep(t)
        if current is not None and current not in out:
            self.joined = (current, item)
        return out

    def _fire(self, rule: Rule, who: Identity, items: list[dict[str, Any]]) -> Incident | None:
        # no identity to contain: alert, whatever the rule says
        response = "alert" if who.role == "outside" else rule.response
        inc = self._open.get(who.key)
        if inc is not None:
            inc.add(items)
            if response == "quarantine" and inc.response != "quarantine":
                inc.escalated_from, inc.rule, inc.response = inc.rule, rule.name, response
                inc.severity = max(inc.severity, rule.severity, key=lambda s: _RANK.get(s, 0))
                return inc
            return None
        first = min(i["ts"] for i in items)
        seed = f"{rule.name}|{who.key}|{items[0]['seq']}|{first!r}"
        inc = Incident(id=hashlib.sha256(seed.encode()).hexdigest()[:16], rule=rule.name, host=who.host,
                       spiffe=who.spiffe, severity=rule.severity, response=response, evidence=[],
                       first_seen=first, detected=self.clock(), address=who.address)
        inc.add(items)
        self._open[who.key] = inc
        if len(self._open) > MAX_OPEN:
            oldest = next((k for k, v in self._open.items() if v.response == "alert"), None)
            if oldest is not None:
                self._open.pop(oldest).state = "expired"
        return inc

    def _sweep(self, now: float) -> None:
        """Windows whose every event expired go (an outside address seen once must not stay forever)."""
        if len(self._windows) < 4096:
            return
        longest = max((r.within for r in self.rules), default=0.0)
        for key, window in list(self._windows.items()):
            if not window or window[-1]["ts"] <= now - longest:
                del self._windows[key]
