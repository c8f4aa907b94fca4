"""`histo secops relay`: the collector's record, followed, and its attributed refusals pushed to every
master (POST /internal/v1/secops/events over mTLS, with the collector's own certificate; the master's
SPIFFE id and address checked at each handshake), so that the SecOps dashboard shows what the record
holds.

- Follows: reads the record (secops/chain.py's JSON lines) from a file descriptor it was handed (the
  systemd unit opens it read-only as stdin: the relay's user cannot open the record, nor write it),
  new lines as they are appended; an entry is relayed when the collector attributed it (its `secops`
  field, secops/sources.py classify).
- Resumes: per master, the highest record sequence that master acknowledged, in a small state file
  (written atomically after each acknowledgement), with the byte offset every master is past. After a
  restart it sends each master what that master has not acknowledged: at least once, and the master
  takes each sequence once (master/secopsfeed.py), so nothing is lost or shown twice.
- First start (no state): new entries only (`backlog` keeps the last N attributed ones for context).
- A master away is retried with a back-off while the others go on; what one master has not taken is
  kept up to `max_pending` entries (then the oldest go, for that master only, counted as lost)."""
from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import ssl
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable, Mapping, Sequence

from ..edge.openapi import SECOPS_EVENT, SECOPS_LAYERS, SECOPS_MAX_BATCH, SECOPS_MAX_BODY
from ..edge.validation import problem
from ..files import write_private

log = logging.getLogger("histo.secops.relay")

STATE_FILE = "relay-state.json"
PATH = "/internal/v1/secops/events"
_KIND = re.compile(r"[^a-z0-9_]")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,99}$")
_PROPS = SECOPS_EVENT["properties"]


def _text(value: Any, limit: int) -> str | None:
    if value is None or value == "":
        return None
    return str(value)[:limit]


def _fits(name: str, value: Any) -> Any:
    """`value` if the schema's field takes it, else None (an unattributable detail is left out, never
    sent as something the master must refuse)."""
    return value if value is not None and problem(_PROPS[name], value, name) is None else None


# An incident's entries the dashboard shows (its evidence is relayed already, each as its own refusal).
INCIDENT_KINDS = ("incident_opened", "incident_escalated", "incident_alerted", "incident_contained")


def _who(entry: Mapping[str, Any], seq: int, layer: str, kind: str, src: Mapping[str, Any]) -> dict[str, Any]:
    """The fields every pushed event has, from the entry and the mapping that names whom it concerns
    (a refusal's `secops` attribution, or an incident): a field the schema does not take is left out."""
    ts = entry.get("ts")
    severity = src.get("severity") if src.get("severity") in ("info", "warning", "critical") else "warning"
    return {"record_seq": seq, "ts": float(ts) if isinstance(ts, (int, float)) and not isinstance(ts, bool) else 0.0,
            "layer": layer, "kind": kind, "severity": severity,
            "host": _fits("host", _text(src.get("host"), 64)) or "outside",
            "spiffe": _fits("spiffe", src.get("spiffe")), "address": _fits("address", src.get("address"))}


def _incident(entry: Mapping[str, Any], event: Mapping[str, Any], seq: int) -> dict[str, Any] | None:
    """An incident's decision as a SecOps event: who, the rule, the response, and what was done."""
    actions = [a for a in event.get("actions") or [] if isinstance(a, dict)]
    done = "; ".join(f"{a.get('name')}: {a.get('detail') or ('ok' if a.get('ok') else 'failed')}"
                     for a in actions[-3:])
    out = {**_who(entry, seq, "secops", str(event["kind"]), event),
           "where": None, "what": _text(f"{event.get('rule')} -> {event.get('response')}", 300),
           "why": _text(done, 300), "incident": _fits("incident", event.get("incident")),
           "rule": _fits("rule", event.get("rule"))}
    return out if problem(SECOPS_EVENT, out) is None else None


