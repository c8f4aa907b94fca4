"""Durable jobs, measured (docs/PERFORMANCE.md, "Durable jobs"): upload -> 202 latency with the upload
sealed and stored on both masters, against the code before (same machine, same run: `--baseline REV`
runs this script again on that revision's package); GET /api/v1/jobs with 100 and with 10,000 jobs in the
cluster; bytes on disk per job; znodes per job. Its own cluster on 127.0.30.x. Nothing here is asserted.

    .venv/bin/python bench/durable.py [--baseline 53f6f81] [--out bench/durable.json]
"""
from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
NET = "127.0.30"
LIMITS = {"rate_per_address": 10000.0, "burst_per_address": 20000, "uploads_per_principal": 1000.0,
          "upload_burst": 2000, "max_running_jobs": 64}


def _pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(p * len(s)))]


def up_cluster(name: str, limits: dict[str, Any]) -> tuple[Path, Any]:
    """A local cluster of its own (2 masters, 2 workers) under a temporary folder: (folder, Cluster);
    `local_cluster.down(folder / "c")` ends it."""
    from histo.local import cluster as local_cluster
    from histo.testing.cluster import Cluster

    # a baseline's code (`baseline` below, bench/cpu_ab.py) refuses the settings it does not have yet: they
    # are left out. The services run `python -m histo.cli` from the working folder: its code decides.
    known = set(subprocess.run(
        [sys.executable, "-c", ("import dataclasses, histo.config as c; "
                                "print(*(f.name for f in dataclasses.fields(c.ServiceConfig)))")],
        cwd=Path.cwd(), env={**os.environ, "PYTHONPATH": str(Path.cwd())}, check=True, capture_output=True,
        text=True).stdout.split())
    root = Path(tempfile.mkdtemp(prefix=f"histo-bench-{name}-"))
    info = local_cluster.up(root / "c", masters=2, workers=2, cert_ttl="1h", net=NET,
                            extra={k: v for k, v in limits.items() if k in known})
    return root, Cluster(root=(root / "c").resolve(), env=info["env"])


def measure(label: str) -> dict[str, Any]:
    from histo.local import cluster as local_cluster
    from histo.testing.attacker import zk_client, zk_credentials
    from histo.testing.cluster import sample_image
    from histo.zk.jobs import JobStore

    root, cl = up_cluster("durable", LIMITS)
    out: dict[str, Any] = {"label": label}
    try:
        for size in (256, 1024, 2048):
            data = sample_image(size, size, "JPEG")
            lat = []
            for _ in range(15):
                t = time.perf_counter()
                status, doc = cl.upload(data)
                lat.append(time.perf_counter() - t)
                assert status == 202, doc
                cl.wait_job(doc["id"], timeout=120, long_poll=30)
            out[f"upload_202_{size}"] = {"bytes": len(data), "p50_s": statistics.median(lat), "p90_s": _pct(lat, 0.9)}
        # 100 jobs of one owner (this one's listing), then 9,900 more jobs of other owners in ZooKeeper
        tiny = sample_image(16, 16, "PNG")
        for _ in range(100 - 45):
            status, doc = cl.upload(tiny)
            assert status == 202, doc
        time.sleep(2)

        def listing(repeat: int) -> dict[str, float]:
            lat = []
            for _ in range(repeat):
                t = time.perf_counter()
                status, _, raw = cl.request("GET", "/api/v1/jobs?limit=50", token=cl.token("uploader"))
                lat.append(time.perf_counter() - t)
                assert status == 200, raw[:200]
            return {"p50_s": statistics.median(lat), "p90_s": _pct(lat, 0.9)}
        out["list_at_100"] = listing(20)
        zk = zk_client(cl, "master1", zk_credentials(cl, "master"))
        try:
            store = JobStore(zk)
            out["znodes_at_100"] = store.count_nodes() if hasattr(store, "count_nodes") else None
            t = time.perf_counter()
            for i in range(9900):
                job_id = f"{int(time.time() * 1000):012x}{os.urandom(10).hex()}"
                store.create_job(job_id, {"id": job_id, "owner": f"other{i % 50}", "state": "done", "mode": "gray",
                                          "format": "PNG", "width": 16, "height": 16, "progress": 1.0, "tiles": 1,
                                          "reason": None, "timings": {}, "created": time.time(),
                                          "finished": time.time(), "master": "master1"})
            out["seed_9900_s"] = time.perf_counter() - t
        finally:
            zk.stop()
            zk.close()
        out["list_at_10000"] = listing(5)
        stored = [p.stat().st_size for m in ("master1", "master2") for p in (cl.service_dir(m) / "store").rglob("*")
                  if p.is_file()]
        jobs_run = 45 + 55
        out["bytes_on_disk"] = {"files": len(stored), "total": sum(stored), "jobs": jobs_run,
                                "per_job_both_masters": sum(stored) / jobs_run if stored else 0}
    finally:
        local_cluster.down(root / "c")
        shutil.rmtree(root, ignore_errors=True)
    return out


def baseline(rev: str, script: str = "durable.py") -> dict[str, Any]:
    """`script` (of bench/) run again with `--measure REV` on the package of revision `rev` (its cwd and
    PYTHONPATH point at it, so the services it starts with `python -m histo.cli` run that code too); what
    it printed last, as JSON."""
    tmp = Path(tempfile.mkdtemp(prefix="histo-bench-base-"))
    raw = subprocess.run(["git", "archive", rev, "app/histo"], check=True, capture_output=True,
                         cwd=HERE.parent).stdout
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        tar.extractall(tmp, filter="data")
    env = {**os.environ, "PYTHONPATH": str(tmp / "app")}
    try:
        res = subprocess.run([sys.executable, str(HERE / script), "--measure", rev], cwd=tmp / "app",
                             env=env, check=True, capture_output=True, text=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    measured: dict[str, Any] = json.loads(res.stdout.strip().splitlines()[-1])
    return measured


def arguments(out: Path) -> argparse.Namespace:
    """The options of durable.py and cpu.py: --baseline REV, --out FILE (and --measure, for baseline())."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--baseline", default="", help="also measure this revision (the code before)")
    ap.add_argument("--measure", default="", help=argparse.SUPPRESS)
    ap.add_argument("--out", default=str(out))
    return ap.parse_args()


def main() -> None:
    args = arguments(HERE / "durable.json")
    if args.measure:
        print(json.dumps(measure(args.measure)))
        return
    res: dict[str, Any] = {"when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpus": os.cpu_count()}
    res["durable"] = measure("durable")
    if args.baseline:
        res["before"] = baseline(args.baseline)
    Path(args.out).write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
