"""`make local` run again on a running cluster starts nothing new and everything keeps working."""
from histo.local import cluster as local_cluster
from histo.testing.cluster import sample_image

from .cluster_fixture import NET


def test_up_twice_is_harmless(cluster):
    pids = {name: cluster.pid(name) for name in ("master1", "master2", "worker1", "worker2")}
    info = local_cluster.up(cluster.root, masters=2, workers=2, cert_ttl="30s", zk_session_timeout=4.0, net=NET,
                            extra={k: v for k, v in cluster.config("master1").items()
                                if k in ("task_timeout", "job_timeout", "rate_per_address", "burst_per_address",
                                         "uploads_per_principal", "upload_burst", "max_upload_bytes",
                                         "min_tile_pixels")})
    assert {name: cluster.pid(name) for name in pids} == pids  # nothing restarted
    assert info["urls"] == cluster.urls
    env = (cluster.root / "env").read_text()
    assert oct((cluster.root / "env").stat().st_mode & 0o777) == "0o600"
    for key in ("HISTO_URL", "HISTO_CA", "HISTO_TOKEN_ADMIN", "HISTO_TOKEN_UPLOADER", "HISTO_TOKEN_VIEWER"):
        assert f"{key}=" in env
    status, doc = cluster.upload(sample_image(50, 40, "JPEG"), token=info["env"]["HISTO_TOKEN_UPLOADER"])
    assert status == 202 and cluster.wait_job(doc["id"])["state"] == "done"
