"""A real local cluster (OpenBao server, ZooKeeper, 2 masters, 2 workers) for integration tests.

It runs on its own loopback net (127.0.20.x) and state folder, so it never touches a developer's
`make local` cluster, and it is stopped by pid at the end of the session. Under pytest-xdist each
worker process has a session, so each has its cluster, on a net of its own (it_net)."""
from __future__ import annotations

import os
from pathlib import Path

from histo.local import cluster as local_cluster
from histo.testing.cluster import Cluster

# HISTO_IT_NET: another /24 of loopback, so that a second checkout's integration tests (a helper, a CI
# check) can run beside these; every address the tests use is derived from it (it_net).
BASE_NET = os.environ.get("HISTO_IT_NET", "127.0.20")
SLOTS = 8  # the nets one pytest process uses: the session cluster's and those below


def it_net(slot: int = 0) -> str:
    """The /24 of loopback for `slot` (0: the session cluster's, and the tests that take addresses
    beside it; 1..7: a module's own OpenBao or cluster, below) of this pytest process. Slot s of
    pytest-xdist's worker gwN adds SLOTS * N + s to HISTO_IT_NET's second octet and keeps its third:
    127.0.20 (the default) gives gw0 127.0.20, 127.1.20, ...; gw1 127.8.20, 127.9.20, ... So two
    workers never bind the same address and port, nor do two checkouts whose HISTO_IT_NET differ in
    the third octet, whatever modules run at once (every port a cluster listens on is fixed)."""
    first, second, third = BASE_NET.split(".")
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")  # set in each worker before it imports a test
    octet = int(second) + SLOTS * int(worker.removeprefix("gw")) + slot
    if not 0 <= slot < SLOTS or octet > 255:
        raise ValueError(f"no loopback net for slot {slot} of worker {worker} from HISTO_IT_NET={BASE_NET}")
    return f"{first}.{octet}.{third}"


NET = it_net(0)
VAULT_NET = it_net(1)       # vaultfix.py: the per-test OpenBaos (free ports) and their hosts' addresses
RESTARTS_NET = it_net(2)    # test_restarts.py: its own cluster
OUTSIDE_NET = it_net(3)     # test_outside_tools.py: its own cluster
RAFT_NET = it_net(4)        # test_vault_raft.py: its own cluster with three OpenBao nodes
QUARANTINE_NET = it_net(5)  # test_quarantine_vault.py: its own OpenBao
FORGED_NET = it_net(6)      # test_forged_pixels.py: its own cluster with three workers


def start(root: Path, cert_ttl: str = "30s", wait: bool = True, readmit: str = "") -> Cluster:
    """`wait` False: provisioning only (the cluster is up; a host kept out is not waited for); `readmit`: the
    quarantined host whose identity setup gives back."""
    info = local_cluster.up(root, masters=2, workers=2, cert_ttl=cert_ttl, zk_session_timeout=4.0, net=NET, wait=wait,
                            readmit=readmit,
                            extra={"task_timeout": 20.0, "job_timeout": 90.0, "rate_per_address": 1000.0,
                                   "burst_per_address": 2000, "uploads_per_principal": 100.0,
                                   "upload_burst": 200, "max_upload_bytes": 16 * 1024 * 1024,
                                   "worker_strip_min_pixels": 1,  # a job alone on a worker runs in strips, even small
                                   # every job computed by both workers, their results compared byte for byte
                                   "verify_fraction": 1.0,
                                   "tls_handshake_timeout": 4.0})
    return Cluster(root=root.resolve(), env=info["env"])


def stop(root: Path) -> None:
    local_cluster.down(root)
