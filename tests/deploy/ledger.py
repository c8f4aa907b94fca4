"""When each acceptance test ran, and whether it is a drill (issue 18, item 5: no false alarms).

tests/deploy/conftest.py records every test's window (setup to teardown, its fixtures included) here;
test_zz_false_alarms.py, which runs after every other test, holds each incident the SecOps record
opened during the run against them: every piece of an incident's opening evidence must fall inside
the window of a test marked `drill` (one that attacks on purpose). A refusal raised while a legitimate
test ran (a restart, a failover, a re-provisioning, an upload) that opens an incident is a false alarm."""
from __future__ import annotations

import time
from dataclasses import dataclass

# Seconds a drill's refusals may still arrive after it ends: its probes' last packets, a retry the
# attacked service makes. Small on purpose: a longer grace would excuse the legitimate test after it.
GRACE = 10.0


@dataclass(frozen=True)
class Window:
    test: str
    start: float
    end: float
    drill: bool

    def holds(self, ts: float) -> bool:
        return self.start - 1.0 <= ts <= self.end + (GRACE if self.drill else 0.0)


LEDGER: list[Window] = []


def record(test: str, start: float, drill: bool) -> None:
    LEDGER.append(Window(test, start, time.time(), drill))


def explain(ts: float) -> Window | None:
    """The drill whose window holds `ts`, else the (legitimate) test that ran then, else None."""
    held = [w for w in LEDGER if w.holds(ts)]
    return next((w for w in held if w.drill), held[0] if held else None)
