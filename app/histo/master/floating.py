"""The cluster's one public address (HISTO_URL) stays valid when a master dies.

On the machines, keepalived (roles/keepalived, VRRP between the masters) holds the floating address on
one master: its check script reads the state this master publishes here — `leader`, `standby` or
`starting`, with the process id — so the address goes to a serving master, preferably a standby (a
standby receives, stores and serves jobs itself; the leader keeps its CPU for scheduling them), and
leaves a master whose process died or stopped serving within the check's interval. The master only
reports; moving the address is keepalived's.

In local mode every address is loopback and there is no VRRP: each serving master also listens on the
floating address with SO_REUSEPORT (the kernel spreads connections over the listening processes and
drops a dead one's socket at once; only processes of the same user can join the group)."""
from __future__ import annotations

import os
from pathlib import Path

STATES = ("leader", "standby", "starting")


def state_of(ready: bool, leader: bool) -> str:
    if not ready:
        return "starting"
    return "leader" if leader else "standby"


class StateFile:
    """The state keepalived's check reads: one line, `<state> <pid>`, replaced atomically, written
    only when it changes; removed when the master stops (the check then fails at once)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._last: str | None = None

    def publish(self, state: str) -> bool:
        """Write the state if it changed; True if it was written."""
        if state not in STATES:
            raise ValueError(f"unknown state {state!r}")
        line = f"{state} {os.getpid()}\n"
        if line == self._last:
            return False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)  # not a secret: who leads
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        self._last = line
        return True

    def withdraw(self) -> None:
        self._last = None
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
