"""What every drill of `make attack` shares, local (local.py) or deployed (cli.py and its modules): the
outcome of one drill, the loop that runs drills and prints what each tried, what happened and whether
the control held, and the SecOps event that makes each drill visible on the dashboard."""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from typing import Callable, Iterable

# The fixed shape of POST /api/v1/events (app/histo/edge/openapi.py: DRILL_EVENT, DRILL_FIELDS).
_LIMITS = {"drill": 80, "tried": 300, "happened": 500}


@dataclass
class Outcome:
    drill: str
    tried: str
    happened: str
    held: bool
    seconds: float = 0.0

    def line(self) -> str:
        return f"[{'HELD' if self.held else 'FAILED'}] {self.drill}: tried {self.tried} -> {self.happened}"

    def as_dict(self) -> dict:
        return asdict(self)

    def event_body(self) -> bytes:
        """The body of the drill's SecOps event (fields cut to the endpoint's bounds)."""
        fields = {k: str(getattr(self, k))[:n] for k, n in _LIMITS.items()}
        return json.dumps({**fields, "held": self.held}).encode()


Drill = Callable[[], Outcome]
Poster = Callable[[Outcome], str]


def run_drills(drills: Iterable[tuple[str, Drill]], post: Poster | None = None, out=print) -> list[Outcome]:
    """Runs each drill; a drill that cannot run counts as a control that did not hold. After each
    drill, `post` records it as a SecOps event and says where it went (printed beside the outcome)."""
    results = []
    for name, drill in drills:
        t0 = time.monotonic()
        try:
            result = drill()
        except Exception as exc:
            result = Outcome(name, "the drill", f"could not run: {type(exc).__name__}: {str(exc)[:300]}", False)
        result.seconds = round(time.monotonic() - t0, 1)
        out(f"{result.line()}  ({result.seconds:.1f}s)")
        if post is not None:
            try:
                where = post(result)
            except Exception as exc:
                where = f"not recorded ({type(exc).__name__})"
            out(f"    dashboard: {where}")
        results.append(result)
    return results


def summary(results: list[Outcome]) -> str:
    held = sum(r.held for r in results)
    return f"{held} held, {len(results) - held} failed, {sum(r.seconds for r in results):.0f}s in all"
