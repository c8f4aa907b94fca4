"""DELETE /api/v1/jobs/{id} and signed receipts against the real cluster (OpenBao + ZooKeeper, two
masters, two workers). Every refusal is shown beside the legitimate path working."""
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from hvac.exceptions import Forbidden

from histo.edge import receipts

from histo.testing.attacker import root_client, service_vault
from histo.testing.cluster import Cluster, sample_image
from .test_edge import issue

UNKNOWN = "0" * 24


def done_job(cluster: Cluster, token: str | None = None, data: bytes | None = None, url: str | None = None) -> str:
    status, doc = cluster.upload(data or sample_image(96, 64, "JPEG"), token=token, url=url)
    assert status == 202, doc
    assert cluster.wait_job(doc["id"], token=token)["state"] == "done"
    job_id: str = doc["id"]
    return job_id


def get(cluster: Cluster, path: str, token: str, url: str | None = None) -> tuple[int, dict[str, str], bytes]:
    status, headers, body = cluster.request("GET", path, token=token, url=url)
    return status, headers, body


def delete(cluster: Cluster, job_id: str, token: str, url: str | None = None) -> tuple[int, dict[str, Any]]:
    status, _, body = cluster.request("DELETE", f"/api/v1/jobs/{job_id}", token=token, url=url)
    doc: dict[str, Any] = json.loads(body or b"{}")
    return status, doc


def standby_url(cluster: Cluster) -> str:
    leader_name = cluster.leader()
    assert leader_name is not None
    leader = cluster.config(leader_name)["address"]
    return [u for u in cluster.urls if f"//{leader}:" not in u][0]


def audit_lines(cluster: Cluster) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for name in ("master1", "master2"):
        out += [json.loads(line) for line in (cluster.service_dir(name) / "audit.log").read_text().splitlines()]
    return out


# -- DELETE ----------------------------------------------------------------------------------------

def test_owner_deletes_then_gone_for_the_owner_and_not_found_for_others(cluster: Cluster) -> None:
    alice, admin = cluster.token("uploader"), cluster.token("admin")
    bob = issue(cluster, "uploader", "bob")
    job = done_job(cluster)

    # another uploader's DELETE is a 404 exactly like an unknown job's, and the job is untouched
    s_other, b_other = delete(cluster, job, bob)
    s_unknown, b_unknown = delete(cluster, UNKNOWN, bob)
    assert s_other == s_unknown == 404 and b_other == b_unknown == {"error": "not_found", "message": "no such job"}
    # a viewer may not delete at all
    s_viewer, b_viewer = delete(cluster, job, cluster.token("viewer"))
    assert s_viewer == 403 and b_viewer["error"] == "forbidden"
    assert get(cluster, f"/api/v1/jobs/{job}/result", alice)[0] == 200  # still there for its owner

    status, body = delete(cluster, job, alice)
    assert status == 200 and body == {"id": job, "state": "deleted", "cancelled": False}
    for path in ("", "/result", "/histogram", "/histogram.png", "/receipt"):
        for url in cluster.urls:  # every master answers the same
            s_owner, _, raw = get(cluster, f"/api/v1/jobs/{job}{path}", alice, url=url)
            assert s_owner == 410 and json.loads(raw)["error"] == "gone", (path, url, raw)
            assert get(cluster, f"/api/v1/jobs/{job}{path}", admin, url=url)[0] == 410
            s_bob, _, raw_bob = get(cluster, f"/api/v1/jobs/{job}{path}", bob, url=url)
            s_unk, _, raw_unk = get(cluster, f"/api/v1/jobs/{UNKNOWN}{path}", bob, url=url)
            assert s_bob == s_unk == 404 and raw_bob == raw_unk  # no existence leak, even of a deleted job
    assert job not in get(cluster, "/api/v1/jobs", alice)[2].decode()
    assert job not in get(cluster, "/api/v1/jobs", admin)[2].decode()
    assert delete(cluster, job, alice)[0] == 410  # deleting again: gone
    assert delete(cluster, job, bob)[0] == 404

    entries = [e for e in audit_lines(cluster) if job in e["what"]]
    assert any(e["who"] == "alice" and e["decision"] == "allow" and e["what"] == f"DELETE job {job}" for e in entries)
    assert any(e["who"] == "bob" and e["decision"] == "deny" and e["what"].startswith("DELETE") for e in entries)
    # and the legitimate path keeps working
    assert get(cluster, f"/api/v1/jobs/{done_job(cluster)}/result", alice)[0] == 200


