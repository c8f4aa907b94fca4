"""Detection latency per layer, from the cluster drills (issue 17 item 5; for docs/PERFORMANCE.md):
tests/deploy/test_drills.py appends, for every refusal a drill must leave on the SecOps API, a row
{drill, layer, host, seconds, drill_seconds, at} to test-artifacts/detection.json. `seconds` runs from
the drill's start to the poll (every 0.5 s) that first saw the refusal on one master's
GET /api/v1/secops/events: an upper bound of detection, the drill's own steps before it included
(`drill_seconds` is how long the drill ran). Prints n, p50, p99 and max per layer, and per drill; the
file holds every run since it was made (`--since` keeps the rows of runs that started after a time).

    .venv/bin/python bench/detection.py [--file test-artifacts/detection.json] [--since UNIX_TIME] [--json]

Nothing is measured here and nothing asserted: it only summarizes what `make deploy-test` recorded."""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any, Iterable, Mapping

ROOT = Path(__file__).resolve().parents[1]
ARTIFACT = ROOT / "test-artifacts" / "detection.json"


def stats(values: Iterable[float]) -> dict[str, float]:
    """n, p50 (the median), p99 (nearest rank: with fewer than 100 samples, the largest) and max."""
    s = sorted(values)
    if not s:
        raise ValueError("no values")
    return {"n": len(s), "p50_s": round(statistics.median(s), 1),
            "p99_s": round(s[min(len(s) - 1, int(0.99 * len(s)))], 1), "max_s": round(s[-1], 1)}


def by(rows: Iterable[Mapping[str, Any]], key: str) -> dict[str, dict[str, float]]:
    groups: dict[str, list[float]] = {}
    for r in rows:
        groups.setdefault(str(r[key]), []).append(float(r["seconds"]))
    return {k: stats(v) for k, v in sorted(groups.items())}


def main() -> None:
    ap = argparse.ArgumentParser(prog="bench/detection.py", description=__doc__.split("\n")[0])
    ap.add_argument("--file", default=str(ARTIFACT))
    ap.add_argument("--since", type=float, default=0.0, help="only drills started at or after this Unix time")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    a = ap.parse_args()
    path = Path(a.file)
    if not path.exists():
        sys.exit(f"{path}: no such file (make deploy-test writes it: tests/deploy/test_drills.py)")
    rows = [r for r in json.loads(path.read_text()) if float(r.get("at", 0)) >= a.since]
    if not rows:
        sys.exit(f"{path}: no row{' since ' + str(a.since) if a.since else ''}")
    layers, drills = by(rows, "layer"), by(rows, "drill")
    if a.json:
        print(json.dumps({"layers": layers, "drills": drills, "rows": len(rows)}, indent=1))
        return
    runs = len({r.get("at") for r in rows})
    print(f"{len(rows)} detections from {runs} drill run(s) in {path}")
    print(f"{'layer':<11} {'n':>4} {'p50 s':>7} {'p99 s':>7} {'max s':>7}")
    for layer, s in layers.items():
        print(f"{layer:<11} {s['n']:>4} {s['p50_s']:>7.1f} {s['p99_s']:>7.1f} {s['max_s']:>7.1f}")
    print(f"\n{'drill':<32} {'n':>4} {'p50 s':>7} {'max s':>7}")
    for drill, s in drills.items():
        print(f"{drill:<32} {s['n']:>4} {s['p50_s']:>7.1f} {s['max_s']:>7.1f}")


if __name__ == "__main__":
    main()
