#!/usr/bin/env python3
"""CPU per job, per process (docs/PERFORMANCE.md, "Where the CPU goes"): a cluster of its own on
127.0.30.x (2 masters, 2 workers), jobs sent one at a time to the *standby* master (the worst case for
relaying), each process's utime + stime read from /proc/<pid>/stat before and after; the same job in
one process (equalize_single) beside it; then 8 clients at once against a 2-process pool. `--baseline
REV` runs the same on the package of REV (the code before), in the same run. Nothing here is asserted.

    .venv/bin/python bench/cpu.py [--baseline main] [--out bench/cpu.json]

The services it starts run `python -m histo.cli` from the current directory (procs.clean_env passes
no PYTHONPATH): run it from a folder whose `histo` is the code to measure (a checkout's app/), or the
virtualenv's editable install is what runs.
"""
from __future__ import annotations

import concurrent.futures
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import durable
from durable import arguments, baseline, up_cluster  # bench/durable.py, beside this script

# another /24 of loopback (HISTO_BENCH_NET=127.0.79), so that two checkouts can measure at once
durable.NET = os.environ.get("HISTO_BENCH_NET", durable.NET)

HERE = Path(__file__).resolve().parent
LIMITS = {"rate_per_address": 10000.0, "burst_per_address": 20000, "uploads_per_principal": 1000.0,
          "upload_burst": 2000, "max_running_jobs": 64, "max_upload_bytes": 256 * 1024 * 1024, "job_timeout": 300.0,
          "pixels_per_principal": 10**12,  # the benchmark measures CPU, not admission
          # a few jobs, each verified or not by chance, would make every figure jump: the sampled
          # verification costs f x the workers' CPU per job on average (docs/PERFORMANCE.md), reported apart
          "verify_fraction": 0.0}
TICK = os.sysconf("SC_CLK_TCK")
SIZES = ((1024, 20), (4096, 4))  # (side, jobs) of the JPEG sent one at a time
IDLE_S = 5.0  # seconds of no job, to tell each process's background CPU from its CPU per job


