"""The SecOps collector: events in (one line each on stdin — what rsyslog's omprog hands it, or a
file in local mode), every one appended to the hash-chained log, the head signed every `interval`
seconds (checkpoint file beside the log + the anchor off the collector).

With `confirm` (omprog's confirmMessages=on) each line is answered "OK" only once it is on disk
(fsynced), so the shipper keeps in its queue whatever the collector had not yet stored."""
from __future__ import annotations

import json
import logging
import os
import threading
from datetime import datetime
from pathlib import Path
from typing import IO, Any, Callable, Protocol

from ..edge.events import plain
from ..edge.receipts import SigningUnavailable
from .chain import ChainLog, Head
from .sources import Inventory, classify

log = logging.getLogger("histo.secops.collector")
MAX_LINE = 64 * 1024


class Signer(Protocol):
    def sign_head(self, head: Head) -> str: ...


class Anchor(Protocol):
    def put(self, jws: str) -> None: ...


def checkpoints_path(log_path: Path) -> Path:
    return Path(str(log_path) + ".checkpoints")


def event_of(line: str) -> dict[str, Any]:
    """A JSON object as it is, anything else as a message; redacted either way (no token, secret_id
    or password reaches the record)."""
    text = line.strip()[:MAX_LINE]
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    event = value if isinstance(value, dict) else {"msg": text}
    out = plain(event)
    return out if isinstance(out, dict) else {"msg": str(out)}


class Detects(Protocol):
    def feed(self, event: dict[str, Any], seq: int | None = None, at: float | None = None) -> list[Any]: ...


class Responds(Protocol):
    def submit(self, incident: Any) -> None: ...
    def start(self) -> None: ...
    def stop(self) -> None: ...


def event_time(event: dict[str, Any]) -> float | None:
    """When the source says it happened: a service's unix `ts`, rsyslog's RFC 3339 timereported, or
    a Vault audit entry's `time`; None when it says nothing readable."""
    for key in ("ts", "time"):
        value = event.get(key)
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
            except ValueError:
                continue
    return None


class Collector:
    def __init__(self, log_path: Path, signer: Signer, anchor: Anchor | None, interval: float = 5.0,
                 upkeep: Callable[[], None] | None = None, inventory: Inventory | None = None,
                 self_host: str | None = None, detector: Detects | None = None,
                 responder: Responds | None = None) -> None:
        self.log = ChainLog(log_path)
        # the detector sees every attributed refusal as it is stored; the responder acts off this thread
        self.detector, self.responder = detector, responder
        self._append = threading.Lock()  # ingest and the responder's decisions share the chain
        self.signer, self.anchor, self.interval, self.upkeep = signer, anchor, interval, upkeep
        self.inventory = inventory  # given: each refusal is attributed to its host and SPIFFE id
        self.self_host = self_host  # the collector's own host: what its local inputs (127.0.0.1) are
        cp = checkpoints_path(log_path)
        fd = os.open(cp, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._cp = os.fdopen(fd, "a", encoding="ascii")
        self.signed = Head(0, "")
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    def ingest(self, line: str) -> Head:
        event = event_of(line)
        found = classify(event, self.inventory, self.self_host) if self.inventory is not None else None
        if found is not None:
            event["secops"] = plain(found)
        head = self.record(event)
        if found is not None and self.detector is not None:
            at = event_time(event)
            for incident in self.detector.feed(event["secops"], seq=head.seq, at=at):
                self.record({"kind": "incident_opened", **incident.as_event()})
                if self.responder is not None:
                    self.responder.submit(incident)
            joined = getattr(self.detector, "joined", None)
            if joined is not None:  # more evidence for an identity's open incident: tied to it in the record
                incident, item = joined
                self.record({"kind": "incident_evidence", "layer": "secops", "incident": incident.id,
                             "rule": incident.rule, "host": incident.host, "spiffe": incident.spiffe,
                             "state": incident.state, "evidence": item})
        return head

    def record(self, event: dict[str, Any]) -> Head:
        """Append one event to the chain (the ingest thread's and the responder's, one at a time)."""
        with self._append:
            return self.log.append(event)

    def checkpoint(self) -> str | None:
        """Sign the head if it moved since the last checkpoint; None if nothing new or Vault cannot
        sign now (the entries are on disk and chained: the next checkpoint covers them)."""
        with self._append:  # the head as appended and synced, never a half-written entry
            head = self.log.head
            if head.seq == 0 or head == self.signed:
                return None
            self.log.sync()  # never sign what is not durable
        try:
            jws = self.signer.sign_head(head)
        except SigningUnavailable as exc:
            log.warning("checkpoint of entry %d deferred: %s", head.seq, exc)
            return None
        self._cp.write(jws + "\n")
        self._cp.flush()
        os.fsync(self._cp.fileno())
        self.signed = head
        if self.anchor is not None:
            try:
                self.anchor.put(jws)
            except Exception as exc:  # kept locally; the next checkpoint anchors the newer head
                log.warning("checkpoint of entry %d not anchored: %s", head.seq, type(exc).__name__)
        return jws

    def _tick(self) -> None:
        while not self._stop.wait(self.interval):
            if self.upkeep is not None:  # e.g. renew the Vault token; a failure only defers checkpoints
                try:
                    self.upkeep()
                except Exception as exc:
                    log.warning("upkeep failed: %s", type(exc).__name__)
            self.checkpoint()

    def start(self) -> None:
        self._ticker = threading.Thread(target=self._tick, name="secops-checkpoint", daemon=True)
        self._ticker.start()
        if self.responder is not None:
            self.responder.start()

    def run(self, source: IO[str], reply: IO[str] | None = None) -> int:
        """Ingest until EOF; `reply`: answer each stored line with OK (omprog's protocol, which
        also wants an OK once the program is ready). Returns the number of events stored."""
        n = 0
        self.start()
        if reply is not None:
            reply.write("OK\n")
            reply.flush()
        try:
            for line in source:
                if not line.strip():
                    continue
                self.ingest(line)
                n += 1
                if reply is not None:
                    with self._append:
                        self.log.sync()
                    reply.write("OK\n")
                    reply.flush()
        finally:
            self.close()
        return n

    def close(self) -> None:
        if self.responder is not None:  # decisions under way are recorded before the last checkpoint
            self.responder.stop()
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
        self.checkpoint()
        self.log.close()
        self._cp.close()