def from_entry(entry: Mapping[str, Any]) -> dict[str, Any] | None:
    """The event to push for one record entry, or None when the collector did not attribute it."""
    event = entry.get("event")
    found = event.get("secops") if isinstance(event, dict) else None
    seq = entry.get("seq")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
        return None
    if isinstance(event, dict) and event.get("kind") in INCIDENT_KINDS:
        return _incident(entry, event, seq)
    if not isinstance(found, dict):
        return None
    layer = str(found["layer"]) if found.get("layer") in SECOPS_LAYERS else "secops"
    kind = _KIND.sub("_", str(found.get("kind") or "refused").lower())[:40].lstrip("_0123456789") or "refused"
    # where it happened: the machine that refused (firewall, sshd, ZooKeeper name their target; a Vault
    # denial is the Vault node that shipped it)
    where = found.get("target") or (event.get("host") if isinstance(event, dict) else None)
    what: str | None
    if layer == "vault":
        what = " ".join(str(found.get(k)) for k in ("operation", "path") if found.get(k))
    elif layer == "firewall":
        what = f"port {found.get('port') or '?'}/{found.get('proto') or '?'}"
    elif layer == "ssh":
        what = f"user {found.get('user')}" if found.get("user") else None
    elif layer == "zookeeper":
        what = " ".join(str(found.get(k)) for k in ("operation", "znode") if found.get(k))
    else:
        what = None
    out = {**_who(entry, seq, layer, kind, found), "where": _fits("where", _text(where, 100)),
           "what": _text(what, 300), "why": _text(found.get("why"), 300)}
    return out if problem(SECOPS_EVENT, out) is None else None


class RecordFollower:
    """The record's complete lines from `fd`, as they are appended. A line is taken only once it ends
    (the collector's write may be read half done); a line that is no entry, or an entry whose sequence
    does not follow, is skipped with a warning (`histo audit verify` is the judge of the record; the
    relay must not stop the dashboard for it)."""

    def __init__(self, fd: int, offset: int = 0, after: int = 0) -> None:
        self.fd, self.offset, self.after = fd, offset, after
        self._buf = b""
        os.lseek(fd, offset, os.SEEK_SET)

    def poll(self, max_bytes: int = 1 << 20) -> list[tuple[int, dict[str, Any]]]:
        """New entries as (the byte offset just past the entry, the entry)."""
        out: list[tuple[int, dict[str, Any]]] = []
        got = 0
        while got < max_bytes:
            chunk = os.read(self.fd, 1 << 16)
            if not chunk:
                break
            got += len(chunk)
            self._buf += chunk
            *lines, self._buf = self._buf.split(b"\n")
            for line in lines:
                self.offset += len(line) + 1
                entry = _entry(line)
                if entry is None:
                    if line.strip():
                        log.warning("record line ending at byte %d is no entry: skipped", self.offset)
                    continue
                if entry["seq"] <= self.after:
                    continue  # already handled before a restart
                out.append((self.offset, entry))
                self.after = entry["seq"]
        return out


def _entry(line: bytes) -> dict[str, Any] | None:
    try:
        e = json.loads(line)
    except ValueError:
        return None
    seq = e.get("seq") if isinstance(e, dict) else None
    return e if isinstance(seq, int) and not isinstance(seq, bool) and seq >= 1 else None