def test_delete_through_the_standby_removes_the_result_on_the_master_holding_it(cluster: Cluster) -> None:
    alice = cluster.token("uploader")
    standby = standby_url(cluster)
    job = done_job(cluster)
    assert get(cluster, f"/api/v1/jobs/{job}/result", alice, url=standby)[0] == 200  # served via the holder
    status, body = delete(cluster, job, alice, url=standby)
    assert status == 200 and body["state"] == "deleted"
    for url in cluster.urls:
        assert get(cluster, f"/api/v1/jobs/{job}/result", alice, url=url)[0] == 410


def test_admin_deletes_another_users_job(cluster: Cluster) -> None:
    carol = issue(cluster, "uploader", "carol")
    job = done_job(cluster, token=carol)
    status, body = delete(cluster, job, cluster.token("admin"))
    assert status == 200 and body["state"] == "deleted"
    status, _, raw = get(cluster, f"/api/v1/jobs/{job}", carol)
    assert status == 410 and json.loads(raw)["error"] == "gone"


def test_deleting_a_running_job_cancels_it(cluster: Cluster) -> None:
    alice = cluster.token("uploader")
    status, doc = cluster.upload(sample_image(1600, 1200, "PNG"), mode="rgb")
    assert status == 202
    status, body = delete(cluster, doc["id"], alice)
    assert status == 200 and body["state"] == "deleted"
    time.sleep(3)  # long enough for the job to have finished had it kept running
    status, _, raw = get(cluster, f"/api/v1/jobs/{doc['id']}", alice)
    assert status == 410, raw  # never resurrected as done by the runner finishing after the DELETE
    assert get(cluster, f"/api/v1/jobs/{doc['id']}/result", alice)[0] == 410
    assert cluster.wait_job(done_job(cluster), token=alice)["state"] == "done"  # the cluster keeps working


# -- receipts ----------------------------------------------------------------------------------------

