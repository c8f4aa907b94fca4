"""Root on a worker forges pixels: its own certificate, secret_id and digest, its own worker process
replaced by one that computes honestly and then returns another image — the upload's own pixels,
re-encoded in the job's format and size — beside the honest histograms. Every check the leader makes on
a result alone passes such a result (tests/unit/test_scheduler_workers.py shows it delivered when
nothing is verified). With verification (master/scheduler.py), another worker computes the job again;
the results differ, a third worker decides, and the forger is outvoted: reported as a forged result
(the quarantine rule's event on the leader's stream) while every user still gets the equalized image,
bit-identical to one process.

Its own cluster (cluster_fixture.FORGED_NET): 2 masters, 3 workers, every job verified; marked
disruptive (a worker process replaced)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from histo import procs
from histo.compute.equalize import equalize_single
from histo.local import cluster as local_cluster
from histo.testing.cluster import Cluster, sample_image, until

from .cluster_fixture import FORGED_NET
from .test_secops_feed import _stream_kinds

pytestmark = [pytest.mark.disruptive, pytest.mark.long]

# What root on worker3 runs in place of its worker: the real service with one function swapped, the
# `--config` of the real one on its command line (so `histo local down` stops it like the real one).
FORGER = """
import io, sys
from PIL import Image
import histo.worker.service as service
from histo.compute import frame, imageio
honest = service.equalize_upload

def forged(data, *args, **kwargs):
    result, plot = frame.unpack_result(honest(data, *args, **kwargs))
    original = Image.open(io.BytesIO(data))
    result.image = imageio.encode(original, result.fmt)  # right format, size and histograms; wrong pixels
    return frame.pack_result(result, plot)

service.equalize_upload = forged
from histo.cli import main
main(["worker", "--config", sys.argv[2]])
"""


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    base = Path(tempfile.mkdtemp(prefix="histo-forged-"))
    root = base / "local"
    try:
        info = local_cluster.up(root, masters=2, workers=3, cert_ttl="5m", net=FORGED_NET,
                                extra={"task_timeout": 20.0, "job_timeout": 90.0, "verify_fraction": 1.0,
                                       "uploads_per_principal": 100.0, "upload_burst": 200})
        yield Cluster(root=root.resolve(), env=info["env"])
    finally:
        local_cluster.down(root)
        if not os.environ.get("HISTO_KEEP_TEST_STATE"):
            shutil.rmtree(base, ignore_errors=True)


def _receipt_workers(cluster: Cluster, job: str) -> list[str]:
    import base64
    status, _h, raw = cluster.request("GET", f"/api/v1/jobs/{job}/receipt", token=cluster.token("uploader"))
    assert status == 200, raw
    payload = raw.decode().split(".")[1]
    claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return [w.rsplit("/", 1)[1] for w in claims["workers"]]


def _run(cluster: Cluster, data: bytes, mode: str) -> tuple[str, bytes]:
    status, doc = cluster.upload(data, mode=mode)
    assert status == 202, doc
    job = cluster.wait_job(doc["id"], timeout=120)
    assert job["state"] == "done", job
    status, _h, image = cluster.request("GET", f"/api/v1/jobs/{doc['id']}/result", token=cluster.token("uploader"))
    assert status == 200
    return doc["id"], image


def _leader_events(cluster: Cluster) -> list[dict[str, Any]]:
    """What a viewer's event stream on the leader holds (its history first)."""
    leader = cluster.leader()
    assert leader is not None
    return _stream_kinds(cluster, leader, cluster.token("viewer"))


def _live(cluster: Cluster) -> list[str]:
    for url in cluster.urls:
        status, _h, raw = cluster.request("GET", "/readyz", url=url, timeout=5)
        doc = json.loads(raw)
        if doc["checks"].get("leader", {}).get("leader"):
            live: list[str] = doc["checks"]["workers"]["live"]
            return live
    return []


def test_honest_workers_agree_byte_for_byte_and_the_receipt_names_both(cluster: Cluster) -> None:
    for mode, fmt in (("luma", "JPEG"), ("rgb", "PNG"), ("gray", "JPEG")):
        data = sample_image(300, 200, fmt)
        job, image = _run(cluster, data, mode)
        assert image == equalize_single(data, mode).image
        assert len(set(_receipt_workers(cluster, job))) == 2  # computed twice, by two workers
    assert not [e for e in _leader_events(cluster) if e.get("kind") in ("result_refused", "result_disputed")]


def test_a_worker_that_forges_pixels_is_outvoted_and_nobody_gets_its_image(cluster: Cluster) -> None:
    sdir = cluster.service_dir("worker3")
    assert procs.stop(sdir / "pid", f"--config {sdir / 'config.json'}")
    procs.spawn([sys.executable, "-c", FORGER, "--config", str(sdir / "config.json")], sdir / "service.log",
                sdir / "pid")
    assert until(lambda: "worker3" in _live(cluster), 60), "the forging worker never joined"
    data = sample_image(320, 240, "JPEG")
    want = equalize_single(data, "luma").image
    jobs = [_run(cluster, data, "luma") for _ in range(6)]  # round robin: worker3 computes some of them
    assert all(image == want for _, image in jobs)  # every user got the honest image
    assert not [j for j, _ in jobs if "worker3" in _receipt_workers(cluster, j)]
    refused = [e for e in _leader_events(cluster) if e.get("kind") == "result_refused"]
    assert refused and {e.get("worker") for e in refused} == {"worker3"}, refused
    assert all("outvoted" in str(e.get("reason")) for e in refused), refused
    # the legitimate path: worker3's real process back, its results agree again
    pid = procs.read_pid(sdir / "pid")
    assert pid is not None
    os.kill(pid, signal.SIGTERM)
    assert until(lambda: procs.gone(pid), 20)
    cluster.restart("worker3")
    assert until(lambda: "worker3" in _live(cluster), 60)
    jobs = [_run(cluster, data, "luma") for _ in range(4)]
    assert all(image == want for _, image in jobs)
    assert any("worker3" in _receipt_workers(cluster, j) for j, _ in jobs)
