"""Durable, encrypted jobs against the real cluster (OpenBao, ZooKeeper, two masters, two workers, mTLS):
what is stored is sealed and on both masters, any master serves any result, a replica from a non-master
identity or with a wrong integrity tag is refused, a corrupted copy is replaced from the good one,
DELETE removes every copy, GET /api/v1/jobs pages, the masters' Vault policy allows data keys only."""
from __future__ import annotations

import http.client
import json
import ssl
import stat
from pathlib import Path
from typing import Any, Callable

import pytest
from hvac.exceptions import Forbidden

from histo.compute.equalize import equalize_single
from histo.master.envelope import digest
from histo.testing.attacker import service_vault, zk_client, zk_credentials
from histo.testing.cluster import Cluster, clear_probes, png_with_pixel_run, sample_image
from histo.zk.jobs import JobStore

from .test_edge import issue


def done(cluster: Cluster, data: bytes, token: str | None = None, mode: str = "gray") -> str:
    status, doc = cluster.upload(data, mode=mode, token=token)
    assert status == 202, doc
    job = cluster.wait_job(doc["id"], token=token)
    assert job["state"] == "done", job
    job_id: str = doc["id"]
    return job_id


def store_dir(cluster: Cluster, name: str) -> Path:
    return cluster.service_dir(name) / "store"


def blob_path(cluster: Cluster, name: str, job: str, kind: str) -> Path:
    return store_dir(cluster, name) / job[-2:] / f"{job}.{kind}"


