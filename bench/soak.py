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
import shutil
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
    "issuer token": lambda p: p == "auth/token/create/histo-issuer",
    "receipt-verifier token": lambda p: p == "auth/token/create/histo-receipt-verifier",
}
# The renewals a job can meet (the operator's tokens are renewed on the controller, not in the path of a job).
SERVICE_SIDE = ("service certificate", "zookeeper certificate", "zookeeper quorum certificate", "vault token renewal",
                "approle login", "secret_id")
RECOVERY = 20.0  # seconds after a fault (kill, restart; Vault: after its minute away) counted as "during faults"
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
    """Uploads one small image after the other through the public address, and waits for each job, as
    the CLI does (client/http.py `retrying`): a 503 with Retry-After and a refused connection are asked
    again, a status read after any failure to reach a master; the env file is read again before each
    job (its tokens are renewed in place by `histo env refresh`). A job fails when it ends `failed`,
    is refused otherwise, or is not done within JOB_DEADLINE seconds of its first attempt."""

    JOB_DEADLINE = 180.0

    def __init__(self, cl: Any, image: bytes, env_path: Path) -> None:
        super().__init__(daemon=True)
        self.cl, self.image, self.env_path = cl, image, env_path
        self.stop = threading.Event()
        self.jobs: list[tuple[float, float, str]] = []  # (start, end, "done" | failure)
        self.retries: dict[str, int] = {}  # what was asked again, and how often

    def _again(self, why: str, wait: float) -> None:
        self.retries[why] = self.retries.get(why, 0) + 1
        time.sleep(wait)

    def _upload(self, deadline: float) -> tuple[int, dict[str, Any]]:
        import urllib.error
        while True:
            try:
                status, doc = self.cl.upload(self.image, url=self.cl.public_url)
            except urllib.error.URLError as exc:
                if not isinstance(exc.reason, ConnectionRefusedError) or time.time() + 1 > deadline:
                    raise
                self._again("upload: connection refused", 1.0)
                continue
            if status == 503 and time.time() + 5 <= deadline:
                self._again(f"upload 503 {doc.get('error')}", 5.0)  # every 503 of the API says Retry-After: 5
                continue
            return status, doc

    def _wait(self, job_id: str, deadline: float) -> str:
        while time.time() < deadline:
            try:
                return str(self.cl.wait_job(job_id, timeout=max(1.0, deadline - time.time()),
                                            url=self.cl.public_url)["state"])
            except AssertionError:
                break
            except OSError as exc:
                self._again(f"status: {type(exc).__name__}", 1.0)
        return "not done in time"

    def run(self) -> None:
        from histo.envrefresh import read_env
        while not self.stop.is_set():
            t0 = time.time()
            deadline = t0 + self.JOB_DEADLINE
            try:
                self.cl.env.update(read_env(self.env_path))
                status, doc = self._upload(deadline)
                outcome = self._wait(doc["id"], deadline) if status == 202 else f"upload {status} {doc.get('error')}"
            except Exception as exc:
                outcome = f"{type(exc).__name__}: {exc}"[:120]
            self.jobs.append((t0, time.time(), outcome))
            time.sleep(0.2)


def soak(minutes: float, root: Path) -> dict[str, Any]:
    from histo.lifetimes import profile
    from histo.local import cluster as local_cluster
    from histo.local.bao import BaoServer
    from histo.local.zkserver import ZkServer
    from histo.testing.cluster import Cluster, sample_image

    life = profile("compressed")

    def up() -> Cluster:
        info = local_cluster.up(root, lifetimes=life, net=NET, extra=LIMITS, ready_timeout=180)
        return Cluster(root=root.resolve(), env=info["env"])

    cl = up()
    load = Load(cl, sample_image(320, 240, "PNG"), root / "env")
    events: list[tuple[float, str]] = []
    start = time.time()
    end = start + minutes * 60
    load.start()
    plan = [(0.10, "rotate the PKI intermediate"), (0.15, "kill -9 worker1"), (0.30, "kill -9 master2"),
            (0.45, "restart zookeeper"), (0.60, "stop vault 60s"), (0.80, "kill -9 master1")]
    # the operator's side renews itself: local up started `histo env refresh` (envrefresh.py)
    for frac, what in plan + [(1.0, "end")]:
        while time.time() < start + frac * (end - start):
            time.sleep(1)
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
    out = report(load.jobs, _audit(root / "vault" / "audit.log"), events, start, minutes)
    out["asked_again"] = load.retries
    out["lifetimes"] = life.as_dict()
    out["secops"] = false_alarms(root)
    return out


