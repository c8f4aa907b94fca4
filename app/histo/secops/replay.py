"""The detection rules replayed over a layer's own files, after the fact: which incidents the collector
would have opened on that traffic. What measures "no false alarms" (issue 18): a run of legitimate
traffic — `make soak` with its kills, restarts and outages — must open none.

    incidents = replay(read_files(paths), inventory, load_rules())

Files: Vault's audit log (one JSON entry a line) and ZooKeeper's refusals file (histo.zk.config: an
entry starts with its timestamp and level; the lines after it, up to the next such line, belong to it —
what the shipper's `startmsg.regex` joins the same way)."""
from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

from ..zk.config import LOG_ENTRY_START
from .detect import Detector, Incident
from .rules import Rule
from .sources import Inventory, classify, ordinary_zk_failure

_START = re.compile(LOG_ENTRY_START)


def _when(text: str) -> float | None:
    """A Vault audit `time` (RFC 3339, nanoseconds) or a ZooKeeper line's first field, in epoch seconds."""
    stamp = re.sub(r"(\.\d{6})\d+", r"\1", text.strip()).replace("Z", "+00:00")
    stamp = re.sub(r"([+-]\d{2})(\d{2})$", r"\1:\2", stamp)
    try:
        return datetime.fromisoformat(stamp).timestamp()
    except ValueError:
        return None


def _zookeeper_entries(lines: list[str], host: str) -> Iterator[tuple[dict[str, Any], float | None]]:
    entry: list[str] = []
    for line in lines + [""]:
        if entry and (not line or _START.match(line)):
            yield {"msg": "\n".join(entry), "host": host, "tag": "zookeeper"}, _when(entry[0].split(" ", 1)[0])
            entry = []
        if line:
            entry.append(line)


def read_files(paths: Iterable[Path], zookeeper_host: str = "zk1") -> Iterator[tuple[dict[str, Any], float | None]]:
    """(event as classify() takes it, its time) for every entry of every file, files one after another."""
    for path in paths:
        lines = Path(path).read_text(errors="replace").splitlines()
        if any(line.lstrip().startswith("{") for line in lines[:5]):
            for line in lines:
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if isinstance(entry, dict):
                    yield entry, _when(str(entry.get("time", "")))
        else:
            yield from _zookeeper_entries(lines, zookeeper_host)


def replay(events: Iterable[tuple[Mapping[str, Any], float | None]], inventory: Inventory,
           rules: list[Rule]) -> tuple[int, list[Incident]]:
    """(refusals found, incidents opened or escalated), in time order as the collector would see them."""
    attributed = []
    for n, (event, at) in enumerate(events):
        if event.get("tag") == "zookeeper" and ordinary_zk_failure(str(event.get("msg", "")), inventory):
            continue  # the machines' shipper keeps it on ZooKeeper's host: no refusal
        found = classify(event, inventory)
        if found is not None:
            attributed.append((at or 0.0, n, found))
    attributed.sort(key=lambda x: (x[0], x[1]))
    detector = Detector(rules, clock=lambda: attributed[-1][0] if attributed else 0.0)
    incidents: list[Incident] = []
    for at, n, found in attributed:
        for inc in detector.feed({**found, "ts": at}, seq=n, at=at):
            if inc not in incidents:
                incidents.append(inc)
    return len(attributed), incidents


def summary(refusals: int, incidents: list[Incident]) -> dict[str, Any]:
    return {"refusals": refusals, "incidents": len(incidents),
            "opened": [{"rule": i.rule, "host": i.host, "response": i.response, "first_seen": i.first_seen,
                        "evidence": [{k: e.get(k) for k in ("kind", "path", "znode", "why") if e.get(k)}
                                     for e in i.evidence[:3]]} for i in incidents]}