def internal(cluster: Cluster, target: str, method: str, path: str, as_service: str, body: bytes | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """An internal mTLS call from `as_service`'s address with its certificate."""
    cfg, src = cluster.config(target), cluster.config(as_service)["address"]
    ctx = ssl.create_default_context(cafile=cluster.ca)
    tls = cluster.service_dir(as_service) / "tls"
    ctx.load_cert_chain(str(tls / "cert.pem"), str(tls / "key.pem"))
    conn = http.client.HTTPSConnection(cfg["address"], cfg["internal_port"], context=ctx, timeout=15,
                                       source_address=(src, 0))
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def test_stored_jobs_are_sealed_on_both_masters_and_any_master_serves_the_result(cluster: Cluster) -> None:
    data = png_with_pixel_run()
    job = done(cluster, data)
    want = equalize_single(data, "gray")
    for url in cluster.urls:  # either master answers, bit-identical to the one-process computation
        status, _, body = cluster.request("GET", f"/api/v1/jobs/{job}/result", token=cluster.token("uploader"), url=url)
        assert status == 200 and body == want.image
        status, _, raw = cluster.request("GET", f"/api/v1/jobs/{job}/histogram", token=cluster.token("uploader"),
                                         url=url)
        assert status == 200 and json.loads(raw)["after"] == want.hist_after
        status, headers, png = cluster.request("GET", f"/api/v1/jobs/{job}/histogram.png",
                                               token=cluster.token("uploader"), url=url)
        assert status == 200 and png.startswith(b"\x89PNG")
    probes = clear_probes(data, want.image)
    assert all(p in data for p in probes[1:2]) and probes[2] in want.image  # the probes find clear bytes
    for name in ("master1", "master2"):
        for kind in ("upload", "result"):
            path = blob_path(cluster, name, job, kind)
            assert path.exists(), (name, kind)
            assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        # nothing of the image in clear anywhere in the master's state folder (store, logs, temp files)
        for path in cluster.service_dir(name).rglob("*"):
            if path.is_file():
                raw = path.read_bytes()
                assert not any(p in raw for p in probes), path


def test_replicas_only_from_masters_and_only_intact(cluster: Cluster) -> None:
    job = done(cluster, sample_image(64, 48, "PNG"))
    blob = blob_path(cluster, "master1", job, "upload").read_bytes()
    path = f"/internal/v1/store/{job}/upload"
    good = {"X-Histo-Sha256": digest(blob), "Content-Type": "application/octet-stream"}
    # a worker identity (a compromised worker) cannot store, read or delete replicas
    for method, body in (("PUT", blob), ("GET", None), ("DELETE", None)):
        status, _ = internal(cluster, "master2", method, path if method != "DELETE" else f"/internal/v1/store/{job}",
                             "worker1", body=body, headers=good if body else None)
        assert status == 403, method
    # a master identity with an altered blob (one byte flipped, the original's tag) is refused
    altered = bytearray(blob)
    altered[-3] ^= 0x40
    status, raw = internal(cluster, "master2", "PUT", path, "master1", body=bytes(altered), headers=good)
    assert status == 400 and json.loads(raw)["error"] == "replica_refused"
    # an altered blob with a tag matching it, but not a sealed blob of this job and kind, is refused too
    other = sample_image(8, 8, "PNG")
    status, raw = internal(cluster, "master2", "PUT", path, "master1", body=other,
                           headers={"X-Histo-Sha256": digest(other)})
    assert status == 400 and json.loads(raw)["error"] == "replica_refused"
    status, raw = internal(cluster, "master2", "PUT", f"/internal/v1/store/{job}/result", "master1", body=blob,
                           headers=good)  # the upload's blob offered as the result
    assert status == 400 and json.loads(raw)["error"] == "replica_refused"
    assert blob_path(cluster, "master2", job, "upload").read_bytes() == blob  # the good copy is untouched
    # the legitimate path: the intact blob with its tag is stored (idempotently)
    status, raw = internal(cluster, "master2", "PUT", path, "master1", body=blob, headers=good)
    assert status == 201 and json.loads(raw)["stored"] == digest(blob)
    audit = (cluster.service_dir("master2") / "audit.log").read_text()
    assert "replica does not match its integrity tag" in audit


def test_a_corrupted_stored_result_is_detected_and_replaced_from_the_good_copy(cluster: Cluster) -> None:
    data = sample_image(96, 64, "JPEG")
    job = done(cluster, data, mode="luma")
    victim = blob_path(cluster, "master2", job, "result")
    good = blob_path(cluster, "master1", job, "result").read_bytes()
    raw = bytearray(victim.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # a disk error or an attacker with write access to master2's store
    victim.write_bytes(bytes(raw))
    master2 = [u for u in cluster.urls if cluster.config("master2")["address"] in u][0]
    status, _, body = cluster.request("GET", f"/api/v1/jobs/{job}/result", token=cluster.token("uploader"),
                                      url=master2)
    assert status == 200 and body == equalize_single(data, "luma").image
    assert victim.read_bytes() == good  # replaced by the intact copy


def test_delete_removes_every_stored_copy_other_users_get_404(cluster: Cluster) -> None:
    alice = cluster.token("uploader")
    mallory = issue(cluster, "uploader", "mallory")
    job = done(cluster, sample_image(64, 48, "PNG"))
    unknown = "0" * 32
    s_other, _, b_other = cluster.request("DELETE", f"/api/v1/jobs/{job}", token=mallory)
    s_unknown, _, b_unknown = cluster.request("DELETE", f"/api/v1/jobs/{unknown}", token=mallory)
    assert s_other == s_unknown == 404 and b_other == b_unknown
    assert all(blob_path(cluster, n, job, k).exists() for n in ("master1", "master2") for k in ("upload", "result"))
    status, _, raw = cluster.request("DELETE", f"/api/v1/jobs/{job}", token=alice)
    assert status == 200 and json.loads(raw)["state"] == "deleted"
    assert not any(blob_path(cluster, n, job, k).exists() for n in ("master1", "master2") for k in ("upload", "result"))
    for url in cluster.urls:
        status, _, raw = cluster.request("GET", f"/api/v1/jobs/{job}/result", token=alice, url=url)
        assert status == 410 and json.loads(raw)["error"] == "gone"


def test_list_jobs_is_paginated_by_owner(cluster: Cluster) -> None:
    pager = issue(cluster, "uploader", "pager")
    ids = [done(cluster, sample_image(16, 16, "PNG"), token=pager) for _ in range(5)]
    seen: list[str] = []
    cursor = ""
    for _ in range(5):
        status, _, raw = cluster.request("GET", f"/api/v1/jobs?limit=2{'&cursor=' + cursor if cursor else ''}",
                                         token=pager)
        assert status == 200
        page = json.loads(raw)
        assert len(page["jobs"]) <= 2
        seen += [j["id"] for j in page["jobs"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == sorted(ids, reverse=True)  # newest first, each once, nobody else's
    status, _, raw = cluster.request("GET", "/api/v1/jobs", token=cluster.token("uploader"))
    assert status == 200 and not set(ids) & {j["id"] for j in json.loads(raw)["jobs"]}
    for query in ("limit=0", "limit=201", "limit=two", "cursor=../../x", "cursor=", "cursor=" + "a" * 65):
        status, _, raw = cluster.request("GET", f"/api/v1/jobs?{query}", token=pager)
        assert status == 400 and json.loads(raw)["error"] == "bad_request", query


def test_zookeeper_keeps_a_bounded_number_of_nodes_per_job(cluster: Cluster) -> None:
    zk = zk_client(cluster, "master1", zk_credentials(cluster, "master"))
    try:
        store = JobStore(zk)
        counter = issue(cluster, "uploader", "counter")
        before = store.count_nodes()
        ids = [done(cluster, sample_image(16, 16, "JPEG"), token=counter) for _ in range(10)]
        after = store.count_nodes()
        # per finished job: its znode, its tasks folder with the last attempt of its task (one per job,
        # compute/work.py; 4 is a loose bound), its entry in the owner's index; the owner's own node once.
        # The active entry goes when the job ends; everything goes with retention (tests/unit/test_runner.py).
        strips = 4
        assert after - before <= (3 + strips) * len(ids) + 1, (before, after)
        for job in ids:
            assert len(zk.get_children(f"/histo/jobs/{job}/tasks")) <= strips
            assert zk.exists(f"/histo/active/{job}") is None
    finally:
        zk.stop()
        zk.close()


def test_masters_may_create_and_unwrap_data_keys_and_nothing_else(cluster: Cluster) -> None:
    vault = service_vault(cluster, "master1")
    vault.login()
    transit: Any = vault.client.secrets.transit
    key = transit.generate_data_key("histo-store", key_type="plaintext", bits=256)["data"]
    assert transit.decrypt_data("histo-store", ciphertext=key["ciphertext"])["data"]["plaintext"] == key["plaintext"]
    forbidden_calls: list[Callable[[], Any]] = [
                      lambda: transit.encrypt_data("histo-store", plaintext="aGk="),
                      lambda: transit.rewrap_data("histo-store", ciphertext=key["ciphertext"]),
                      lambda: transit.read_key("histo-store"),
                      lambda: transit.export_key("histo-store", key_type="encryption-key"),
                      lambda: transit.generate_data_key("histo-receipts", key_type="plaintext"),
                      lambda: transit.rotate_key("histo-store")]
    for forbidden in forbidden_calls:
        with pytest.raises(Forbidden):
            forbidden()
    worker = service_vault(cluster, "worker1")
    worker.login()
    with pytest.raises(Forbidden):
        worker.client.secrets.transit.generate_data_key("histo-store", key_type="plaintext")
    with pytest.raises(Forbidden):
        worker.client.secrets.transit.decrypt_data("histo-store", ciphertext=key["ciphertext"])


def test_storage_quota_refuses_before_anything_is_stored(cluster: Cluster) -> None:
    """An owner whose stored jobs fill their quota gets 413 quota_exceeded with the JSON body, and
    nothing of the refused upload is kept (no job, usage unchanged); other owners are not affected;
    deleting a job frees its bytes and the next upload is accepted. The owner's usage is brought to
    the edge of the quota through the same JobStore call the runner makes after storing."""
    quota = int(cluster.config("master1").get("store_quota_bytes", 2 << 30))
    zk = zk_client(cluster, "master1", zk_credentials(cluster, "master"))
    try:
        store = JobStore(zk)
        full = issue(cluster, "uploader", "quota-full")
        first = done(cluster, sample_image(32, 32, "PNG"), token=full)
        used = store.usage("quota-full")
        assert used > 0
        store.add_usage("quota-full", quota - used - 100)  # 100 bytes left: less than any sealed upload
        status, refused = cluster.upload(sample_image(32, 32, "PNG"), token=full)
        assert status == 413 and refused["error"] == "quota_exceeded", refused
        assert "quota" in refused["message"]
        assert store.usage("quota-full") == quota - 100
        status, _h, raw = cluster.request("GET", "/api/v1/jobs", token=full)
        assert status == 200 and [j["id"] for j in json.loads(raw)["jobs"]] == [first]
        status, other = cluster.upload(sample_image(32, 32, "PNG"), token=issue(cluster, "uploader", "quota-other"))
        assert status == 202, other
        status, _h, raw = cluster.request("DELETE", f"/api/v1/jobs/{first}", token=full)
        assert status == 200, raw
        store.add_usage("quota-full", -(quota - used - 100))  # what the test added goes too
        assert store.usage("quota-full") == 0
        assert done(cluster, sample_image(32, 32, "PNG"), token=full)
    finally:
        zk.stop()
        zk.close()
