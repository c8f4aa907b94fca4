"""The hash-chained event log: one JSON line per event, each entry naming the hash of the one before,
so an edit anywhere breaks every link after it. Signed checkpoints (checkpoint.py) pin the head
every few seconds; `walk` checks a log against them and names the first entry that was changed,
inserted, reordered or removed.

An entry: {"seq": n, "prev": <hash of entry n-1>, "ts": <collector time>, "event": {...}, "hash": h}
where h = sha256 of the canonical JSON of the entry without "hash"."""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

GENESIS = "0" * 64
FIELDS = ("seq", "prev", "ts", "event", "hash")


def canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def entry_hash(seq: int, prev: str, ts: float, event: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical({"seq": seq, "prev": prev, "ts": ts, "event": event})).hexdigest()


@dataclass(frozen=True)
class Head:
    seq: int  # 0: the empty log
    hash: str


@dataclass(frozen=True)
class Finding:
    """What is wrong, at which entry (seq) and where in the file (line, 1-based)."""
    kind: str  # changed | inserted | reordered | removed | bad_checkpoint
    seq: int
    line: int
    message: str


def _parse(raw: str) -> dict[str, Any] | None:
    try:
        e = json.loads(raw)
    except ValueError:
        return None
    ok = (isinstance(e, dict) and set(e) == set(FIELDS) and isinstance(e["seq"], int)
          and not isinstance(e["seq"], bool) and e["seq"] >= 1 and isinstance(e["prev"], str)
          and isinstance(e["hash"], str) and isinstance(e["event"], dict)
          and isinstance(e["ts"], (int, float)) and not isinstance(e["ts"], bool))
    return e if ok else None


def _sound(e: Mapping[str, Any]) -> bool:
    return bool(entry_hash(e["seq"], e["prev"], e["ts"], e["event"]) == e["hash"])


def walk(lines: Iterable[str], checkpoints: Mapping[int, str]) -> tuple[Head, Finding | None]:
    """Check the log's lines against `checkpoints` (seq -> head hash, signatures already verified).
    Returns the last sound head and the first finding (None: the log is intact)."""
    rows = [raw.rstrip("\n") for raw in lines]
    parsed = [_parse(r) if r.strip() else None for r in rows]
    head, last_cp = Head(0, GENESIS), 0
    seen: dict[int, str] = {}
    for i, e in enumerate(parsed):
        line = i + 1
        expected = head.seq + 1
        if e is None:
            return head, Finding("changed", expected, line, f"line {line} is not a log entry (entry {expected} "
                                 "expected there): it was changed")
        seq = e["seq"]
        if not _sound(e):
            return head, Finding("changed", seq, line, f"entry {seq} (line {line}) was changed: its content "
                                 "no longer matches its hash")
        if seq < expected:
            what = "a copy of" if seen.get(seq) == e["hash"] else "a second"
            return head, Finding("inserted", seq, line, f"line {line} was inserted: it is {what} entry {seq}")
        if seq > expected:
            if any(p and p["seq"] == expected for p in parsed[i + 1:]):  # only scanned on a finding
                return head, Finding("reordered", expected, line, f"entries were reordered: entry {seq} (line "
                                     f"{line}) comes before entry {expected}")
            gone = f"entry {expected}" if seq == expected + 1 else f"entries {expected}..{seq - 1}"
            return head, Finding("removed", expected, line, f"{gone} removed (before line {line})")
        if e["prev"] != head.hash:
            if head.seq == 0:
                return head, Finding("changed", seq, line, f"entry {seq} (line {line}) does not start the chain")
            return head, Finding("changed", head.seq, line - 1, f"entry {head.seq} (line {line - 1}) was changed: "
                                 f"entry {seq} no longer links to it")
        head = Head(seq, e["hash"])
        seen[seq] = e["hash"]
        want = checkpoints.get(seq)
        if want is not None:
            if want != head.hash:  # the chain was rewritten consistently: only a checkpoint tells
                return head, Finding("changed", last_cp + 1, line, f"entries {last_cp + 1}..{seq} differ from the "
                                     f"signed checkpoint at entry {seq}: one of them was changed, inserted, "
                                     "reordered or removed, and the chain rewritten after it")
            last_cp = seq
    top = max(checkpoints, default=0)
    if top > head.seq:
        return head, Finding("removed", head.seq + 1, len(rows) + 1, f"the log ends at entry {head.seq} but a "
                             f"signed checkpoint covers entry {top}: entries {head.seq + 1}..{top} were removed")
    return head, None


def _lock_file(fd: int, path: Path, wait: float) -> None:
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise RecordBusy(f"{path}: another collector still writes it (waited {wait:.0f} s)") from None
            time.sleep(0.2)


class RecordBusy(RuntimeError):
    """Another process holds the record (its writer has not exited yet)."""


class ChainLog:
    """Appends entries to `path` (0600, O_APPEND). Opening an existing log resumes its chain from the
    last entry; a log whose own chain does not hold is refused, never extended.

    One writer at a time: the log is locked (flock) for the writer's life, and its head is read only
    once the lock is held. rsyslog's omprog starts a new collector when the old one has not confirmed in
    time (Vault slow to answer at boot) while the old one may still be writing: two writers from the
    same head once forked a cluster's record (two entries 1408), which no collector may extend again.
    A second writer waits up to `wait` seconds for the first to exit, then RecordBusy."""

    def __init__(self, path: Path, wait: float = 30.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._lock = threading.Lock()
        self.head = Head(0, GENESIS)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            _lock_file(fd, self.path, wait)
            os.fchmod(fd, 0o600)
            with self.path.open(encoding="utf-8") as f:
                self.head, finding = walk(f, {})
            if finding is not None:
                raise ValueError(f"{self.path}: {finding.message}")
        except BaseException:
            os.close(fd)  # releases the lock too
            raise
        self._f = os.fdopen(fd, "a", encoding="utf-8")

    def append(self, event: Mapping[str, Any], ts: float | None = None) -> Head:
        """One entry; written through to the file (flush), made durable by sync()."""
        with self._lock:
            seq, prev, now = self.head.seq + 1, self.head.hash, round(time.time() if ts is None else ts, 3)
            ev = dict(event)
            h = entry_hash(seq, prev, now, ev)
            self._f.write(canonical({"seq": seq, "prev": prev, "ts": now, "event": ev, "hash": h}).decode() + "\n")
            self._f.flush()
            self.head = Head(seq, h)
            return self.head

    def sync(self) -> None:
        with self._lock:
            os.fsync(self._f.fileno())

    def close(self) -> None:
        with self._lock:
            self._f.close()