def verify_cli(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    topo = json.loads((cluster.root / "topology.json").read_text())
    return subprocess.run([sys.executable, "-m", "histo.cli", "receipt", *args,
                           "--vault-url", f"https://{topo['net']}.10:8200",
                           "--vault-ca", str(cluster.root / "vault" / "tls" / "ca.pem"),
                           "--token-file", str(cluster.root / "receipt-verifier-token")],
                          capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def receipted(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path, str]:
    """A finished job of alice's: its upload, result and receipt on disk."""
    tmp = tmp_path_factory.mktemp("receipt")
    upload = sample_image(200, 150, "JPEG")
    job = done_job(cluster, data=upload)
    alice = cluster.token("uploader")
    status, headers, jws = get(cluster, f"/api/v1/jobs/{job}/receipt", alice)
    assert status == 200 and headers["Content-Type"].startswith("application/jose")
    _, _, result = get(cluster, f"/api/v1/jobs/{job}/result", alice)
    (tmp / "upload.jpg").write_bytes(upload)
    (tmp / "result.jpg").write_bytes(result)
    (tmp / "receipt.jws").write_bytes(jws)
    return job, tmp, jws.decode()


def test_receipt_verifies_with_the_cli(cluster: Cluster, receipted: tuple[str, Path, str]) -> None:
    job, tmp, jws = receipted
    out = verify_cli(cluster, "verify", "--receipt", str(tmp / "receipt.jws"), "--image", str(tmp / "result.jpg"),
                     "--upload", str(tmp / "upload.jpg"))
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"receipt ok: job {job} of alice") and "upload matches" in out.stdout
    keys = verify_cli(cluster, "keys")
    assert keys.returncode == 0, keys.stderr
    claims = receipts.verify(jws, json.loads(keys.stdout))  # offline, with the exported keys
    workers = {f"spiffe://histo.internal/worker/{n}" for n in ("worker1", "worker2")}
    assert claims["job"] == job and claims["sub"] == "alice" and claims["mode"] == "luma"
    assert claims["workers"] and set(claims["workers"]) <= workers
    leader = cluster.leader()
    assert claims["master"] == f"spiffe://histo.internal/master/{leader}"
    assert claims["created"] <= claims["finished"] <= claims["iat"] + 1
    # every master serves the same receipt (it was signed once, when the job finished), admin too
    for url in cluster.urls:
        assert get(cluster, f"/api/v1/jobs/{job}/receipt", cluster.token("admin"), url=url)[2].decode() == jws


def test_tampered_result_or_receipt_fails_verification(cluster: Cluster, receipted: tuple[str, Path, str]) -> None:
    job, tmp, jws = receipted
    result = bytearray((tmp / "result.jpg").read_bytes())
    result[len(result) // 2] ^= 0x01
    (tmp / "tampered.jpg").write_bytes(bytes(result))
    h, c, s = jws.split(".")
    body = json.loads(receipts.b64url_decode(c))
    (tmp / "forged.jws").write_text(f"{h}.{receipts.b64url(json.dumps({**body, 'sub': 'mallory'}).encode())}.{s}")
    other = sample_image(200, 150, "PNG")
    (tmp / "other-upload.png").write_bytes(other)
    for receipt, image, extra, says in (
            ("receipt.jws", "tampered.jpg", (), "is not the result"),
            ("forged.jws", "result.jpg", (), "does not verify"),
            ("receipt.jws", "result.jpg", ("--upload", str(tmp / "other-upload.png")), "is not the one")):
        out = verify_cli(cluster, "verify", "--receipt", str(tmp / receipt), "--image", str(tmp / image), *extra)
        assert out.returncode != 0 and says in out.stderr and "REJECTED" in out.stderr, out
        assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr
    ok = verify_cli(cluster, "verify", "--receipt", str(tmp / "receipt.jws"), "--image", str(tmp / "result.jpg"))
    assert ok.returncode == 0, ok.stderr


def test_receipt_of_another_users_job_is_not_found(cluster: Cluster, receipted: tuple[str, Path, str]) -> None:
    job = receipted[0]
    bob = issue(cluster, "uploader", "bob")
    s_other, _, b_other = get(cluster, f"/api/v1/jobs/{job}/receipt", bob)
    s_unknown, _, b_unknown = get(cluster, f"/api/v1/jobs/{UNKNOWN}/receipt", bob)
    assert s_other == s_unknown == 404 and b_other == b_unknown
    assert get(cluster, f"/api/v1/jobs/{job}/receipt", cluster.token("viewer"))[0] == 403
    assert get(cluster, f"/api/v1/jobs/{job}/receipt", cluster.token("uploader"))[0] == 200


def test_only_masters_sign_receipts_and_only_verifiers_read_the_key(cluster: Cluster) -> None:
    claims = {"iss": "histo"}
    master = service_vault(cluster, "master1")
    master.login()
    signer = receipts.VaultReceiptSigner(lambda: master.client)
    assert signer.latest_version() >= 1  # a master may sign with the receipt key...
    # ...and read its public keys (GET /api/v1/receipts/keys publishes them), never the private ones
    ring = master.client.secrets.transit.read_key("histo-receipts", mount_point="transit")["data"]
    assert ring["exportable"] is False and all("PUBLIC KEY" in k["public_key"] for k in ring["keys"].values())
    with pytest.raises(Forbidden):  # ...but not sign with another hash or marshaling
        master.client.secrets.transit.sign_data("histo-receipts", "aGk=", hash_algorithm="sha2-512",
                                                marshaling_algorithm="jws", mount_point="transit")
    worker = service_vault(cluster, "worker1")
    worker.login()
    with pytest.raises(receipts.SigningUnavailable):  # a worker cannot forge a receipt
        receipts.VaultReceiptSigner(lambda: worker.client).sign(claims)
    with pytest.raises(Forbidden):
        worker.client.secrets.transit.read_key("histo-receipts", mount_point="transit")
    verifier = root_client(cluster)
    verifier.token = (cluster.root / "receipt-verifier-token").read_text().strip()
    assert verifier.secrets.transit.read_key("histo-receipts", mount_point="transit")["data"]["keys"]
    with pytest.raises(Forbidden):  # the verifier's token reads public keys and signs nothing
        verifier.secrets.transit.sign_data("histo-receipts", "aGk=", mount_point="transit")
    with pytest.raises(Forbidden):
        verifier.secrets.transit.read_key("histo-tokens", mount_point="transit")


def test_receipts_signed_before_a_key_rotation_still_verify(cluster: Cluster, receipted: tuple[str, Path, str]) -> None:
    job, tmp, jws = receipted
    root_client(cluster).secrets.transit.rotate_key("histo-receipts", mount_point="transit")
    keys = json.loads(verify_cli(cluster, "keys").stdout)
    assert len(keys) >= 2 and receipts.kid_of(jws) in keys
    out = verify_cli(cluster, "verify", "--receipt", str(tmp / "receipt.jws"), "--image", str(tmp / "result.jpg"))
    assert out.returncode == 0, out.stderr
    # a receipt of a job deleted since is gone with it
    assert delete(cluster, job, cluster.token("uploader"))[0] == 200
    assert get(cluster, f"/api/v1/jobs/{job}/receipt", cluster.token("uploader"))[0] == 410
