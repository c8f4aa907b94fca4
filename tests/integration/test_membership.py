"""Members are what their certificates say: a member node whose endpoint is served by another
identity is never live and never gets work (the handshake is refused before a byte is sent), and
the cluster keeps serving on the members that are what they claim."""
from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest

from histo.testing.attacker import zk_client, zk_credentials
from histo.testing.cluster import Cluster, sample_image

pytestmark = pytest.mark.disruptive  # rewrites a member node of the shared cluster for a moment


def _workers_check(cluster: Cluster) -> dict[str, Any]:
    _s, _h, raw = cluster.request("GET", "/readyz", timeout=5)
    workers: dict[str, Any] = json.loads(raw)["checks"]["workers"]
    return workers


def test_a_member_pointing_at_another_identity_is_not_live_and_gets_no_work(cluster: Cluster) -> None:
    zk = zk_client(cluster, "master1", zk_credentials(cluster, "master"))
    node = "/histo/workers/worker1/member"
    try:
        good, _ = zk.get(node)
        doc = json.loads(good)
        doc["endpoint"] = json.loads(zk.get("/histo/workers/worker2/member")[0])["endpoint"]
        zk.set(node, json.dumps(doc).encode())
        deadline, workers = time.time() + 10, {}
        while time.time() < deadline:
            workers = _workers_check(cluster)
            if workers["live"] == ["worker2"]:
                break
            time.sleep(0.2)
        assert workers["live"] == ["worker2"], workers  # worker1's node names worker2's endpoint
        status, job = cluster.upload(sample_image(64, 48, "PNG"))
        assert status == 202 and cluster.wait_job(job["id"])["state"] == "done"
        status, _h, raw = cluster.request("GET", f"/api/v1/jobs/{job['id']}/receipt",
                                          token=cluster.token("uploader"))
        payload = raw.decode().split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        assert status == 200 and claims["workers"] == ["spiffe://histo.internal/worker/worker2"], claims
    finally:
        zk.set(node, good)
        zk.stop()
        zk.close()
    deadline = time.time() + 10
    while time.time() < deadline and _workers_check(cluster)["live"] != ["worker1", "worker2"]:
        time.sleep(0.2)
    assert _workers_check(cluster)["live"] == ["worker1", "worker2"]
