"""Certificates are short-lived (30 s in tests) and rotate under continuous load with no failed request."""
import concurrent.futures
import json
import time

import pytest

from histo.testing.cluster import sample_image

pytestmark = pytest.mark.long

LOAD_SECONDS = 45


def _rotations(cluster) -> dict[str, int]:
    out = {}
    for url in cluster.urls:
        status, _, raw = cluster.request("GET", "/api/v1/cluster", token=cluster.token("viewer"), url=url)
        doc = json.loads(raw)
        out[doc["self"]["name"]] = doc["self"]["certificate"]["rotations"]
    return out


def _worker_expiries(cluster) -> dict[str, str]:
    status, _, raw = cluster.request("GET", "/api/v1/cluster", token=cluster.token("viewer"))
    return {w["name"]: w["cert_not_after"] for w in json.loads(raw)["workers"]}


def test_rotation_under_load_drops_nothing(cluster):
    before = _rotations(cluster)
    worker_certs = [_worker_expiries(cluster)]
    data = sample_image(256, 192, "JPEG")
    failures, done = [], 0
    deadline = time.time() + LOAD_SECONDS

    def one_job(i: int):
        url = cluster.urls[i % len(cluster.urls)]  # through the leader and through the standby
        status, doc = cluster.upload(data, mode="luma", url=url)
        if status != 202:
            return f"upload {status} {doc}"
        job = cluster.wait_job(doc["id"], url=url)
        if job["state"] != "done":
            return f"job {job['state']}: {job.get('reason')}"
        status, _, _ = cluster.request("GET", f"/api/v1/jobs/{doc['id']}/result", token=cluster.token("uploader"),
                                       url=url)
        return None if status == 200 else f"result {status}"

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        i = 0
        while time.time() < deadline:
            futures = [pool.submit(one_job, i + k) for k in range(4)]
            i += 4
            for f in futures:
                try:
                    err = f.result()
                except Exception as exc:  # a dropped connection counts as a failure
                    err = f"{type(exc).__name__}: {exc}"
                if err:
                    failures.append(err)
                else:
                    done += 1
            worker_certs.append(_worker_expiries(cluster))
    after = _rotations(cluster)
    assert not failures, failures[:5]
    assert done >= 20
    for name in before:
        assert after[name] - before[name] >= 3, (before, after)
    for worker in ("worker1", "worker2"):
        assert len({snap.get(worker) for snap in worker_certs}) >= 3, "workers rotate too"
