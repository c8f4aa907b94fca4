"""`make local` run again on a running cluster starts nothing new and everything keeps working; its
Vault serves a listener certificate of pki_vault, which its own renewer put there."""
import json
import time

from cryptography import x509

from histo import procs
from histo.local import cluster as local_cluster
from histo.vault.listener import served_certificate
from histo.testing.cluster import sample_image

from .cluster_fixture import NET


def test_up_twice_is_harmless(cluster):
    pids = {name: cluster.pid(name) for name in ("master1", "master2", "worker1", "worker2")}
    info = local_cluster.up(cluster.root, masters=2, workers=2, cert_ttl="30s", zk_session_timeout=4.0, net=NET,
                            extra={k: v for k, v in cluster.config("master1").items()
                                if k in ("task_timeout", "job_timeout", "rate_per_address", "burst_per_address",
                                         "uploads_per_principal", "upload_burst", "max_upload_bytes",
                                         "worker_strip_min_pixels")})
    assert {name: cluster.pid(name) for name in pids} == pids  # nothing restarted
    assert info["urls"] == cluster.urls
    env = (cluster.root / "env").read_text()
    assert oct((cluster.root / "env").stat().st_mode & 0o777) == "0o600"
    for key in ("HISTO_URL", "HISTO_CA", "HISTO_TOKEN_ADMIN", "HISTO_TOKEN_UPLOADER", "HISTO_TOKEN_VIEWER"):
        assert f"{key}=" in env
    status, doc = cluster.upload(sample_image(50, 40, "JPEG"), token=info["env"]["HISTO_TOKEN_UPLOADER"])
    assert status == 202 and cluster.wait_job(doc["id"])["state"] == "done"


def test_local_vault_serves_its_renewers_certificate(cluster):
    """`make local` starts one listener renewer per Vault node (and `down` stops it, as any service):
    its first pass replaces the bootstrap CA's fallback with a pki_vault certificate."""
    sdir = cluster.root / "vault1-listener"
    assert procs.alive(sdir / "pid", f"--config {sdir / 'config.json'}")
    cfg = json.loads((sdir / "config.json").read_text())
    deadline, served = time.time() + 30, None
    while time.time() < deadline:
        served = served_certificate(cfg["address"], cfg["port"], cfg["vault_ca"])
        if served is not None and served.issuer.rfc4514_string() == "CN=histo vault listener CA":
            break
        time.sleep(0.5)
    assert served is not None and served.issuer.rfc4514_string() == "CN=histo vault listener CA"
    names = served.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(a) for a in names.get_values_for_type(x509.IPAddress)] == [cfg["address"]]
