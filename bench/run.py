#!/usr/bin/env python3
"""histo benchmarks (`make bench`): every figure beside its same-run baseline and the ratio.

Brings up its own local clusters (127.0.30.x, temporary state folders), measures, tears them down,
prints a table and writes bench/results.json. Nothing here is asserted by a test."""
from __future__ import annotations

import argparse
import concurrent.futures
import functools
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

from kernel import kernel  # bench/kernel.py, beside this script

from histo.compute.equalize import equalize_single
from histo.local import cluster as local_cluster
from histo import procs
from histo.testing.cluster import Cluster, sample_image

HERE = Path(__file__).resolve().parent
NET = "127.0.30"
LIMITS = {"rate_per_address": 10000.0, "burst_per_address": 10000, "uploads_per_principal": 10000.0,
          "upload_burst": 10000, "max_upload_bytes": 256 * 1024 * 1024, "job_timeout": 300.0,
          "pixels_per_principal": 10**12,  # the benchmark measures speed, not admission
          "verify_fraction": 0.0}  # a verified job is computed twice: its cost is reported apart (bench/cpu.py)


def best_of(fn, repeat: int = 3) -> float:
    return min(_timed(fn) for _ in range(repeat))


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def one_job(cl: Cluster, data: bytes, mode: str = "luma") -> tuple[float, dict]:
    t = time.perf_counter()
    status, doc = cl.upload(data, mode=mode)
    if status != 202:
        raise RuntimeError(f"upload refused: {status} {doc}")
    job = cl.wait_job(doc["id"], timeout=300, poll=0.005, long_poll=30)
    status, _, _ = cl.request("GET", f"/api/v1/jobs/{doc['id']}/result", token=cl.token("uploader"))
    elapsed = time.perf_counter() - t
    if job["state"] != "done" or status != 200:
        raise RuntimeError(f"job {job['state']}: {job.get('reason')}")
    return elapsed, job


def up(root: Path, cert_ttl: str) -> Cluster:
    info = local_cluster.up(root, masters=2, workers=2, cert_ttl=cert_ttl, net=NET, extra=LIMITS)
    return Cluster(root=root.resolve(), env=info["env"])


def end_to_end(cl: Cluster, big: int) -> list[dict]:
    rows = []
    for size, fmt in ((1024, "JPEG"), (1024, "PNG"), (big, "JPEG"), (big, "PNG")):
        data = sample_image(size, size, fmt)
        base = best_of(functools.partial(equalize_single, data, "luma"))
        runs = [one_job(cl, data) for _ in range(3)]
        fastest = min(runs, key=lambda r: r[0])
        rows.append({"image": f"{size}x{size} {fmt}", "bytes": len(data), "single_process_s": base,
                     "cluster_s": fastest[0], "ratio": fastest[0] / base, "phases": fastest[1]["timings"]})
    return rows


def _single(data: bytes) -> None:
    equalize_single(data, "luma")


def throughput(cl: Cluster, jobs: int, clients: int) -> dict:
    data = sample_image(1024, 1024, "JPEG")
    t = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        latencies = [r[0] for r in pool.map(lambda _: one_job(cl, data), range(jobs))]
    cluster_s = time.perf_counter() - t
    t = time.perf_counter()
    with concurrent.futures.ProcessPoolExecutor(os.cpu_count()) as pool:  # the same cores, no cluster
        list(pool.map(_single, [data] * jobs))
    base_s = time.perf_counter() - t
    serial_s = _timed(lambda: [equalize_single(data, "luma") for _ in range(jobs)])
    return {"jobs": jobs, "clients": clients, "cluster_jobs_per_s": jobs / cluster_s,
            "single_process_pool_jobs_per_s": jobs / base_s, "ratio": (jobs / cluster_s) / (jobs / base_s),
            "one_process_serial_jobs_per_s": jobs / serial_s,
            "p50_s": statistics.median(latencies), "p99_s": _pct(latencies, 99)}


def _pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def latency_window(cl: Cluster, seconds: float) -> dict:
    data = sample_image(256, 256, "JPEG")
    latencies, failures = [], 0
    deadline = time.time() + seconds
    rotations0 = _rotations(cl)

    def loop() -> None:
        nonlocal failures
        while time.time() < deadline:
            try:
                latencies.append(one_job(cl, data)[0])
            except Exception:
                failures += 1
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda _: loop(), range(4)))
    return {"requests": len(latencies), "failures": failures, "p50_s": statistics.median(latencies),
            "p99_s": _pct(latencies, 99), "rotations": _rotations(cl) - rotations0}


def _rotations(cl: Cluster) -> int:
    total = 0
    for url in cl.urls:
        _, _, raw = cl.request("GET", "/api/v1/cluster", token=cl.token("viewer"), url=url)
        total += json.loads(raw)["self"]["certificate"]["rotations"]
    return total


