"""Drills are detected, not self-reported (issue 17 item 5): what refusal a cluster drill must leave on
the SecOps dashboard's API (GET /api/v1/secops/events), how an event of that API is recognised as it,
and where the seconds it took are kept. The table itself is in test_drills.py; this module is the part
that needs no cluster (tests/unit/test_drill_detection.py checks it, and the table, offline).

Standard library only: tests/deploy runs under .venv-deploy, which has no histo package."""
from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

# The layers a refusal is recorded by (secops/sources.py classify(); secops/rules.yaml's `layer`).
LAYERS = ("vault", "zookeeper", "firewall", "ssh", "service", "secops")
KIND = re.compile(r"[a-z][a-z0-9_]{0,39}")  # edge/openapi.py SECOPS_EVENT's kind
OUTSIDE = "outside"  # the identity of an address the inventory does not know
_REF = re.compile(r"\{(\w+)\[(-?\w+)\]\}")


@dataclass(frozen=True)
class Names:
    """The deployed cluster's names a table entry is written in: each inventory group's hosts in
    inventory order, the ports, and named sets of addresses (the controller's, the flood's)."""
    groups: Mapping[str, Sequence[str]]
    ports: Mapping[str, int]
    addresses: Mapping[str, Sequence[str]] = field(default_factory=dict)

    def resolve(self, template: str) -> str:
        """`template` with each {group[i]} (i may be negative) and {ports[name]} replaced."""
        def one(m: re.Match[str]) -> str:
            name, key = m.group(1), m.group(2)
            if name == "ports":
                return str(self.ports[key])
            if name not in self.groups:
                raise KeyError(f"no inventory group {name!r} in {template!r}")
            return str(self.groups[name][int(key)])
        out = _REF.sub(one, template)
        if "{" in out or "}" in out:
            raise ValueError(f"cannot resolve {template!r}")
        return out


def names_from_inventory(inventory: Mapping[str, Any], outsiders: Sequence[str]) -> Names:
    """The Names of inventory/<profile>/hosts.yml (as DeployedCluster.inventory holds it): the
    addresses are the controller's and `outsiders`, those the flood drills come from."""
    top = inventory["all"]
    groups = {group: list(body["hosts"]) for group, body in top["children"].items()}
    return Names(groups, dict(top["vars"]["histo_ports"]),
                 {"controller": [str(top["vars"]["histo_controller_address"])], "flood": list(outsiders)})


@dataclass(frozen=True)
class Refusal:
    """One refusal a drill provokes, as the SecOps API must show it.

    layer   the layer that records it (LAYERS)
    who     the identity it is attributed to (the event's `host`): a template of Names ({workers[0]}),
            or `outside`
    kind    the event's kind (vault_denied, zk_acl_denied, firewall_drop, mtls_rejected, ...)
    reason  one line: why the drill provokes exactly this
    what    a template that must be part of the event's `what` (a Vault path, "port 8443/TCP")
    where   a template the event's `where` (the machine that refused) must equal
    address the name of a set of Names.addresses the event's `address` must be in"""
    layer: str
    who: str
    kind: str
    reason: str
    what: str | None = None
    where: str | None = None
    address: str | None = None

    def at(self, names: Names) -> Wanted:
        """This refusal in the cluster's own names."""
        addresses = None
        if self.address is not None:
            addresses = frozenset(names.addresses[self.address])
        return Wanted(self.layer, names.resolve(self.who), self.kind,
                      names.resolve(self.what) if self.what is not None else None,
                      names.resolve(self.where) if self.where is not None else None, addresses)


@dataclass(frozen=True)
class Wanted:
    """A Refusal resolved against the cluster: what an API event must carry to be it."""
    layer: str
    host: str
    kind: str
    what: str | None = None
    where: str | None = None
    addresses: frozenset[str] | None = None

    def matches(self, ev: Mapping[str, Any]) -> bool:
        return (ev.get("layer") == self.layer and ev.get("host") == self.host and ev.get("kind") == self.kind
                and (self.what is None or self.what in str(ev.get("what") or ""))
                and (self.where is None or ev.get("where") == self.where)
                and (self.addresses is None or ev.get("address") in self.addresses))

    def describe(self) -> str:
        parts = [f"{self.layer} {self.kind} of {self.host}"]
        if self.what is not None:
            parts.append(f"what ~ {self.what!r}")
        if self.where is not None:
            parts.append(f"where {self.where}")
        if self.addresses is not None:
            parts.append(f"from {', '.join(sorted(self.addresses)[:3])}{' ...' if len(self.addresses) > 3 else ''}")
        return "; ".join(parts)


class Arrivals:
    """The first API event that matches each wanted refusal, and when it was seen (seconds after
    `started`, on the caller's clock); events are fed in the order the API gave them."""

    def __init__(self, wanted: Sequence[Wanted], started: float) -> None:
        self.wanted = list(wanted)
        self.started = started
        self.found: dict[int, tuple[dict[str, Any], float]] = {}
        self.seen = 0  # events looked at

    def feed(self, events: Iterable[Mapping[str, Any]], now: float) -> None:
        for ev in events:
            self.seen += 1
            for i, w in enumerate(self.wanted):
                if i not in self.found and w.matches(ev):
                    self.found[i] = (dict(ev), round(now - self.started, 1))

    def done(self) -> bool:
        return len(self.found) == len(self.wanted)

    @property
    def missing(self) -> list[Wanted]:
        return [w for i, w in enumerate(self.wanted) if i not in self.found]

    def arrived(self) -> list[tuple[Wanted, dict[str, Any], float]]:
        """(wanted, its event, seconds) in the table's order."""
        return [(self.wanted[i], *self.found[i]) for i in sorted(self.found)]


def append_rows(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """Adds `rows` to the JSON list in `path` (made, with its folder, if missing), replaced atomically:
    an interrupted run leaves the file as it was."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        have = json.loads(path.read_text())
    except FileNotFoundError:
        have = []
    if not isinstance(have, list):
        raise ValueError(f"{path} holds no JSON list")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump([*have, *(dict(r) for r in rows)], f, indent=1)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
