"""Full jobs through the real local cluster: every mode and format, bit-identical to one process."""
import io
import json

import pytest
from PIL import Image

from histo.compute.equalize import equalize_single
from histo.testing.cluster import sample_image


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
@pytest.mark.parametrize("mode", ["gray", "luma", "rgb"])
def test_job_matches_single_process(cluster, fmt, mode):
    data = sample_image(333, 257, fmt)
    status, doc = cluster.upload(data, mode=mode)
    assert status == 202, doc
    job = cluster.wait_job(doc["id"])
    assert job["state"] == "done", job
    assert job["tiles"] == 1 and job["format"] == fmt and (job["width"], job["height"]) == (333, 257)

    status, headers, body = cluster.request("GET", f"/api/v1/jobs/{doc['id']}/result", token=cluster.token("uploader"))
    assert status == 200
    assert headers["Content-Type"] == {"JPEG": "image/jpeg", "PNG": "image/png"}[fmt]
    reference = equalize_single(data, mode)
    assert body == reference.image, "distributed result differs from the one-process computation"
    assert Image.open(io.BytesIO(body)).format == fmt

    status, _, raw = cluster.request("GET", f"/api/v1/jobs/{doc['id']}/histogram", token=cluster.token("uploader"))
    hist = json.loads(raw)
    assert status == 200 and hist["before"] == reference.hist_before and hist["after"] == reference.hist_after
    assert all(len(v) == 256 for v in hist["before"].values())

    status, headers, png = cluster.request("GET", f"/api/v1/jobs/{doc['id']}/histogram.png",
                                           token=cluster.token("uploader"))
    assert status == 200 and png.startswith(b"\x89PNG")


def test_upload_to_the_standby_is_stored_and_queued_there_and_run_by_the_leader(cluster):
    leader = cluster.leader()
    standby = [u for u in cluster.urls if not u.startswith(f"https://{cluster.config(leader)['address']}:")][0]
    name = next(n for n in ("master1", "master2") if n != leader)
    data = sample_image(120, 90, "PNG")
    status, doc = cluster.upload(data, mode="rgb", url=standby)
    assert status == 202, doc
    job = cluster.wait_job(doc["id"], url=standby, long_poll=30)  # the standby long-polls on a ZooKeeper watch
    assert job["state"] == "done"
    # the standby accepted it itself (audit: its own decision) and relayed nothing to the leader
    audit = (cluster.service_dir(name) / "audit.log").read_text()
    assert f"job {doc['id']}" in audit
    leader_audit = (cluster.service_dir(leader) / "audit.log").read_text()
    assert f"job {doc['id']}" not in leader_audit
    status, _, body = cluster.request("GET", f"/api/v1/jobs/{doc['id']}/result", token=cluster.token("uploader"),
                                      url=standby)
    assert status == 200 and body == equalize_single(data, "rgb").image


def test_bad_inputs_get_clear_4xx_and_cluster_keeps_serving(cluster):
    token = cluster.token("uploader")
    cases = [
        (b"not an image at all", 415),
        (b"GIF89a" + b"\0" * 64, 415),
        (sample_image(64, 64, "JPEG")[:200], 400),
    ]
    for data, expected in cases:
        status, doc = cluster.upload(data, token=token)
        assert status == expected, doc
        assert set(doc) == {"error", "message"}
    status, doc = cluster.upload(sample_image(32, 32, "PNG"), mode="sepia")
    assert status == 400 and doc["error"] == "bad_mode"
    status, _, raw = cluster.request("POST", "/api/v1/jobs", token=token, body=b"x",
                                     headers={"Content-Type": "text/plain"})
    assert status == 400 and json.loads(raw)["error"]
    # the legitimate path still works afterwards
    status, doc = cluster.upload(sample_image(64, 48, "JPEG"))
    assert status == 202 and cluster.wait_job(doc["id"])["state"] == "done"


def test_cluster_view_and_health(cluster):
    status, _, raw = cluster.request("GET", "/healthz")
    assert status == 200 and json.loads(raw)["status"] == "ok"
    status, _, raw = cluster.request("GET", "/readyz")
    assert status == 200 and json.loads(raw)["checks"]["zookeeper"]["ok"]
    status, _, raw = cluster.request("GET", "/api/v1/cluster", token=cluster.token("viewer"))
    view = json.loads(raw)
    assert status == 200 and view["leader"] in {"master1", "master2"}
    assert {w["name"] for w in view["workers"]} == {"worker1", "worker2"}
    assert all(w["spiffe_id"] == f"spiffe://histo.internal/worker/{w['name']}" and w["cert_not_after"]
               for w in view["workers"])


def test_tokens_are_required(cluster):
    status, _, raw = cluster.request("GET", "/api/v1/jobs")
    assert status == 401 and json.loads(raw)["error"]
    status, _, raw = cluster.request("GET", "/api/v1/jobs", token="not-a-token")
    assert status == 401
    status, _, raw = cluster.request("GET", "/api/v1/jobs", token=cluster.token("uploader"))
    assert status == 200 and "jobs" in json.loads(raw)
