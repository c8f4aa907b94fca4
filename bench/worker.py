#!/usr/bin/env python3
"""A worker's CPU per job, step by step, in one process (docs/PERFORMANCE.md, "Worker-side CPU per job"):
a task's steps as worker/service.py runs them (decode and count; the histogram's JSON reply, which only
the two-step protocol before 2026-12-06 had; table, rebuild and encode, the plot, the framing), for the
code of this tree and of `--baseline REV` (its app/histo/compute, imported from a temporary copy),
interleaved run by run, the best of N per step (thread CPU time, so that other processes on the machine
count less). equalize_single beside them.
Nothing here is asserted; the bytes of both versions' equalized images are checked equal.

    .venv/bin/python bench/worker.py [--baseline main] [--out bench/worker.json]
"""
from __future__ import annotations

import argparse
import importlib
import io
import json
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
RUNS = {1024: 25, 4096: 6}  # side: runs of each version
MODES = ("luma", "rgb")
STEPS = ("decode_count", "hist_json", "table", "apply_encode", "plot", "frame")


def load_baseline(rev: str, into: Path) -> ModuleType:
    """REV's app/histo/compute as the package `histo_before.compute` (it imports nothing outside itself)."""
    tar = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "app/histo/compute"], check=True,
                         capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(tar)) as t:
        t.extractall(into, filter="data")
    pkg = into / "histo_before"
    (into / "app" / "histo").rename(pkg)
    (pkg / "__init__.py").write_text("")
    sys.path.insert(0, str(into))
    return importlib.import_module("histo_before.compute")


def job_steps(c: Any, data: bytes, mode: str, size: int, work_mode: str) -> tuple[dict[str, float], bytes]:
    """One job's worker steps with `c` (a compute package): thread CPU seconds per step, the image."""
    t: dict[str, float] = {}

    def step(name: str, fn: Callable[[], Any]) -> Any:
        start = time.thread_time()
        out = fn()
        t[name] = time.thread_time() - start
        return out

    two_steps = hasattr(c.work, "decode_and_count")  # the protocol before one-step tasks
    if two_steps:
        decoded = step("decode_count", lambda: c.work.decode_and_count(data, mode, size, size, work_mode))
        prepared, hist = decoded.prepared, decoded.histogram
        step("hist_json", lambda: json.dumps(hist).encode())
    else:  # compute/work.py equalize_upload, step by step
        def decode_count() -> Any:
            img, fmt = c.imageio.decode(data, size * size)
            p = c.equalize.prepare(img, fmt, mode, consume=True)
            return p, p.work.histogram()
        prepared, hist = step("decode_count", decode_count)
        t["hist_json"] = 0.0  # no histogram travels: the worker derives the table itself
    lut = step("table", lambda: c.equalize.lut_from_histogram(hist))
    result = step("apply_encode", lambda: c.equalize.finish_result(
        prepared, prepared.work.point(list(lut)), hist, consume=not two_steps))
    plot = step("plot", lambda: c.plot.plot_histograms(result.hist_before, result.hist_after, title="0" * 32))
    step("frame", lambda: c.frame.pack_result(result, plot))
    return t, result.image


def measure(before: Any, after: Any) -> dict[str, Any]:
    from histo.compute.imageio import probe
    from histo.testing.cluster import sample_image
    out: dict[str, Any] = {}
    for side, runs in RUNS.items():
        data = sample_image(side, side, "JPEG")
        for mode in MODES:
            work_mode = probe(data, side * side).work_mode(mode)
            best: dict[str, dict[str, float]] = {"before": {}, "after": {}}
            single = float("inf")
            for run in range(runs):
                images = []
                versions = [("before", before), ("after", after)]
                for label, c in versions if run % 2 == 0 else versions[::-1]:  # each first in half the runs
                    t, image = job_steps(c, data, mode, side, work_mode)
                    images.append(image)
                    for k, v in t.items():
                        best[label][k] = min(best[label].get(k, float("inf")), v)
                if images[0] != images[1]:
                    raise SystemExit(f"{side}² {mode}: the two versions' images differ")
                start = time.thread_time()
                after.equalize.equalize_single(data, mode)
                single = min(single, time.thread_time() - start)
            out[f"jpeg_{side}_{mode}"] = {"runs": runs, "bytes": len(data), "single_process_s": single,
                                          "before_s": best["before"], "after_s": best["after"]}
    return out