@dataclass
class Outbox:
    """What each master has yet to acknowledge. `sent[m]`: every attributed entry up to that sequence
    was taken by master m. `safe`: (sequence, byte offset) that every master is past, where a restart
    reads on from."""
    masters: Sequence[str]
    sent: dict[str, int]
    safe: tuple[int, int] = (0, 0)
    max_pending: int = 5000
    pending: deque[tuple[int, int, dict[str, Any]]] = field(default_factory=deque)
    scanned: tuple[int, int] = (0, 0)  # the last entry read: (sequence, offset past it)
    lost: int = 0

    def __post_init__(self) -> None:
        self.sent = {m: int(self.sent.get(m, self.safe[0])) for m in self.masters}
        self.scanned = max(self.scanned, self.safe)

    def add(self, offset: int, entry: Mapping[str, Any]) -> None:
        seq = int(entry["seq"])
        event = from_entry(entry)
        if event is not None:
            self.pending.append((seq, offset, event))
            if len(self.pending) > self.max_pending:  # a master away for long: it loses the oldest
                old_seq, old_off, _ = self.pending.popleft()
                for m, s in self.sent.items():
                    if s < old_seq:
                        self.sent[m] = old_seq
                        self.lost += 1
                self.safe = max(self.safe, (old_seq, old_off))
        self.scanned = (seq, offset)

    def batch(self, master: str, size: int = SECOPS_MAX_BATCH,
              max_bytes: int = SECOPS_MAX_BODY) -> list[dict[str, Any]]:
        """The next events for `master`, in record order, at most `size` of them in a push body of at most
        `max_bytes` (at least one: any one event fits); an empty list moves it up to what was read."""
        have = self.sent[master]
        out: list[dict[str, Any]] = []
        used = len(json.dumps({"record": "0" * 64, "events": []}))  # the push's envelope (relay.serve)
        for seq, _, ev in self.pending:
            if seq <= have:
                continue
            used += len(json.dumps(ev)) + 2  # the event and its ", " (JSON is ASCII here: bytes)
            if len(out) >= size or (out and used > max_bytes):
                break
            out.append(ev)
        if not out:
            self.sent[master] = max(have, self.scanned[0])
        return out

    def acked(self, master: str, upto: int) -> None:
        self.sent[master] = max(self.sent[master], upto)
        low = min(self.sent.values())
        while self.pending and self.pending[0][0] <= low:
            seq, off, _ = self.pending.popleft()
            self.safe = max(self.safe, (seq, off))
        if not self.pending and low >= self.scanned[0]:
            self.safe = max(self.safe, self.scanned)

    def state(self) -> dict[str, Any]:
        low = min(self.sent.values(), default=0)
        safe = self.scanned if not self.pending and low >= self.scanned[0] else self.safe
        return {"sent": dict(self.sent), "safe": list(safe), "read": self.scanned[0]}


def load_state(path: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads(path.read_text())
        sent, safe = doc["sent"], doc["safe"]
        if (isinstance(sent, dict) and all(isinstance(v, int) for v in sent.values())
                and isinstance(safe, list) and len(safe) == 2 and all(isinstance(v, int) for v in safe)):
            record = doc.get("record")
            return {"sent": sent, "safe": (safe[0], safe[1]), "record": record if isinstance(record, str) else None}
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError, OSError):
        pass
    log.warning("relay state %s unreadable: starting again with new entries only", path)
    return None


def save_state(path: Path, state: Mapping[str, Any]) -> None:
    write_private(path, (json.dumps(state, sort_keys=True) + "\n").encode())


# (status, body, headers) of one push (master, record id, events); raises on a connection or identity failure
Push = Callable[[str, str, list[dict[str, Any]]], Awaitable[tuple[int, bytes, Mapping[str, str]]]]


def record_id(fd: int) -> str | None:
    """The record's id: the hash of its first entry (None while it has none). Masters count sequences per
    record, so a record started anew is not taken for the old one's duplicates."""
    head = os.pread(fd, 8192, 0).split(b"\n", 1)
    entry = _entry(head[0]) if len(head) == 2 else None
    digest = entry.get("hash") if entry is not None and entry["seq"] == 1 else None
    return digest if isinstance(digest, str) and re.fullmatch(r"[0-9a-f]{64}", digest) else None


