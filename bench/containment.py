"""Detection and containment, measured (docs/PERFORMANCE.md, "Containment"), on a local cluster of its
own (127.0.34.x: OpenBao, ZooKeeper, 2 masters, 3 workers) with the real SecOps collector in front:

  each round, root on a worker asks Vault for the ZooKeeper super digest with the worker's own token;
  the denial in OpenBao's audit file is read by the collector (as rsyslog hands it over: the audit line,
  its sending address) -> classify -> detector -> responder -> vault/quarantine.contain with a SecOps
  token; then both masters refuse the worker (mTLS) and one user's jobs go on. The worker is then
  re-provisioned, released and restarted for the next round.

Figures per round: detect (the denial's audit time -> incident opened), contain (-> every containment
step done), refused (-> both masters refuse the worker's certificate); jobs accepted and failed during
the rounds. Nothing here is asserted.

    .venv/bin/python bench/containment.py [--rounds 5] [--out bench/containment.json]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests.unit.test_secops_chain's local signer, as bench/secops.py
NET = "127.0.34"


def _until(pred: Callable[[], Any], timeout: float) -> Any:
    from histo.testing.cluster import until
    got = until(pred, timeout, step=0.05)
    if not got:
        raise TimeoutError("timed out")
    return got


def _stats(values: list[float]) -> dict[str, float]:
    s = sorted(values)
    return {"p50_s": round(statistics.median(s), 3), "p99_s": round(s[min(len(s) - 1, int(0.99 * len(s)))], 3),
            "max_s": round(s[-1], 3), "n": len(s)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", default=str(HERE / "containment.json"))
    args = ap.parse_args()

    import http.client
    import ssl

    from histo.local import cluster as local_cluster
    from histo.secops.collector import Collector
    from histo.secops.detect import Detector
    from histo.secops.respond import Responder
    from histo.secops.rules import load_rules
    from histo.secops.sources import Inventory
    from histo.testing.attacker import root_client, service_vault
    from histo.testing.cluster import Cluster, sample_image
    from histo.vault.quarantine import contain, guard, release
    from tests.unit.test_secops_chain import LocalSigner

    root = Path(tempfile.mkdtemp(prefix="histo-bench-contain-"))
    limits = {"rate_per_address": 10000.0, "burst_per_address": 20000, "uploads_per_principal": 1000.0,
              "upload_burst": 2000}

    def up(wait: bool = True) -> dict[str, Any]:
        return local_cluster.up(root / "c", masters=2, workers=3, cert_ttl="1h", net=NET, extra=limits, wait=wait)
    info = up()
    cluster = Cluster(root=(root / "c").resolve(), env=info["env"])
    admin = root_client(cluster)
    hosts = json.loads((cluster.root / "topology.json").read_text())["hosts"]
    # the collector's inventory: the cluster's hosts, and the Vault node whose audit lines it is handed
    inv = Inventory([*hosts, {"name": "vault1", "role": "vault", "address": f"{NET}.10"},
                     {"name": "secops1", "role": "secops", "address": f"{NET}.40"}], {"vault": 8200, "internal": 8443})
    audit = cluster.root / "vault" / "audit.log"
    rounds: list[dict[str, Any]] = []
    accepted, failed = [0], [0]
    stop = threading.Event()

    def load() -> None:
        data = sample_image(160, 120, "PNG")
        while not stop.is_set():
            status, doc = cluster.upload(data, mode="gray")
            if status != 202:
                failed[0] += 1
                continue
            accepted[0] += 1
            if cluster.wait_job(doc["id"])["state"] != "done":
                failed[0] += 1

    def refused_by_masters(victim: str) -> bool:
        tls = cluster.service_dir(victim) / "tls"
        ctx = ssl.create_default_context(cafile=cluster.ca)
        ctx.load_cert_chain(str(tls / "cert.pem"), str(tls / "key.pem"))
        for m in ("master1", "master2"):
            cfg = cluster.config(m)
            conn = http.client.HTTPSConnection(cfg["address"], cfg["internal_port"], context=ctx, timeout=5,
                                               source_address=(cluster.config(victim)["address"], 0))
            try:
                conn.request("POST", "/internal/v1/join", body=b"", headers={"Content-Length": "0"})
                if conn.getresponse().status == 200:
                    return False
            except (OSError, http.client.HTTPException):
                pass
            finally:
                conn.close()
        return True

    def one_round(n: int) -> dict[str, Any]:
        victim = f"worker{n % 3 + 1}"
        decided: list[dict[str, Any]] = []
        responder = Responder(contain=lambda host, inc: contain(admin, host, inc),
                              guard=lambda host, held: guard(hosts, held, host), record=decided.append)
        collector = Collector(root / f"record-{n}.log", LocalSigner(), None, interval=3600, inventory=inv,
                              self_host="secops1", detector=Detector(load_rules()), responder=responder)
        collector.start()
        offset = audit.stat().st_size
        vault = service_vault(cluster, victim)
        vault.login()
        t0 = time.time()
        try:  # root on the worker: the ZooKeeper super digest, with the worker's own token
            vault.client.secrets.kv.v2.read_secret_version("histo/zk/super", mount_point="secret",
                                                           raise_on_deleted_version=True)
        except Exception:  # noqa: BLE001 - refused, as it must be
            pass

        def denial() -> str | None:
            with audit.open() as f:
                f.seek(offset)
                for line in f:
                    if "histo/zk/super" in line and '"error"' in line and '"response"' in line:
                        return line
            return None
        line = _until(denial, 10)
        # what rsyslog hands over from a Vault node: the audit line, tagged, with its sending address
        # and its time (the entry's own: shipping over RELP is not part of this figure)
        collector.ingest(json.dumps({"msg": line.strip(), "tag": "vault-audit", "host": "vault1",
                                     "from": f"{NET}.10", "ts": json.loads(line)["time"]}))
        _until(lambda: decided, 30)
        _until(lambda: refused_by_masters(victim), 30)
        t_refused = time.time() - t0
        collector.close()
        d = decided[0]
        got = {"victim": victim, "detect_s": d["to_detect"], "contain_s": d["to_contain"],
               "refused_s": round(t_refused, 3), "state": d["state"]}
        print(json.dumps(got), flush=True)
        # re-admission: a fresh identity, the release, the worker restarted
        (Path(cluster.config(victim)["creds_dir"]) / "secret_id").unlink(missing_ok=True)
        up(wait=False)
        release(admin, victim)
        pid = cluster.pid(victim)
        if pid:
            os.kill(pid, signal.SIGTERM)
            _until(lambda: cluster.pid(victim) is None, 20)
        cluster.restart(victim)
        time.sleep(3)
        return got

    loader = threading.Thread(target=load, daemon=True)
    loader.start()
    try:
        for n in range(args.rounds):
            rounds.append(one_round(n))
    finally:
        stop.set()
        loader.join(120)
        local_cluster.down(root / "c")
        shutil.rmtree(root, ignore_errors=True)  # its Vault's root token and keys go with it
    out = {"date": time.strftime("%Y-%m-%d"), "rounds": rounds,
           "detect": _stats([r["detect_s"] for r in rounds]), "contain": _stats([r["contain_s"] for r in rounds]),
           "refused_by_every_master": _stats([r["refused_s"] for r in rounds]),
           "jobs_accepted": accepted[0], "jobs_failed": failed[0]}
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps({k: v for k, v in out.items() if k != "rounds"}))


if __name__ == "__main__":
    main()
