"""Faults against the real cluster: a worker killed mid-job, the leader killed, Vault stopped.
(Marked disruptive: tests/conftest.py runs them after the tests that want a calm cluster.)"""
import json
import os
import signal

import pytest

from histo import procs
from histo.compute.equalize import equalize_single
from histo.local.bao import BaoServer
from histo.testing.cluster import sample_image
from histo.testing.waiting import wait_until

pytestmark = [pytest.mark.disruptive, pytest.mark.long]


_wait = wait_until


@pytest.fixture(autouse=True)
def cluster_whole(cluster):
    """Each fault starts from a whole cluster: a service an earlier disruptive test left stopped is
    started again (as systemd would), and both masters answer ready, counting each other."""
    for name in ("master1", "master2", "worker1", "worker2"):
        if not cluster.pid(name):
            cluster.restart(name)

    def both_ready():
        for u in cluster.urls:
            try:
                status, _, raw = cluster.request("GET", "/readyz", url=u, timeout=3)
            except OSError:
                return False
            if status != 200 or json.loads(raw)["checks"]["masters"]["count"] != 2:
                return False
        return True
    _wait(both_ready, 150, "both masters ready")
    yield


def _workers(cluster) -> set[str]:
    status, _, raw = cluster.request("GET", "/api/v1/cluster", token=cluster.token("viewer"))
    return {w["name"] for w in json.loads(raw)["workers"]} if status == 200 else set()


def test_worker_killed_mid_job_job_completes(cluster):
    data = sample_image(3000, 2400, "JPEG")
    status, doc = cluster.upload(data, mode="rgb")
    assert status == 202
    os.kill(cluster.pid("worker1"), signal.SIGKILL)
    # its tasks are re-assigned (at once when the connection breaks, at the latest when its
    # ZooKeeper session of 4 s expires) and the job completes
    job = cluster.wait_job(doc["id"], timeout=60)
    assert job["state"] == "done", job
    _, _, body = cluster.request("GET", f"/api/v1/jobs/{doc['id']}/result", token=cluster.token("uploader"))
    assert body == equalize_single(data, "rgb").image
    # the killed worker comes back with its stored, address-bound secret_id and a fresh certificate
    cluster.restart("worker1")
    _wait(lambda: "worker1" in _workers(cluster), 30, "worker1 to rejoin")


def test_public_address_survives_a_master(cluster):
    """HISTO_URL (the floating public address every serving master also listens on in local mode)
    keeps answering while a master dies: no request through it is refused, a stored result is served
    and the job list read; the certificate it presents is valid for that address."""
    status, doc = cluster.upload(sample_image(640, 480, "JPEG"), mode="rgb", url=cluster.public_url)
    assert status == 202, doc
    job = cluster.wait_job(doc["id"], timeout=60, url=cluster.public_url)
    assert job["state"] == "done", job
    victim = "master1"
    pid = cluster.pid(victim)
    os.kill(pid, signal.SIGKILL)
    # dead means dead: a connection the dying process had already accepted is reset, like a crashed
    # machine's; from then on, no request through HISTO_URL may fail. Gone is every thread gone, not the
    # main thread a zombie: the last thread closes the listening socket (procs.gone)
    _wait(lambda: procs.gone(pid), 10, f"{victim} to be gone")
    answered = []
    for _ in range(30):
        status, _, body = cluster.request("GET", f"/api/v1/jobs/{doc['id']}/result", url=cluster.public_url,
                                          token=cluster.token("uploader"), timeout=10)
        answered.append(status)
    assert answered == [200] * 30, answered
    # readiness is another matter: if the victim led, the survivor is not ready until its session expires
    # and it is elected; then HISTO_URL reports ready too
    _wait(lambda: cluster.request("GET", "/readyz", url=cluster.public_url, timeout=5)[0] == 200, 60,
          "HISTO_URL to report ready after the election")
    cluster.restart(victim)