class Relay:
    def __init__(self, fd: int, masters: Sequence[str], push: Push, state_dir: Path, backlog: int = 0,
                 interval: float = 0.5, max_pending: int = 5000) -> None:
        self.push, self.interval, self.masters, self.fd = push, interval, list(masters), fd
        self.record: str | None = None
        self.state_path = Path(state_dir) / STATE_FILE
        saved = load_state(self.state_path)
        current = record_id(fd)
        if saved is not None and saved.get("record") not in (None, current):
            # another record than the one the state counts in (the collector's record started anew):
            # everything in it is new to the masters
            log.warning("the record is not the one the relay state describes: relaying it from its start")
            saved = {"sent": {}, "safe": (0, 0)}
        if saved is not None:
            self.box = Outbox(self.masters, saved["sent"], saved["safe"], max_pending=max_pending)
            self.follower = self._resume(fd, saved["safe"])
        else:  # new entries only, besides the last `backlog` attributed ones (streamed: a record may be large)
            self.follower = RecordFollower(fd)
            keep: deque[tuple[int, dict[str, Any]]] = deque(maxlen=max(backlog, 0) or 1)
            head: tuple[int, Mapping[str, Any]] = (0, {"seq": 0})
            while batch := self.follower.poll():
                head = batch[-1]
                keep.extend((o, e) for o, e in batch if backlog and from_entry(e) is not None)
            start = (int(keep[0][1]["seq"]) - 1) if keep else int(head[1]["seq"])
            self.box = Outbox(self.masters, {m: start for m in self.masters}, max_pending=max_pending)
            for o, e in keep:
                self.box.add(o, e)
            self.box.scanned = (int(head[1]["seq"]), head[0])
            if not keep:
                self.box.safe = self.box.scanned
        self.record = current
        self._save()
        self._retry_at: dict[str, float] = {m: 0.0 for m in self.masters}
        self._backoff: dict[str, float] = {m: 1.0 for m in self.masters}
        # after a refused batch: smaller batches until the refused one's last sequence is past (size, until)
        self._narrow: dict[str, tuple[int, int]] = {}
        self.pushed = 0

    def _resume(self, fd: int, safe: tuple[int, int]) -> RecordFollower:
        size = os.fstat(fd).st_size
        follower = RecordFollower(fd, safe[1], safe[0]) if safe[1] <= size else None
        if follower is not None and safe[1] > 0:
            os.lseek(fd, safe[1] - 1, os.SEEK_SET)  # the byte before must end the entry `safe` names
            if os.read(fd, 1) != b"\n":
                follower = None
            else:
                os.lseek(fd, safe[1], os.SEEK_SET)
        if follower is None:  # the record is not the one the state describes: read it all again
            log.warning("the record does not match the relay state at byte %d: reading it from the start", safe[1])
            follower = RecordFollower(fd, 0, 0)
        return follower

    def _save(self) -> None:
        save_state(self.state_path, {**self.box.state(), "record": self.record})

    def read(self) -> int:
        n = 0
        while batch := self.follower.poll():
            for offset, entry in batch:
                self.box.add(offset, entry)
            n += len(batch)
        return n

    async def _serve(self, master: str, now: float) -> bool:
        """Push to `master` until it has everything or refuses; True when something was acknowledged."""
        if now < self._retry_at[master]:
            return False
        moved = False
        while events := self.box.batch(master, self._narrow.get(master, (SECOPS_MAX_BATCH, 0))[0]):
            self.record = self.record or record_id(self.fd)
            if self.record is None:  # entries but no readable first one: the record is not ours to relay
                self._wait(master, now, "the record's first entry is unreadable")
                return moved
            try:
                status, body, headers = await self.push(master, self.record, events)
            except Exception as exc:  # connection refused, TLS or identity refused, timeout
                self._wait(master, now, f"{type(exc).__name__}: {str(exc)[:200]}")
                return moved
            if status == 200:
                self.box.acked(master, events[-1]["record_seq"])
                self._backoff[master] = 1.0
                self.pushed += len(events)
                if events[-1]["record_seq"] >= self._narrow.get(master, (0, 0))[1]:
                    self._narrow.pop(master, None)
                moved = True
            elif status in (400, 413) and len(events) > 1:
                # one unfit event must not take the others with it (a compromised machine chooses what it is
                # refused: the path it asks Vault for, the znode it writes): halve until it is alone
                until = max(self._narrow.get(master, (0, 0))[1], events[-1]["record_seq"])
                self._narrow[master] = (len(events) // 2, until)
            elif status in (400, 413):  # the master judges this event unfit: never resent, never a block
                log.warning("%s refused event %d (%d): %s", master, events[0]["record_seq"], status,
                            body[:200].decode("utf-8", "replace"))
                self.box.acked(master, events[-1]["record_seq"])
                moved = True
            else:  # 429 (its rate), 403 (our identity refused), 5xx: the same batch later
                retry = headers.get("Retry-After", "")
                self._wait(master, now, f"answered {status}", float(retry) if retry.isdigit() else None)
                return moved
        return moved

    def _wait(self, master: str, now: float, why: str, seconds: float | None = None) -> None:
        delay = seconds if seconds is not None else self._backoff[master]
        self._backoff[master] = min(30.0, self._backoff[master] * 2)
        self._retry_at[master] = now + delay
        log.warning("push to %s failed (%s): again in %.0f s", master, why, delay)

    async def step(self) -> bool:
        """One round (read what is new, push it to every master, together); True when anything moved.
        run() does the same with a sender of its own per master."""
        before = self.box.state()
        self.read()
        now = asyncio.get_running_loop().time()
        moved = await asyncio.gather(*(self._serve(m, now) for m in self.masters))
        if self.box.state() != before:
            self._save()
        return any(moved)

    async def run(self, stop: asyncio.Event) -> None:
        """One reader of the record and one sender per master, each on its own: a master that does not
        answer (a connect timeout, its back-off) never delays the others."""
        loop = asyncio.get_running_loop()

        async def pause(seconds: float) -> None:
            try:
                await asyncio.wait_for(stop.wait(), seconds)
            except asyncio.TimeoutError:
                pass

        async def reader() -> None:
            while not stop.is_set():
                before = self.box.state()
                self.read()
                if self.box.state() != before:
                    self._save()
                await pause(self.interval)

        async def sender(master: str) -> None:
            while not stop.is_set():
                if await self._serve(master, loop.time()):
                    self._save()
                await pause(self.interval)

        await asyncio.gather(reader(), *(sender(m) for m in self.masters))
        self._save()


def client_context(ca: Path, cert: Path, key: Path) -> ssl.SSLContext:
    """The collector's client side: its certificate, and the histo CA to check the master's."""
    from ..tls.contexts import harden
    ctx = harden(ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca)))
    ctx.load_cert_chain(str(cert), str(key))
    return ctx