def false_alarms(root: Path) -> dict[str, Any]:
    """The detection rules over this run's own refusal records (Vault's audit log, ZooKeeper's refusals
    file): legitimate traffic through kills, restarts and outages must open no incident (issue 18)."""
    from histo.secops.replay import read_files, replay, summary
    from histo.secops.rules import load_rules
    from histo.secops.sources import Inventory
    topology = json.loads((root / "topology.json").read_text())
    files = [root / "vault" / "audit.log", *sorted(root.glob("zk*/**/zookeeper.log*"))]
    return summary(*replay(read_files([f for f in files if f.is_file()]), Inventory(topology["hosts"]), load_rules()))


def _root(root: Path) -> Any:
    from histo.local.bao import BaoServer
    return BaoServer(root / "vault", f"{NET}.10", 8200).root_client()


def report(jobs: list[tuple[float, float, str]], audit: list[tuple[float, str]], events: list[tuple[float, str]],
           start: float, minutes: float) -> dict[str, Any]:
    renewals = {kind: [t for t, p in audit if t >= start and match(p)] for kind, match in KINDS.items()}
    marks = sorted(t for kind, ts in renewals.items() if kind in SERVICE_SIDE for t in ts)

    def near(a: float, b: float) -> bool:
        import bisect
        i = bisect.bisect_left(marks, a - NEAR)
        return i < len(marks) and marks[i] <= b + NEAR

    # A fault's window: from its start until the cluster had time to recover (a killed service's
    # restart and rejoin, ZooKeeper's sessions moving, Vault's minute away and its unseal).
    faults = [(t, t + (60.0 if "vault" in w else 0.0) + RECOVERY) for t, w in events
              if w != "rotate the PKI intermediate"]

    def in_fault(a: float, b: float) -> bool:
        return any(a <= hi and b >= lo for lo, hi in faults)

    done = [(a, b) for a, b, o in jobs if o == "done"]
    faulty = [b - a for a, b in done if in_fault(a, b)]
    during = [b - a for a, b in done if not in_fault(a, b) and near(a, b)]
    steady = [b - a for a, b in done if not in_fault(a, b) and not near(a, b)]
    failures: dict[str, int] = {}
    for _, _, o in jobs:
        if o != "done":
            failures[o] = failures.get(o, 0) + 1
    return {
        "minutes": minutes, "jobs_run": len(jobs), "jobs_failed": sum(failures.values()), "failures": failures,
        # when each failure began, in seconds from the start: beside `events`, which fault it met
        "failed_at_s": [[round(a - start, 1), o] for a, _, o in jobs if o != "done"][:50],
        "renewals": {k: len(v) for k, v in renewals.items()},
        "latency_s": {"steady": {"n": len(steady), "p50": _pct(steady, 0.5), "p99": _pct(steady, 0.99)},
                      "during_faults": {"n": len(faulty), "p50": _pct(faulty, 0.5), "p99": _pct(faulty, 0.99)},
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
    from histo.local import cluster as local_cluster
    local_cluster.down(root)
    # a fresh cluster each run: the last run's credentials have long expired (compressed lifetimes)
    shutil.rmtree(root, ignore_errors=True)
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
