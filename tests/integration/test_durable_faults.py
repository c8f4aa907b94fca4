"""Durability against the real cluster when masters die: the leader killed mid-job (the job completes,
resumed from its stored upload), the master that computed a result killed (the other serves it), a
returning master catching up, both masters restarted (results still there, bit-identical), 1,000 other
jobs (a result is still there). Marked disruptive: tests/conftest.py runs these after the calm tests."""
from __future__ import annotations

import json
import os
import shutil
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterator

import pytest

from histo.compute.equalize import equalize_single
from histo.master.envelope import digest
from histo.testing.attacker import zk_client, zk_credentials
from histo.testing.cluster import Cluster, sample_image
from histo.zk.jobs import JobStore

from .test_durable import blob_path, done
from .test_edge import issue

pytestmark = [pytest.mark.disruptive, pytest.mark.long]


@pytest.fixture(autouse=True)
def masters_back(cluster: Cluster) -> Iterator[None]:
    """Whatever a test did, both masters run again afterwards (as systemd would restart them)."""
    yield
    for name in ("master1", "master2"):
        if not cluster.pid(name):
            cluster.restart(name)
    _both_ready(cluster, 150, "both masters back")


def _wait(pred: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if pred():
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _diagnose(cluster: Cluster) -> str:
    out = []
    for name in ("master1", "master2"):
        try:
            status, _, raw = cluster.request("GET", "/readyz", url=url_of(cluster, name), timeout=3)
            out.append(f"{name} readyz {status} {raw[:600]!r}")
        except OSError as exc:
            out.append(f"{name} readyz: {exc}")
        lines = (cluster.service_dir(name) / "service.log").read_text(errors="replace").splitlines()
        out += [f"{name}: {ln}" for ln in lines[-12:]]
    return "\n".join(out)


def _both_ready(cluster: Cluster, timeout: float, what: str) -> None:
    try:
        _wait(lambda: _ready(cluster, "master1") and _ready(cluster, "master2"), timeout, what)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{_diagnose(cluster)}") from None


def _kill(cluster: Cluster, name: str) -> None:
    """SIGKILL, then wait until the process is gone (restart() starts only what does not run)."""
    pid = cluster.pid(name)
    assert pid, f"{name} is not running"
    os.kill(pid, signal.SIGKILL)
    _wait(lambda: not cluster.pid(name), 15, f"{name} to die")


def url_of(cluster: Cluster, name: str) -> str:
    return f"https://{cluster.config(name)['address']}:4443"


def _ready(cluster: Cluster, name: str) -> bool:
    status, _, raw = cluster.request("GET", "/readyz", url=url_of(cluster, name), timeout=3)
    return status == 200 and json.loads(raw)["checks"]["masters"]["count"] == 2


def result(cluster: Cluster, job: str, url: str) -> bytes:
    status, _, body = cluster.request("GET", f"/api/v1/jobs/{job}/result", token=cluster.token("uploader"), url=url)
    assert status == 200, body[:200]
    return body


def test_leader_killed_mid_job_the_job_completes(cluster: Cluster) -> None:
    leader = cluster.leader()
    assert leader
    standby = "master2" if leader == "master1" else "master1"
    data = sample_image(3000, 2400, "PNG")
    status, doc = cluster.upload(data, mode="luma", url=url_of(cluster, leader))
    assert status == 202
    job = doc["id"]
    # both masters hold the upload before the 202
    assert blob_path(cluster, leader, job, "upload").exists() and blob_path(cluster, standby, job, "upload").exists()
    _wait(lambda: cluster.request("GET", f"/api/v1/jobs/{job}", token=cluster.token("uploader"),
                                  url=url_of(cluster, standby))[2].find(b'"running"') >= 0, 30, "the job to run")
    _kill(cluster, leader)
    _wait(lambda: cluster.leader() == standby, 30, f"{standby} to lead")
    # with one master of two gone, an upload cannot be stored twice: refused with the reason, not lost
    status, refused = cluster.upload(sample_image(32, 32, "PNG"), url=url_of(cluster, standby))
    assert status == 503 and refused["error"] == "not_durable" and "master" in refused["message"], refused
    cluster.restart(leader)  # what systemd does (Restart=on-failure)
    finished = cluster.wait_job(job, url=url_of(cluster, standby), timeout=180)
    assert finished["state"] == "done", finished  # resumed by the new leader, never "please resubmit"
    want = equalize_single(data, "luma").image
    _wait(lambda: _ready(cluster, leader), 60, f"{leader} to come back")
    for name in (standby, leader):
        assert result(cluster, job, url_of(cluster, name)) == want


def test_a_master_that_lost_its_store_catches_up(cluster: Cluster) -> None:
    _wait(lambda: _ready(cluster, "master1") and _ready(cluster, "master2"), 60, "both masters")
    job = done(cluster, sample_image(64, 48, "PNG"))
    tags = {k: digest(blob_path(cluster, "master1", job, k).read_bytes()) for k in ("upload", "result")}
    _kill(cluster, "master2")
    shutil.rmtree(cluster.service_dir("master2") / "store")  # its disk replaced
    cluster.restart("master2")
    _wait(lambda: all(blob_path(cluster, "master2", job, k).exists() for k in tags), 60, "master2 to catch up")
    assert {k: digest(blob_path(cluster, "master2", job, k).read_bytes()) for k in tags} == tags
    _wait(lambda: _ready(cluster, "master2"), 60, "master2 ready")


def test_the_master_that_computed_a_result_killed_the_other_serves_it(cluster: Cluster) -> None:
    _wait(lambda: _ready(cluster, "master1") and _ready(cluster, "master2"), 60, "both masters")
    data = sample_image(200, 150, "JPEG")
    job = done(cluster, data, mode="rgb")
    holder = cluster.leader()  # the leader ran the job and stored its result first
    assert holder
    other = "master2" if holder == "master1" else "master1"
    _kill(cluster, holder)
    assert result(cluster, job, url_of(cluster, other)) == equalize_single(data, "rgb").image
    cluster.restart(holder)
    _wait(lambda: _ready(cluster, holder), 60, f"{holder} to come back")


def test_results_survive_1000_other_jobs_and_a_restart_of_every_master(cluster: Cluster) -> None:
    _wait(lambda: _ready(cluster, "master1") and _ready(cluster, "master2"), 60, "both masters")
    data = sample_image(120, 90, "PNG")
    first = done(cluster, data)
    want = equalize_single(data, "gray").image
    others = [issue(cluster, "uploader", f"load{i}") for i in range(4)]
    tiny = sample_image(8, 8, "PNG")

    def one(i: int) -> int:
        for _ in range(200):  # admission may ask to come back (too many jobs running): do as told
            status, doc = cluster.upload(tiny, mode="gray", token=others[i % 4])
            if status not in (429, 503) or doc.get("error") == "not_durable":
                return status
            time.sleep(0.05)
        return status

    zk = zk_client(cluster, "master1", zk_credentials(cluster, "master"))
    try:
        nodes_before = JobStore(zk).count_nodes()
        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(one, range(1000)))
        assert statuses.count(202) == 1000, {s: statuses.count(s) for s in set(statuses)}
        _wait(lambda: not zk.get_children("/histo/active"), 120, "the 1,000 jobs to end")
        nodes_after = JobStore(zk).count_nodes()
    finally:
        zk.stop()
        zk.close()
    # a few nodes per job (its znode, its tasks folder with the last attempt of each strip, its owner
    # entry) and one per owner: what retention removes (tests/unit/test_runner.py)
    strips = 4  # task nodes a job may leave (it has one task: compute/work.py): a loose bound
    assert nodes_after - nodes_before <= (3 + strips) * 1000 + len(others), (nodes_before, nodes_after)
    for url in cluster.urls:
        assert result(cluster, first, url) == want  # other users' load evicts nothing
    tags = {n: digest(blob_path(cluster, n, first, "result").read_bytes()) for n in ("master1", "master2")}
    # every master killed, then started again: the results are still there, bit-identical
    for name in ("master1", "master2"):
        _kill(cluster, name)
    for name in ("master1", "master2"):
        cluster.restart(name)
    _both_ready(cluster, 150, "both masters back")
    for url in cluster.urls:
        assert result(cluster, first, url) == want
    assert {n: digest(blob_path(cluster, n, first, "result").read_bytes()) for n in tags} == tags
