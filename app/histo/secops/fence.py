"""`histo quarantine sync`: every machine's firewall drops the hosts SecOps quarantined.

The quarantine list (vault/quarantine.py: one KV record per host) is read every POLL seconds with this
machine's own AppRole, which may list the names and nothing else; the names become addresses through
a file the role writes from the inventory (the list carries no address a collector could choose), and
the addresses go into the nftables set `inet histo quarantined`, which the firewall's input chain drops
before it accepts established traffic: a quarantined host's live connections end too (its ZooKeeper
session among them). A ruleset reload empties the set; the next poll fills it again.

Never dropped, whatever the list says: this machine itself, and the Vault and ZooKeeper nodes (the
guard rails never contain those; a forged record must not cut the cluster off its own coordination).
While Vault is away the set stays as it is: an outage releases nobody."""
from __future__ import annotations

import json
import logging
import subprocess
import time
from typing import Any, Callable, Mapping, Sequence

log = logging.getLogger("histo.secops.fence")

POLL = 2.0
TABLE, SET = "inet histo", "quarantined"
NEVER_DROPPED = ("vault", "zookeeper")


def desired(names: set[str], hosts: Sequence[Mapping[str, Any]], me: str) -> set[str]:
    """The addresses to drop: those of the named hosts, never this machine's, a Vault or ZooKeeper node's."""
    out = set()
    for h in hosts:
        if h.get("name") in names and h.get("name") != me and h.get("role") not in NEVER_DROPPED:
            out.add(str(h["address"]))
    return out


def script(addresses: set[str]) -> str:
    """One nft transaction: the set holds exactly `addresses` (nothing is open between flush and add)."""
    lines = [f"flush set {TABLE} {SET}"]
    if addresses:
        lines.append(f"add element {TABLE} {SET} {{ {', '.join(sorted(addresses))} }}")
    return "\n".join(lines) + "\n"


class NftSet:
    """The live set, through the nft command (`nft` may be prefixed, e.g. by `ip netns exec NS`)."""

    def __init__(self, nft: Sequence[str] = ("nft",), run: Callable[..., Any] = subprocess.run) -> None:
        self.nft, self._run = list(nft), run

    def current(self) -> set[str]:
        out = self._run([*self.nft, "-j", "list", "set", *TABLE.split(), SET], capture_output=True, text=True,
                        timeout=10, check=True).stdout
        found: set[str] = set()
        for item in json.loads(out).get("nftables", []):
            for elem in (item.get("set") or {}).get("elem", []) or []:
                if isinstance(elem, str):
                    found.add(elem)
        return found

    def replace(self, addresses: set[str]) -> None:
        self._run([*self.nft, "-f", "-"], input=script(addresses), capture_output=True, text=True, timeout=10,
                  check=True)


class Fence:
    """Keeps the set equal to the quarantine list: sync() once, run() for ever."""

    def __init__(self, names: Callable[[], set[str]], hosts: Sequence[Mapping[str, Any]], me: str,
                 nft: NftSet, interval: float = POLL) -> None:
        self._names, self.hosts, self.me, self.nft, self.interval = names, list(hosts), me, nft, interval
        self.applied: set[str] | None = None
        self.error = ""

    def sync(self) -> bool:
        """One pass; True if the set was changed. The set is left alone when the list cannot be read."""
        try:
            want = desired(self._names(), self.hosts, self.me)
        except Exception as exc:  # Vault away or refusing: the set stays in force
            self.error = f"quarantine list unavailable: {type(exc).__name__}"
            return False
        try:
            have = self.nft.current()
            if have == want:
                self.applied, self.error = want, ""
                return False
            self.nft.replace(want)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, ValueError, OSError) as exc:
            self.error = f"nft: {type(exc).__name__}: {getattr(exc, 'stderr', '') or exc}".strip()[:200]
            return False
        log.warning("quarantined addresses dropped here: %s (were %s)", sorted(want) or "none", sorted(have) or "none")
        self.applied, self.error = want, ""
        return True

    def run(self, stop: Callable[[], bool] = lambda: False) -> None:
        last_error = ""
        while not stop():
            self.sync()
            if self.error and self.error != last_error:
                log.warning("%s", self.error)
            last_error = self.error
            time.sleep(self.interval)