def strips(cache_bytes: int = 256 << 20) -> dict[str, Any]:
    """A job alone on a worker, as worker/service.py runs it: sequential, in row strips over 2 threads (8
    per thread), and the same with Pillow's block cache — wall and process CPU, median of 7, the same
    bytes. Process CPU counts every thread; other processes on the machine count in the wall time."""
    from concurrent.futures import ThreadPoolExecutor

    from PIL import _imaging as pil_core  # Image.core: Pillow's C module (its block cache)

    from histo.compute.imageio import probe
    from histo.compute.work import equalize_upload
    from histo.testing.cluster import sample_image
    out: dict[str, Any] = {}
    with ThreadPoolExecutor(2) as pool:
        for side in (1024, 2048, 4096):
            data = sample_image(side, side, "JPEG")
            work_mode = probe(data, side * side).work_mode("luma")
            runs: dict[str, list[tuple[float, float]]] = {"sequential": [], "strips": [], "strips_cache": []}
            images = set()
            for _ in range(7):
                for label in runs:
                    pil_core.set_blocks_max(cache_bytes // pil_core.get_block_size() if label == "strips_cache" else 0)
                    w, c = time.perf_counter(), time.process_time()
                    framed = equalize_upload(data, "luma", side, side, work_mode, "t",
                                             pool=None if label == "sequential" else pool, parts=16)
                    runs[label].append((time.perf_counter() - w, time.process_time() - c))
                    images.add(framed)
            if len(images) != 1:
                raise SystemExit(f"{side}²: the strips' result differs from the sequential one")
            out[f"jpeg_{side}_luma"] = {k: {"wall_s": sorted(x[0] for x in v)[3], "cpu_s": sorted(x[1] for x in v)[3]}
                                        for k, v in runs.items()}
    pil_core.set_blocks_max(0)
    return out


def report(r: dict[str, Any]) -> None:
    for key, v in r["figures"].items():
        b, a = v["before_s"], v["after_s"]
        tb, ta = sum(b.values()), sum(a.values())
        print(f"{key} (best of {v['runs']}, thread CPU ms): equalize_single {v['single_process_s'] * 1e3:.1f}")
        for s in STEPS:
            print(f"  {s:13s} {b[s] * 1e3:8.2f} {a[s] * 1e3:8.2f}")
        print(f"  {'total':13s} {tb * 1e3:8.2f} {ta * 1e3:8.2f}   ÷ one process: "
              f"{tb / v['single_process_s']:.2f}× → {ta / v['single_process_s']:.2f}×")
    for key, v in r.get("strips", {}).items():
        seq = v["sequential"]
        print(f"{key} alone on a worker (median of 7, ms wall / CPU): " + ", ".join(
            f"{k} {x['wall_s'] * 1e3:.0f} / {x['cpu_s'] * 1e3:.0f} ({x['wall_s'] / seq['wall_s']:.2f}× wall)"
            for k, x in v.items()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", default="main", help="the revision whose compute is 'before'")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "worker.json")
    args = ap.parse_args()
    rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", args.baseline], check=True,
                         capture_output=True, text=True).stdout.strip()
    here = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], check=True,
                          capture_output=True, text=True).stdout.strip()
    import histo.compute
    after = histo.compute
    for name in ("work", "equalize", "plot", "frame"):
        importlib.import_module(f"histo.compute.{name}")
    with tempfile.TemporaryDirectory() as tmp:
        before = load_baseline(args.baseline, Path(tmp))
        for name in ("work", "equalize", "plot", "frame"):
            importlib.import_module(f"histo_before.compute.{name}")
        r = {"baseline": rev, "head": here, "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
             "figures": measure(before, after), "strips": strips()}
    args.out.write_text(json.dumps(r, indent=1) + "\n")
    report(r)


if __name__ == "__main__":
    main()
