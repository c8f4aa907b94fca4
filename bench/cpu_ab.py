#!/usr/bin/env python3
"""The leader's CPU per job, A/B on a shared machine (docs/PERFORMANCE.md, issue 15): two clusters at
once, one on the package of `--baseline REV`, one on this tree's, jobs sent to each one's standby in
turn (A, B, A, B...), so whatever else loads the machine loads both alike. Per cluster: every
process's CPU per job and the leader's per thread (event loop, executor `master-io`, kazoo), from
/proc/<pid>/task; thread names from `py-spy dump` when `--py-spy` names the binary. Nothing asserted.

    cd app && ../.venv/bin/python ../bench/cpu_ab.py --baseline main --side 1024 --rounds 60
"""
from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path

import cpu  # type: ignore[import-not-found]  # bench/cpu.py, beside this script (it honours HISTO_BENCH_NET)
import durable

HERE = Path(__file__).resolve().parent


def thread_names(pid: int, py_spy: str) -> dict[int, str]:
    if not py_spy:
        return {}
    out = subprocess.run([py_spy, "dump", "--pid", str(pid), "--nonblocking"], capture_output=True, text=True).stdout
    return {int(m.group(1), 0): m.group(2) for m in re.finditer(r"Thread (\S+) \(\w+\): \"([^\"]+)\"", out)}


def thread_cpu(pid: int) -> dict[int, float]:
    out = {}
    for t in os.listdir(f"/proc/{pid}/task"):
        try:
            raw = Path(f"/proc/{pid}/task/{t}/stat").read_text()
        except OSError:
            continue
        f = raw[raw.rindex(")") + 2:].split()
        out[int(t)] = (int(f[11]) + int(f[12])) / cpu.TICK
    return out


def main() -> None:
    from histo.local import cluster as local_cluster
    from histo.testing.cluster import sample_image

    ap = argparse.ArgumentParser()
    ap.add_argument("--baseline", default="main")
    ap.add_argument("--side", type=int, default=1024)
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--warm", type=int, default=1, help="jobs per cluster before measuring")
    ap.add_argument("--py-spy", default=shutil.which("py-spy") or "")
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="histo-bench-ab-"))
    raw = subprocess.run(["git", "archive", args.baseline, "app/histo"], check=True, capture_output=True,
                         cwd=HERE.parent).stdout
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        tar.extractall(base, filter="data")
    trees = {args.baseline: base / "app", "this tree": Path.cwd()}
    first, second, third = durable.NET.split(".")
    clusters, info = {}, {}
    here = Path.cwd()
    try:
        for i, (label, tree) in enumerate(trees.items()):
            os.chdir(tree)  # the services run `python -m histo.cli` from here (durable.up_cluster)
            durable.NET = f"{first}.{second}.{int(third) + i}"
            clusters[label] = durable.up_cluster(f"ab{i}", cpu.LIMITS)
        os.chdir(here)
        for label, (_, cl) in clusters.items():
            _, _, body = cl.request("GET", "/api/v1/cluster", token=cl.token("viewer"))
            view = json.loads(body)
            standby = next(m for m in view["masters"] if m["name"] != view["leader"])
            url = next(u for u in cl.urls if cl.config(standby["name"])["address"] in u)
            procs = cpu.processes(cl.root)
            info[label] = (cl, url, procs[view["leader"]], procs)
        data = sample_image(args.side, args.side, "JPEG")

        def job(label: str) -> None:
            cl, url, _, _ = info[label]
            cpu.run_job(cl, url, data)
        for label in info:
            for _ in range(args.warm):
                job(label)
        time.sleep(10.0)  # the key pools filled (32 keys a second), start-up upkeep done
        names = {k: thread_names(v[2], args.py_spy) for k, v in info.items()}
        t0 = {k: thread_cpu(v[2]) for k, v in info.items()}
        p0 = {k: {n: cpu.cpu_s(p) for n, p in v[3].items()} for k, v in info.items()}
        for _ in range(args.rounds):
            for label in info:
                job(label)
        t1 = {k: thread_cpu(v[2]) for k, v in info.items()}
        p1 = {k: {n: cpu.cpu_s(p) for n, p in v[3].items()} for k, v in info.items()}
        for label in info:
            threads: dict[str, float] = {}
            for tid, c in t1[label].items():
                name = re.sub(r"_\d+$", "", names[label].get(tid, "other"))
                threads[name] = threads.get(name, 0.0) + (c - t0[label].get(tid, 0.0)) * 1e3 / args.rounds
            leader = sum(threads.values())
            per = {n: (p1[label][n] - p0[label][n]) * 1e3 / args.rounds for n in p0[label]}
            print(f"{label}: leader {leader:.1f} ms/job; " + ", ".join(
                f"{n} {v:.1f}" for n, v in sorted(threads.items(), key=lambda x: -x[1]) if v > 0))
            print("    every process, ms/job: " + ", ".join(f"{n} {v:.1f}" for n, v in sorted(per.items())))
    finally:
        os.chdir(here)
        for root, _ in clusters.values():
            local_cluster.down(root / "c")
            shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