def _mtime(path: Path) -> float:
    return path.stat().st_mtime  # a stat of a local file: not worth a thread


def parse_masters(specs: Sequence[str]) -> dict[str, str]:
    """`name=https://address:port` each (the master's host name is what its certificate must say)."""
    out = {}
    for spec in specs:
        name, sep, url = spec.partition("=")
        if not sep or not _NAME.match(name) or not url.startswith("https://"):
            raise ValueError(f"--master must be NAME=https://ADDRESS:PORT, not {spec!r}")
        out[name] = url.rstrip("/")
    return out


async def serve(fd: int, masters: Mapping[str, str], ca: Path, cert: Path, key: Path, state_dir: Path,
                trust_domain: str, source_address: str | None, backlog: int = 0, interval: float = 0.5,
                stop: asyncio.Event | None = None) -> None:
    """Run the relay until `stop` (SIGTERM in the CLI)."""
    from ..rpc import InternalClient
    ctx = client_context(ca, cert, key)
    client = InternalClient(ctx, trust_domain, source_address=source_address, timeout=15)
    mtime = _mtime(cert)

    async def push(master: str, record: str, events: list[dict[str, Any]]) -> tuple[int, bytes, Mapping[str, str]]:
        nonlocal mtime
        if _mtime(cert) != mtime:  # renewed in place: new connections present the new one
            mtime = _mtime(cert)
            ctx.load_cert_chain(str(cert), str(key))
            ctx.load_verify_locations(cafile=str(ca))
        reply = await client.request("POST", masters[master] + PATH, ("master",),
                                     json={"record": record, "events": events}, expect_host=master, timeout=15,
                                     max_body=4096)
        return reply.status, reply.body, reply.headers

    relay = Relay(fd, list(masters), push, state_dir, backlog=backlog, interval=interval)
    log.info("relaying the record to %s from sequence %s", ", ".join(masters), relay.box.state()["sent"])
    try:
        await relay.run(stop or asyncio.Event())
    finally:
        await client.close()
