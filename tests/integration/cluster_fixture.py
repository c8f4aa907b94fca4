"""A real local cluster (OpenBao server, ZooKeeper, 2 masters, 2 workers) for integration tests.

It runs on its own loopback net (127.0.20.x) and state folder, so it never touches a developer's
`make local` cluster, and it is stopped by pid at the end of the session."""
from __future__ import annotations

import os
from pathlib import Path

from histo.local import cluster as local_cluster
from histo.testing.cluster import Cluster

# HISTO_IT_NET: another /24 of loopback, so that a second checkout's integration tests (a helper, a CI
# check) can run beside these; every address the tests use is derived from it.
NET = os.environ.get("HISTO_IT_NET", "127.0.20")


def start(root: Path, cert_ttl: str = "30s", wait: bool = True) -> Cluster:
    """`wait` False: provisioning only (the cluster is up; a host kept out is not waited for)."""
    info = local_cluster.up(root, masters=2, workers=2, cert_ttl=cert_ttl, zk_session_timeout=4.0, net=NET, wait=wait,
                            extra={"task_timeout": 20.0, "job_timeout": 90.0, "rate_per_address": 1000.0,
                                   "burst_per_address": 2000, "uploads_per_principal": 100.0,
                                   "upload_burst": 200, "max_upload_bytes": 16 * 1024 * 1024,
                                   "min_tile_pixels": 1,  # tests exercise several strips even on small images
                                   "tls_handshake_timeout": 4.0})
    return Cluster(root=root.resolve(), env=info["env"])


def stop(root: Path) -> None:
    local_cluster.down(root)
