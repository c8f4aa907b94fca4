"""OpenBao raft, measured (docs/PERFORMANCE.md, "OpenBao raft"): a 3-node cluster on loopback
(127.0.31.x, static seal) — time from start to every node a voter; then, `--rounds` times, the active
node SIGKILLed: time until another node is active, the longest a failover client (vault/failover.py)
waited for one request (a transit data key, as an upload makes) meanwhile, and the time for the killed
node, started again, to be unsealed (by itself) and a voter. Nothing here is asserted.

    .venv/bin/python bench/vault_raft.py [--rounds 3] [--out bench/vault_raft.json]
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from histo.local.raft import BaoCluster
from histo.vault.failover import failover_client

NET = "127.0.31"


def _voter(cluster: BaoCluster, node_id: str) -> bool:
    try:
        return any(s["node_id"] == node_id and s["voter"] for s in cluster.peers())
    except Exception:  # noqa: BLE001 - an election under way: not yet
        return False


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default=str(Path(__file__).with_name("vault_raft.json")))
    a = ap.parse_args()
    out: dict[str, Any] = {"rounds": []}
    with tempfile.TemporaryDirectory() as tmp:
        cluster = BaoCluster(Path(tmp), [f"{NET}.{i}" for i in (10, 16, 17)])
        try:
            t0 = time.perf_counter()
            cluster.start()
            out["start_to_three_voters_s"] = round(time.perf_counter() - t0, 2)
            root = cluster.root_client()
            root.sys.enable_secrets_engine("transit")
            root.secrets.transit.create_key("bench")
            client = failover_client(cluster.url, verify=str(cluster.ca_path), token=root.token)
            for _ in range(a.rounds):
                waits: list[float] = []
                failed: list[str] = []
                stop = threading.Event()

                def load(stop: threading.Event, waits: list[float], failed: list[str]) -> None:
                    while not stop.is_set():
                        t = time.perf_counter()
                        try:
                            client.secrets.transit.generate_data_key("bench", key_type="plaintext")
                        except Exception as exc:  # noqa: BLE001 - counted, reported
                            failed.append(type(exc).__name__)
                        waits.append(time.perf_counter() - t)

                loader = threading.Thread(target=load, args=(stop, waits, failed), daemon=True)
                loader.start()
                time.sleep(1.0)
                victim = cluster.active()
                pid = victim.running()
                assert pid
                t_kill = time.perf_counter()
                os.kill(pid, signal.SIGKILL)
                time.sleep(0.05)
                cluster.active(timeout=60)
                elected = time.perf_counter() - t_kill
                time.sleep(1.0)
                stop.set()
                loader.join(30)
                t_restart = time.perf_counter()
                victim.start()
                cluster.wait_unsealed(victim)
                unsealed = time.perf_counter() - t_restart
                while not _voter(cluster, victim.node_id):
                    time.sleep(0.2)
                out["rounds"].append({"election_s": round(elected, 2), "longest_request_s": round(max(waits), 2),
                                      "requests": len(waits), "failed_requests": len(failed),
                                      "failures": sorted(set(failed)),
                                      "restart_to_unsealed_s": round(unsealed, 2),
                                      "restart_to_voter_s": round(time.perf_counter() - t_restart, 2)})
        finally:
            cluster.stop()
    out["election_median_s"] = statistics.median(r["election_s"] for r in out["rounds"])
    Path(a.out).write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