def cpu_s(pid: int) -> float:
    """utime + stime of `pid` in seconds (fields 14 and 15 of /proc/<pid>/stat)."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    fields = raw[raw.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def run_job(cl: Any, url: str, data: bytes) -> None:
    """One job as a client runs it: upload, long-poll until it ends, download the result."""
    status, doc = cl.upload(data, url=url)
    if status != 202:
        raise RuntimeError(f"upload refused: {status} {doc}")
    done = cl.wait_job(doc["id"], url=url, timeout=300, poll=0.005, long_poll=30)
    status, _, _ = cl.request("GET", f"/api/v1/jobs/{doc['id']}/result", token=cl.token("uploader"), url=url)
    if done["state"] != "done" or status != 200:
        raise RuntimeError(f"job {done['state']}: {done.get('reason')}")


def processes(root: Path) -> dict[str, int]:
    """Every process of the cluster by the folder of its pid file (master1, worker1, bao, zk1...)."""
    out = {}
    for pid_file in [*root.rglob("pid"), *root.rglob("*.pid")]:
        try:
            pid = int(pid_file.read_text().split()[0])
            cpu_s(pid)
        except (OSError, ValueError, IndexError):
            continue
        out[pid_file.parent.name if pid_file.name == "pid" else pid_file.stem] = pid
    return out


def measure(label: str) -> dict[str, Any]:
    from histo.compute.equalize import equalize_single
    from histo.local import cluster as local_cluster
    from histo.testing.cluster import sample_image

    root, cl = up_cluster("cpu", LIMITS)
    out: dict[str, Any] = {"label": label}
    try:
        _, _, raw = cl.request("GET", "/api/v1/cluster", token=cl.token("viewer"))
        view = json.loads(raw)
        leader = view["leader"]
        standby = next(m for m in view["masters"] if m["name"] != leader)
        url = next(u for u in cl.urls if cl.config(standby["name"])["address"] in u)
        procs = processes(cl.root)
        time.sleep(2.0)  # start-up upkeep (repair pass, first probes) out of the way
        idle0, t_idle = {n: cpu_s(p) for n, p in procs.items()}, time.perf_counter()
        time.sleep(IDLE_S)
        idle_span = time.perf_counter() - t_idle
        idle = {n: (cpu_s(p) - idle0[n]) / idle_span for n, p in procs.items()}  # CPU s per s, no job running
        out["idle_cpu_per_s"] = idle

        def job(data: bytes) -> None:
            run_job(cl, url, data)
        for side, jobs in SIZES:
            data = sample_image(side, side, "JPEG")
            job(data)  # warm: connections, keys, caches
            t = time.process_time()
            for _ in range(jobs):
                equalize_single(data, "luma")
            single = (time.process_time() - t) / jobs
            before = {n: cpu_s(p) for n, p in procs.items()}
            t = time.perf_counter()
            for _ in range(jobs):
                job(data)
            wall = (time.perf_counter() - t) / jobs
            per = {n: (cpu_s(p) - before[n]) / jobs for n, p in procs.items()}
            # net of what each process spends with no job at all (probes, upkeep, ZooKeeper's own ticks)
            net = {n: max(0.0, v - idle[n] * wall) for n, v in per.items()}
            roles = by_role(per, leader, standby["name"])
            out[f"jpeg_{side}"] = {"bytes": len(data), "single_process_cpu_s": single, "wall_s": wall,
                                   "per_process_cpu_s": per, "cpu_s": roles,
                                   "net_of_idle_cpu_s": by_role(net, leader, standby["name"]),
                                   "leader_share_of_single": roles["leader"] / single,
                                   "total_over_single": roles["total"] / single,
                                   "scale_out_ceiling_workers": single / max(roles["leader"], 1e-9)}
        out["throughput"] = throughput(sample_image(1024, 1024, "JPEG"), job, equalize_single)
    finally:
        local_cluster.down(root / "c")
        shutil.rmtree(root, ignore_errors=True)  # its env file, tokens and keys go with it
    return out


def by_role(per: dict[str, float], leader: str, standby: str) -> dict[str, float]:
    roles = {"leader": per.get(leader, 0.0), "standby": per.get(standby, 0.0),
             "workers": sum(v for n, v in per.items() if n.startswith("worker")),
             "zookeeper": sum(v for n, v in per.items() if n.startswith("zk")),
             "openbao": sum(v for n, v in per.items() if "bao" in n)}
    roles["total"] = sum(per.values())
    return roles


def throughput(data: bytes, job: Any, single: Any, jobs: int = 40, clients: int = 8) -> dict[str, Any]:
    t = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        list(pool.map(lambda _: job(data), range(jobs)))
    cluster_rate = jobs / (time.perf_counter() - t)
    t = time.perf_counter()
    with concurrent.futures.ProcessPoolExecutor(2) as pool:
        list(pool.map(single, [data] * jobs))
    pool_rate = jobs / (time.perf_counter() - t)
    return {"jobs": jobs, "clients": clients, "cluster_jobs_per_s": cluster_rate, "pool_2_jobs_per_s": pool_rate,
            "ratio": cluster_rate / pool_rate}


def report(r: dict[str, Any]) -> None:
    for label in ("before", "after"):
        m = r.get(label)
        if not m:
            continue
        print(f"\n{label} ({m['label']}): CPU ms per job, sent to the standby (net of idle in brackets)")
        for key in ("jpeg_1024", "jpeg_4096"):
            e = m[key]
            net = e["net_of_idle_cpu_s"]
            cells = ", ".join(f"{k} {v * 1e3:.0f} ({net[k] * 1e3:.0f})" for k, v in e["cpu_s"].items())
            print(f"  {key}: {cells}; one process {e['single_process_cpu_s'] * 1e3:.0f}; leader x"
                  f"{e['leader_share_of_single']:.2f}, total x{e['total_over_single']:.2f} of one process; "
                  f"scale-out ceiling {e['scale_out_ceiling_workers']:.1f} workers; wall {e['wall_s'] * 1e3:.0f} ms")
        t = m["throughput"]
        print(f"  throughput {t['clients']} clients 1024² JPEG: {t['cluster_jobs_per_s']:.2f} jobs/s vs "
              f"{t['pool_2_jobs_per_s']:.2f} in a 2-process pool (x{t['ratio']:.2f})")


def main() -> None:
    args = arguments(HERE / "cpu.json")
    if args.measure:
        print(json.dumps(measure(args.measure)))
        return
    res: dict[str, Any] = {"when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpus": os.cpu_count()}
    if args.baseline:
        res["before"] = baseline(args.baseline, "cpu.py")
    res["after"] = measure("this tree")
    Path(args.out).write_text(json.dumps(res, indent=2))
    report(res)
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
