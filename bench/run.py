#!/usr/bin/env python3
"""histo benchmarks: figures measured side by side in one run, each with its same-run baseline.

Brings up its own local cluster (127.0.30.x, a temporary state folder), measures, tears it down,
prints a table and writes bench/results.json. No figure here is asserted by a test."""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from histo.compute.equalize import equalize_single  # noqa: E402
from histo.local import procs  # noqa: E402
from tests.integration.cluster_fixture import Cluster, sample_image  # noqa: E402
from histo.local import cluster as local_cluster  # noqa: E402

NET = "127.0.30"


def timed(fn, repeat: int = 3) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def end_to_end(cl: Cluster, data: bytes, mode: str = "luma") -> tuple[float, dict]:
    t = time.perf_counter()
    status, doc = cl.upload(data, mode=mode)
    assert status == 202, doc
    job = cl.wait_job(doc["id"], timeout=300)
    status, _, body = cl.request("GET", f"/api/v1/jobs/{doc['id']}/result", token=cl.token("uploader"))
    elapsed = time.perf_counter() - t
    assert job["state"] == "done" and status == 200, job
    return elapsed, job


def startup(cl: Cluster, name: str) -> dict:
    sdir = cl.service_dir(name)
    procs.stop(sdir / "pid", f"--config {sdir / 'config.json'}")
    url = f"https://{cl.config(name)['address']}:{cl.config(name)['public_port']}"
    t = time.perf_counter()
    cl.restart(name)
    while True:
        try:
            status, _, raw = cl.request("GET", "/readyz", url=url, timeout=2)
            if status == 200:
                doc = json.loads(raw)
                return {"process_to_ready_s": time.perf_counter() - t, **doc.get("startup", {})}
        except OSError:
            pass
        if time.perf_counter() - t > 60:
            raise RuntimeError(f"{name} not ready in 60 s")
        time.sleep(0.02)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="smaller images, fewer repeats")
    ap.add_argument("--out", default=str(HERE / "results.json"))
    args = ap.parse_args()
    big = 2048 if args.quick else 4096
    root = Path(tempfile.mkdtemp(prefix="histo-bench-")) / "local"
    t = time.perf_counter()
    info = local_cluster.up(root, masters=2, workers=2, cert_ttl="1h", net=NET)
    local_up_s = time.perf_counter() - t
    cl = Cluster(root=root.resolve(), env=info["env"])
    results: dict = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                 "platform": platform.platform()}, "local_up_s": local_up_s}
    try:
        rows = []
        for size, fmt in ((1024, "JPEG"), (1024, "PNG"), (big, "JPEG"), (big, "PNG")):
            data = sample_image(size, size, fmt)
            base_s, _ = timed(lambda: equalize_single(data, "luma"))
            runs = [end_to_end(cl, data) for _ in range(3)]
            dist_s = min(r[0] for r in runs)
            timings = min(runs, key=lambda r: r[0])[1]["timings"]
            rows.append({"image": f"{size}x{size} {fmt}", "bytes": len(data), "single_process_s": base_s,
                         "cluster_s": dist_s, "ratio": dist_s / base_s, "phases": timings})
        results["end_to_end"] = rows
        results["startup"] = {"worker_timings": _log_timings(cl, "worker2"), "master2": startup(cl, "master2")}
    finally:
        local_cluster.down(root)
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(f"\nmake local (cold, from nothing to ready): {local_up_s:.1f} s")
    print(f"{'image':<16}{'bytes':>12}{'1 process':>12}{'cluster':>10}{'ratio':>8}")
    for r in results["end_to_end"]:
        print(f"{r['image']:<16}{r['bytes']:>12}{r['single_process_s']:>11.3f}s{r['cluster_s']:>9.3f}s{r['ratio']:>8.2f}")
        print("    phases: " + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in r["phases"].items()))
    print(f"master start -> ready: {json.dumps(results['startup'])}")
    print(f"written to {args.out}")


def _log_timings(cl: Cluster, name: str) -> dict:
    for line in reversed((cl.service_dir(name) / "service.log").read_text().splitlines()):
        if " ready on " in line and " in " in line:
            return {"ready_line": line.split(" ready on ")[1]}
    return {}


if __name__ == "__main__":
    main()
