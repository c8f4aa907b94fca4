"""`make soak`: the local cluster with compressed lifetimes (lifetimes.py) under continuous load,
through one live PKI intermediate rotation, kill -9 of each kind of service, a ZooKeeper restart and
Vault stopped for a minute. It
reports jobs run and failed, how many times each credential renewed (counted in Vault's own audit
log: what Vault actually issued), and job latency (upload to done) near a renewal against steady
state. Its own cluster on 127.0.31.x and state in .histo/soak; nothing here is asserted (the
numbers go to docs/PERFORMANCE.md).

    .venv/bin/python bench/soak.py [--minutes 20] [--out bench/soak.json]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
NET = "127.0.31"
LIMITS = {"rate_per_address": 10000.0, "burst_per_address": 20000, "uploads_per_principal": 1000.0,
          "upload_burst": 2000}
# Vault requests that are a renewal of one credential kind (the audit log's request paths).
KINDS: dict[str, Callable[[str], bool]] = {
    "service certificate": lambda p: p.startswith(("pki_int/issue/host-master", "pki_int/issue/host-worker")),
    "zookeeper certificate": lambda p: p.startswith("pki_int/issue/host-zk"),
    "zookeeper quorum certificate": lambda p: p.startswith("pki_zk_quorum/issue/"),
    "vault listener certificate": lambda p: p.startswith("pki_vault/issue/listener-"),
    "vault token renewal": lambda p: p == "auth/token/renew-self",
    "approle login": lambda p: p == "auth/approle/login",
    "secret_id": lambda p: p.startswith("auth/approle/role/histo-") and p.endswith("/secret-id"),
    "api token (env file)": lambda p: p == "transit/sign/histo-tokens",
}
NEAR = 3.0  # seconds: a job is "during a renewal" when a renewal request falls within its run ± this


def _pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return round(s[min(len(s) - 1, int(p * len(s)))], 3) if s else 0.0


def _audit(path: Path) -> list[tuple[float, str]]:
    """(time, path) of every successful request Vault answered."""
    out = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            e = json.loads(line)
        except ValueError:
            continue
        if e.get("type") != "response" or e.get("error"):
            continue
        stamp = datetime.fromisoformat(re.sub(r"(\.\d{6})\d*", r"\1", e["time"]).replace("Z", "+00:00")).timestamp()
        out.append((stamp, e["request"]["path"]))
    return out


class Load(threading.Thread):
    """Uploads one small image after the other, and waits for each job; never stops on an error."""

    def __init__(self, cl: Any, image: bytes) -> None:
        super().__init__(daemon=True)
        self.cl, self.image = cl, image
        self.stop = threading.Event()
        self.jobs: list[tuple[float, float, str]] = []  # (start, end, "done" | failure)

    def run(self) -> None:
        while not self.stop.is_set():
            t0 = time.time()
            try:
                status, doc = self.cl.upload(self.image)
                if status != 202:
                    outcome = f"upload {status} {doc.get('error')}"
                else:
                    outcome = self.cl.wait_job(doc["id"], timeout=120)["state"]
            except Exception as exc:
                outcome = f"{type(exc).__name__}: {exc}"[:120]
            self.jobs.append((t0, time.time(), outcome))
            time.sleep(0.2)


def soak(minutes: float, root: Path) -> dict[str, Any]:
    from histo.lifetimes import profile, seconds
    from histo.local import cluster as local_cluster
    from histo.local.bao import BaoServer
    from histo.local.zkserver import ZkServer
    from histo.testing.cluster import Cluster, sample_image

    life = profile("compressed")

    def up() -> Cluster:
        info = local_cluster.up(root, lifetimes=life, net=NET, extra=LIMITS, ready_timeout=180)
        return Cluster(root=root.resolve(), env=info["env"])

    cl = up()
    load = Load(cl, sample_image(320, 240, "PNG"))
    events: list[tuple[float, str]] = []
    start = time.time()
    end = start + minutes * 60
    load.start()
    plan = [(0.10, "rotate the PKI intermediate"), (0.15, "kill -9 worker1"), (0.30, "kill -9 master2"),
            (0.45, "restart zookeeper"), (0.60, "stop vault 60s"), (0.80, "kill -9 master1")]
    refreshed = time.time()
    for frac, what in plan + [(1.0, "end")]:
        while time.time() < start + frac * (end - start):
            time.sleep(1)
            # the operator's side: the env file's API tokens renewed at 2/3 of their life
            if time.time() - refreshed > 2 / 3 * seconds(life.api_token_ttl):
                try:
                    cl.env.update(local_cluster.write_env(root, local_cluster._provisioner(root, _root(root)),
                                                          cl.urls, life))
                    refreshed = time.time()
                except Exception as exc:  # Vault away: the tokens held still have a third of their life
                    print(f"soak: env tokens not renewed yet ({type(exc).__name__})", flush=True)
        if what == "end":
            break
        events.append((time.time(), what))
        print(f"soak: +{time.time() - start:.0f}s {what}", flush=True)
        if what.startswith("kill -9"):
            name = what.split()[-1]
            pid = cl.pid(name)
            if pid:
                os.kill(pid, signal.SIGKILL)
            time.sleep(2)
            cl.restart(name)
        elif what == "rotate the PKI intermediate":
            # one live rotation per run: every later renewal comes from the new one (vault/pki.py)
            from histo.vault import pki
            out = pki.rotate(_root(root))
            print(f"soak: new intermediate {out['new']}, retired {out['retired']}", flush=True)
        elif what == "restart zookeeper":
            zk = ZkServer.from_json(json.loads((root / "zk-renew" / "config.json").read_text()))
            zk.stop()
            zk.start()
        elif what == "stop vault 60s":
            bao = BaoServer(root / "vault", f"{NET}.10", local_cluster.VAULT_PORT)
            bao.stop()
            time.sleep(60)
            bao.start()
            bao.unseal()
    load.stop.set()
    load.join(timeout=150)
    local_cluster.down(root)
    return report(load.jobs, _audit(root / "vault" / "audit.log"), events, start, minutes)


def _root(root: Path) -> Any:
    from histo.local.bao import BaoServer
    return BaoServer(root / "vault", f"{NET}.10", 8200).root_client()


def report(jobs: list[tuple[float, float, str]], audit: list[tuple[float, str]], events: list[tuple[float, str]],
           start: float, minutes: float) -> dict[str, Any]:
    renewals = {kind: [t for t, p in audit if t >= start and match(p)] for kind, match in KINDS.items()}
    marks = sorted(t for kind, ts in renewals.items() if kind != "api token (env file)" for t in ts)

    def near(a: float, b: float) -> bool:
        import bisect
        i = bisect.bisect_left(marks, a - NEAR)
        return i < len(marks) and marks[i] <= b + NEAR

    done = [(a, b) for a, b, o in jobs if o == "done"]
    during = [b - a for a, b in done if near(a, b)]
    steady = [b - a for a, b in done if not near(a, b)]
    failures: dict[str, int] = {}
    for _, _, o in jobs:
        if o != "done":
            failures[o] = failures.get(o, 0) + 1
    return {
        "minutes": minutes, "jobs_run": len(jobs), "jobs_failed": sum(failures.values()), "failures": failures,
        "renewals": {k: len(v) for k, v in renewals.items()},
        "latency_s": {"steady": {"n": len(steady), "p50": _pct(steady, 0.5), "p99": _pct(steady, 0.99)},
                      "during_renewal": {"n": len(during), "p50": _pct(during, 0.5), "p99": _pct(during, 0.99)},
                      "mean": round(statistics.fmean([b - a for a, b in done]), 3) if done else 0.0},
        "events": [{"at_s": round(t - start), "what": w} for t, w in events],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=20.0)
    ap.add_argument("--state", default=".histo/soak")
    ap.add_argument("--out", default=str(HERE / "soak.json"))
    a = ap.parse_args()
    root = Path(a.state).resolve()  # the same absolute paths as up() (Vault renders its audit path from them)
    try:
        result = soak(a.minutes, root)
    finally:
        from histo.local import cluster as local_cluster
        local_cluster.down(root)
    Path(a.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    sys.exit(0)


if __name__ == "__main__":
    main()
