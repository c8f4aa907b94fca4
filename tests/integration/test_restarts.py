"""Ready means ready: whenever `histo local up` returns, an upload through HISTO_URL is accepted at
once — after a first start, a second start on the kept state, and kill -9 of the leader master and
of a worker; readiness counts live processes, not the nodes a dead process left in ZooKeeper; and a
service that can never become ready makes `up` fail with one line naming it.

Its own cluster (on cluster_fixture.RESTARTS_NET, long ZooKeeper sessions so that stale nodes
linger): the session cluster of the other tests is not disturbed; marked disruptive (its load runs
after the calm tests)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from histo.local import cluster as local_cluster

from histo.testing.cluster import Cluster, sample_image

from .cluster_fixture import RESTARTS_NET

pytestmark = [pytest.mark.disruptive, pytest.mark.long]

NET = RESTARTS_NET
# Long sessions: a node left by a killed process stays in ZooKeeper for 20 s, longer than any wait
# here, so only the liveness check can tell it from a live member.
SESSION = 20.0
EXTRA = {"task_timeout": 20.0, "job_timeout": 90.0, "worker_strip_min_pixels": 1}


def _up(root: Path, ready_timeout: float = 90.0) -> Cluster:
    info = local_cluster.up(root, masters=2, workers=2, cert_ttl="5m", zk_session_timeout=SESSION, net=NET,
                            extra=EXTRA, ready_timeout=ready_timeout)
    return Cluster(root=root.resolve(), env=info["env"])


@pytest.fixture(scope="module")
def root() -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix="histo-restart-"))
    try:
        yield base / "local"
    finally:
        local_cluster.down(base / "local")
        if not os.environ.get("HISTO_KEEP_TEST_STATE"):
            shutil.rmtree(base, ignore_errors=True)


def _accepted_at_once(c: Cluster) -> None:
    """The very first upload after `up` returned is accepted, and completes."""
    status, doc = c.upload(sample_image(64, 48, "PNG"))
    assert status == 202, doc
    assert c.wait_job(doc["id"])["state"] == "done"


def _readyz(c: Cluster, url: str) -> dict[str, Any]:
    status, _, raw = c.request("GET", "/readyz", url=url, timeout=5)
    doc: dict[str, Any] = json.loads(raw)
    doc["_status"] = status
    return doc


def test_first_start_accepts_an_upload_at_once(root: Path) -> None:
    c = _up(root)
    _accepted_at_once(c)
    for url in c.urls:
        doc = _readyz(c, url)
        assert doc["_status"] == 200 and doc["checks"]["leader"]["ok"]
        assert doc["checks"]["workers"]["live"] == ["worker1", "worker2"]


def test_second_start_on_kept_state_accepts_an_upload_at_once(root: Path) -> None:
    local_cluster.down(root)
    c = _up(root)
    _accepted_at_once(c)


def test_kill9_counts_live_members_only_and_up_heals_at_once(root: Path) -> None:
    c = _up(root)
    leader = c.leader()
    assert leader in ("master1", "master2")
    other = "master2" if leader == "master1" else "master1"
    other_url = f"https://{c.config(other)['address']}:{c.config(other)['public_port']}"
    worker_pid = c.pid("worker1")
    assert worker_pid is not None
    os.kill(worker_pid, signal.SIGKILL)
    # The dead worker's node is still in ZooKeeper (20 s session); readiness must not count it.
    deadline, doc = time.time() + 10, {}
    while time.time() < deadline:
        doc = _readyz(c, other_url)
        if doc["checks"]["workers"]["live"] == ["worker2"]:
            break
        time.sleep(0.2)
    assert doc["checks"]["workers"]["live"] == ["worker2"], doc["checks"]["workers"]
    assert doc["checks"]["workers"]["registered"] == 2  # the stale node lingers; it is not counted

    leader_pid = c.pid(leader)
    assert leader_pid is not None
    os.kill(leader_pid, signal.SIGKILL)
    deadline = time.time() + 10
    while time.time() < deadline:
        doc = _readyz(c, other_url)
        if not doc["checks"]["masters"]["live"] == sorted(["master1", "master2"]):
            break
        time.sleep(0.2)
    assert leader not in doc["checks"]["masters"]["live"], doc["checks"]["masters"]

    t0 = time.monotonic()
    c = _up(root)  # restarts exactly the two killed services
    healed = time.monotonic() - t0
    # Well before the 20 s sessions of the dead processes expire: stale nodes were replaced, not waited out.
    assert healed < SESSION, healed
    _accepted_at_once(c)
    for url in c.urls:
        doc = _readyz(c, url)
        assert doc["_status"] == 200, doc
        assert doc["checks"]["masters"]["live"] == ["master1", "master2"]
        assert doc["checks"]["workers"]["live"] == ["worker1", "worker2"]


def test_a_service_that_cannot_start_fails_up_with_one_line_naming_it(root: Path) -> None:
    c = _up(root)
    local_cluster.down(root)
    secret = c.service_dir("worker2") / "creds" / "secret_id"
    good = secret.read_bytes()
    secret.write_text("00000000-0000-0000-0000-000000000000\n")  # a secret_id Vault never issued
    try:
        t0 = time.monotonic()
        with pytest.raises(RuntimeError) as info:
            _up(root, ready_timeout=25)
        assert time.monotonic() - t0 < 60
        line = str(info.value)
        assert "\n" not in line and "worker2" in line, line
        assert "not running" in line or "login" in line.lower(), line
    finally:
        secret.write_bytes(good)
    c = _up(root)  # the operator fixed it: ready, and the upload is accepted at once
    _accepted_at_once(c)