def test_leader_killed_standby_takes_over(cluster):
    leader = cluster.leader()
    assert leader
    leader_url = f"https://{cluster.config(leader)['address']}:4443"
    standby_url = [u for u in cluster.urls if u != leader_url][0]
    status, doc = cluster.upload(sample_image(3000, 2400, "PNG"), mode="luma", url=leader_url)
    assert status == 202
    os.kill(cluster.pid(leader), signal.SIGKILL)
    _wait(lambda: cluster.leader() not in (None, leader), 30, "a new leader")
    # with one master of two, an upload cannot be stored on two: a 503 that says why
    status, refused = cluster.upload(sample_image(200, 150, "JPEG"), mode="gray", url=standby_url)
    assert status == 503 and refused["error"] == "not_durable", refused
    cluster.restart(leader)  # what systemd does (Restart=on-failure)
    # the in-flight job completes: the new leader resumed it from its stored upload, and its result is
    # done once both masters hold it
    job = cluster.wait_job(doc["id"], url=standby_url, timeout=120)
    assert job["state"] == "done", job
    _wait(lambda: cluster.request("GET", "/readyz", url=leader_url, timeout=3)[0] == 200
          if _up(cluster, leader_url) else False, 40, "the old leader to come back as standby")
    # new jobs are accepted by the new leader once both masters can store them
    def accepted() -> bool:
        status, doc2 = cluster.upload(sample_image(200, 150, "JPEG"), mode="gray", url=standby_url)
        return status == 202 and cluster.wait_job(doc2["id"], url=standby_url)["state"] == "done"
    _wait(accepted, 40, "an upload accepted by the new leader")


def _up(cluster, url) -> bool:
    try:
        cluster.request("GET", "/healthz", url=url, timeout=2)
        return True
    except OSError:
        return False


def test_vault_stopped_services_keep_serving_and_recover(cluster):
    topo = json.loads((cluster.root / "topology.json").read_text())
    data = sample_image(160, 120, "JPEG")
    status, doc = cluster.upload(data, mode="luma")
    assert status == 202 and cluster.wait_job(doc["id"])["state"] == "done"
    want = equalize_single(data, "luma").image
    for url in cluster.urls:  # each master has unwrapped the result's data key once
        assert cluster.request("GET", f"/api/v1/jobs/{doc['id']}/result", token=cluster.token("uploader"),
                               url=url)[2] == want
    def keys_ahead():  # the master the uploads go to has made its data keys ahead (the pool is full)
        return json.loads(cluster.request("GET", "/readyz", timeout=5)[2])["checks"]["vault"]["keys_ahead"] >= 64
    _wait(keys_ahead, 30, "the data key pool to fill")
    bao = BaoServer(cluster.root / "vault", f"{topo['net']}.10", 8200)
    assert bao.stop()
    try:
        def degraded():
            status, _, raw = cluster.request("GET", "/readyz", timeout=5)
            doc = json.loads(raw)
            return status == 200 and doc["status"] == "degraded" and not doc["checks"]["vault"]["ok"]
        _wait(degraded, 30, "/readyz to report Vault as unavailable")
        # stored results are still served (their keys are cached in memory) ...
        for url in cluster.urls:
            status, _, body = cluster.request("GET", f"/api/v1/jobs/{doc['id']}/result",
                                              token=cluster.token("uploader"), url=url)
            assert status == 200 and body == want
        # ... and a new upload is still accepted: its data key was made ahead, before Vault went away
        # (master/datakeys.py; the pool's end, a 503 that says why, is tested in tests/unit/test_runner.py)
        during = sample_image(160, 120, "JPEG")
        status, accepted = cluster.upload(during, mode="luma")
        assert status == 202, accepted
    finally:
        bao.start()
        bao.init_and_unseal()

    def recovered():
        status, _, raw = cluster.request("GET", "/readyz", timeout=5)
        return status == 200 and json.loads(raw)["checks"]["vault"]["ok"]
    _wait(recovered, 40, "/readyz to report Vault back")
    # the upload taken during the outage completes (on a leader that did not receive it, once its key
    # can be unwrapped again) and is the image a single process makes
    assert cluster.wait_job(accepted["id"], timeout=90)["state"] == "done"
    assert cluster.request("GET", f"/api/v1/jobs/{accepted['id']}/result", token=cluster.token("uploader"))[2] \
        == equalize_single(during, "luma").image
    status, doc = cluster.upload(sample_image(160, 120, "PNG"), mode="rgb")
    assert status == 202 and cluster.wait_job(doc["id"])["state"] == "done"