def startup(cl: Cluster, name: str) -> dict:
    """A master's restart, timed to its first /readyz 200 and to the first upload it accepts (202):
    ready means that upload works; the second figure is the one a user feels."""
    sdir = cl.service_dir(name)
    procs.stop(sdir / "pid", f"--config {sdir / 'config.json'}")
    url = f"https://{cl.config(name)['address']}:{cl.config(name)['public_port']}"
    image = sample_image(64, 48, "PNG")
    t = time.perf_counter()
    cl.restart(name)
    ready_s = None
    while time.perf_counter() - t < 60:
        try:
            if ready_s is None:
                status, _, raw = cl.request("GET", "/readyz", url=url, timeout=2)
                if status == 200:
                    ready_s, startup_doc = time.perf_counter() - t, json.loads(raw)["startup"]
            else:
                status, _doc = cl.upload(image, url=url)
                if status == 202:
                    return {"process_start_to_ready_s": ready_s,
                            "process_start_to_first_accepted_upload_s": time.perf_counter() - t, **startup_doc}
        except OSError:
            pass
        time.sleep(0.02)
    raise RuntimeError(f"{name} not ready in 60 s")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="2048² instead of 4096², fewer jobs")
    ap.add_argument("--out", default=str(HERE / "results.json"))
    args = ap.parse_args()
    big = 2048 if args.quick else 4096
    res: dict = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                             "platform": platform.platform()},
                 "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    print("kernel ...", flush=True)
    res["kernel"] = kernel(mode="RGB")
    res["kernel_luma"] = kernel(mode="L")
    root = Path(tempfile.mkdtemp(prefix="histo-bench-"))
    t = time.perf_counter()
    cl = up(root / "steady", "1h")
    res["make_local_cold_s"] = time.perf_counter() - t
    try:
        print("end to end ...", flush=True)
        res["end_to_end"] = end_to_end(cl, big)
        print("throughput ...", flush=True)
        res["throughput"] = throughput(cl, 40 if args.quick else 100, 8)
        print("steady latency ...", flush=True)
        res["latency_steady"] = latency_window(cl, 20 if args.quick else 40)
        print("start-up ...", flush=True)
        res["startup_master"] = startup(cl, "master2")
    finally:
        local_cluster.down(root / "steady")
    cl = up(root / "rotating", "20s")
    try:
        print("latency while rotating ...", flush=True)
        res["latency_rotating"] = latency_window(cl, 20 if args.quick else 40)
    finally:
        local_cluster.down(root / "rotating")
    Path(args.out).write_text(json.dumps(res, indent=2))
    report(res)
    print(f"written to {args.out}")


def report(r: dict) -> None:
    print(f"\nmachine: {r['machine']['cpus']} cpus, Python {r['machine']['python']}")
    for k in (r["kernel"], r["kernel_luma"]):
            print(f"kernel {k['image']}, {k['tiles']} tiles: histogram {k['tiled_histogram_s'] * 1e3:.1f} ms vs Pillow "
              f"{k['pillow_histogram_s'] * 1e3:.1f} ms (throughput x{k['histogram_throughput_ratio']:.2f}); apply "
              f"{k['tiled_apply_s'] * 1e3:.1f} ms vs {k['pillow_point_s'] * 1e3:.1f} ms "
              f"(x{k['apply_throughput_ratio']:.2f}); a worker's kernel is Pillow's whole-image call (x1.00); "
              f"the master's check of a result {k['master_check_s'] * 1e6:.0f} µs"
              + (f"; np.histogram {k['numpy_histogram_s'] * 1e3:.0f} ms" if "numpy_histogram_s" in k else ""))
    print(f"make local, cold: {r['make_local_cold_s']:.1f} s")
    print(f"\n{'image':<16}{'bytes':>11}{'1 process':>11}{'cluster':>10}{'ratio':>7}")
    for e in r["end_to_end"]:
        print(f"{e['image']:<16}{e['bytes']:>11}{e['single_process_s']:>10.3f}s{e['cluster_s']:>9.3f}s{e['ratio']:>7.2f}")
        print("    " + ", ".join(f"{p} {v * 1000:.0f}" for p, v in e["phases"].items()) + " (ms)")
    t = r["throughput"]
    print(f"\nthroughput: {t['jobs']} jobs 1024² JPEG, {t['clients']} clients: {t['cluster_jobs_per_s']:.2f} jobs/s vs "
          f"{t['single_process_pool_jobs_per_s']:.2f} jobs/s in a local process pool (x{t['ratio']:.2f}), "
          f"{t['one_process_serial_jobs_per_s']:.2f} jobs/s in one process; "
          f"p50 {t['p50_s'] * 1e3:.0f} ms p99 {t['p99_s'] * 1e3:.0f} ms")
    s, o = r["latency_steady"], r["latency_rotating"]
    print(f"latency 256² jobs, 4 clients: steady p50 {s['p50_s'] * 1e3:.0f} ms p99 {s['p99_s'] * 1e3:.0f} ms "
          f"({s['requests']} jobs, {s['failures']} failed); rotating every ~7 s: p50 {o['p50_s'] * 1e3:.0f} ms p99 "
          f"{o['p99_s'] * 1e3:.0f} ms ({o['requests']} jobs, {o['failures']} failed, {o['rotations']} rotations)")
    print(f"master start -> ready: {json.dumps(r['startup_master'])}")


if __name__ == "__main__":
    main()
