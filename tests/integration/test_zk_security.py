"""ZooKeeper locked down (real ZooKeeper of the test cluster): TLS only with our CA's certificates,
digest credentials, ACLs on every node. Each refusal beside the legitimate path."""
import json
import os
import socket
import ssl
import stat

import pytest
from kazoo.exceptions import NoAuthError
from kazoo.handlers.threading import KazooTimeoutError
from kazoo.security import Permissions, make_acl

from histo.testing.attacker import zk_client, zk_credentials
from histo.testing.cluster import sample_image
from histo.zk.acl import ZK_CONFIG, ZK_QUOTA, ZK_SYSTEM


@pytest.fixture(scope="module")
def master_zk(cluster):
    client = zk_client(cluster, "master1", zk_credentials(cluster, "master"))
    yield client
    client.stop()
    client.close()


@pytest.fixture(scope="module")
def worker_zk(cluster):
    client = zk_client(cluster, "worker1", zk_credentials(cluster, "worker"))
    yield client
    client.stop()
    client.close()


def test_no_client_certificate_no_session(cluster, master_zk):
    with pytest.raises((KazooTimeoutError, Exception)):
        c = zk_client(cluster, None, zk_credentials(cluster, "master"), timeout=5)
        c.stop()
    assert master_zk.exists("/histo/jobs")  # the legitimate client is in


def test_no_plain_port(cluster):
    import socket
    topo = json.loads((cluster.root / "topology.json").read_text())
    with pytest.raises(OSError):
        socket.create_connection((f"{topo['net']}.11", 2181), timeout=2).close()


def test_certificate_without_credentials_reads_and_writes_nothing(cluster, master_zk):
    anon = zk_client(cluster, "worker1", None)
    wrong = zk_client(cluster, "worker1", ("histo-master", "not-the-password"))
    try:
        for c in (anon, wrong):
            with pytest.raises(NoAuthError):
                c.get_children("/histo/jobs")
            with pytest.raises(NoAuthError):
                c.create("/intruder", b"x")
            with pytest.raises(NoAuthError):
                c.create("/histo/election/x", b"x")
    finally:
        for c in (anon, wrong):
            c.stop()
            c.close()
    assert master_zk.get_children("/histo/jobs") is not None


def test_worker_credentials_cannot_touch_jobs_election_or_other_workers(cluster, master_zk, worker_zk):
    status, doc = cluster.upload(sample_image(40, 30, "PNG"), mode="gray")
    assert status == 202
    job = f"/histo/jobs/{doc['id']}"
    cluster.wait_job(doc["id"])
    assert worker_zk.exists(job)  # workers may read job state
    with pytest.raises(NoAuthError):
        worker_zk.delete(job, recursive=True)
    with pytest.raises(NoAuthError):
        worker_zk.set(job, b'{"state": "done"}')
    with pytest.raises(NoAuthError):
        worker_zk.create("/histo/election/fake-", b"worker1", ephemeral=True, sequence=True)
    with pytest.raises(NoAuthError):
        worker_zk.set("/histo/workers/worker2/member", b'{"endpoint": "https://evil"}')
    with pytest.raises(NoAuthError):
        worker_zk.delete("/histo/workers/worker2/member")
    with pytest.raises(NoAuthError):
        worker_zk.create("/histo/revoked/x", b"")
    # legitimate: a worker rewrites its own member node (its certificate's x509 identity), masters admin jobs
    data, _ = worker_zk.get("/histo/workers/worker1/member")
    worker_zk.set("/histo/workers/worker1/member", data)
    master_zk.create("/histo/jobs/zk-test", b"{}")
    master_zk.delete("/histo/jobs/zk-test")
    assert master_zk.exists(job)


def test_no_node_is_world_accessible(master_zk):
    """The whole tree, ZooKeeper's own nodes included: nothing world-accessible, except that
    ZooKeeper recreates /zookeeper/config (when it exists) read-only for everyone at every start."""
    todo = ["/"]
    seen: list[str] = []
    while todo:
        path = todo.pop()
        acls, _ = master_zk.get_acls(path)
        seen.append(path)
        for acl in acls:
            if path == ZK_CONFIG and acl.id.scheme == "world":
                assert acl.perms == Permissions.READ, f"{path} is world-writable: {acl}"
                continue
            assert acl.id.scheme != "world", f"{path} has a world ACL: {acl}"
            if acl.id.scheme == "digest" and acl.id.id.startswith("histo-worker:"):
                assert not acl.perms & (Permissions.DELETE | Permissions.ADMIN), f"{path} lets workers delete"
                assert not path.startswith(ZK_SYSTEM), f"{path}: workers have no business in ZooKeeper's own nodes"
        todo += [f"{path.rstrip('/')}/{c}" for c in master_zk.get_children(path)]
    assert ZK_SYSTEM in seen and ZK_QUOTA in seen and len(seen) > 8


def test_no_digest_and_worker_digest_cannot_write_zookeeper_nodes(cluster, master_zk):
    """A holder of a histo certificate with no digest, or with the workers' digest, can create nothing
    under /zookeeper or /zookeeper/quota (no memory exhaustion, no zookeeper_limits crash), nor change
    their ACLs; masters still administer them."""
    anon = zk_client(cluster, "worker1", None)
    worker = zk_client(cluster, "worker1", zk_credentials(cluster, "worker"))
    try:
        for c in (anon, worker):
            for path in (f"{ZK_SYSTEM}/intruder", f"{ZK_QUOTA}/intruder", f"{ZK_QUOTA}/histo/zookeeper_limits"):
                with pytest.raises(NoAuthError):
                    c.create(path, b"count=1,bytes=1", makepath=True)
            for path in (ZK_SYSTEM, ZK_QUOTA):
                with pytest.raises(NoAuthError):
                    c.set_acls(path, [make_acl("world", "anyone", all=True)])
                with pytest.raises(NoAuthError):
                    c.get_children(path)
        assert {a.id.scheme for a in master_zk.get_acls(ZK_QUOTA)[0]} == {"digest"}
    finally:
        for c in (anon, worker):
            c.stop()
            c.close()
    master_zk.create(f"{ZK_QUOTA}/histo-probe", b"", acl=master_zk.get_acls(ZK_QUOTA)[0])
    assert "histo-probe" in master_zk.get_children(ZK_QUOTA)
    master_zk.delete(f"{ZK_QUOTA}/histo-probe")


def test_zookeeper_answers_ruok_after_the_acl_change(cluster):
    topo = json.loads((cluster.root / "topology.json").read_text())
    tls = cluster.service_dir("worker1") / "tls"
    ctx = ssl.create_default_context(cafile=str(tls / "ca.pem"))
    ctx.load_cert_chain(str(tls / "cert.pem"), str(tls / "key.pem"))
    address = f"{topo['net']}.11"
    with socket.create_connection((address, 2281), timeout=5) as raw, \
            ctx.wrap_socket(raw, server_hostname=address) as s:
        s.sendall(b"ruok")
        assert s.recv(4) == b"imok"


def test_super_digest_only_in_private_config(cluster):
    cfg = cluster.root / "zk1" / "conf" / "zoo.cfg"
    assert stat.S_IMODE(cfg.stat().st_mode) == 0o600
    assert "superDigest=super:" in cfg.read_text()
    pid = int((cluster.root / "zk1" / "zk.pid").read_text())
    cmdline = open(f"/proc/{pid}/cmdline", "rb").read().decode()
    environ = open(f"/proc/{pid}/environ", "rb").read().decode()
    assert "superDigest" not in cmdline and "super:" not in cmdline and "super:" not in environ
    assert os.path.exists(f"/proc/{pid}")


def test_membership_is_bound_to_the_certificate(cluster, master_zk, worker_zk):
    """Root on worker1 (its certificate, its digest) can neither invent members nor squat another
    worker's name; its own membership still works."""
    for attempt in (lambda: worker_zk.create("/histo/workers/ghost1", b"", ephemeral=True),
                    lambda: worker_zk.create("/histo/workers/ghost2"),
                    lambda: worker_zk.create("/histo/workers/worker2/member", b"{}", ephemeral=True),
                    lambda: worker_zk.create("/histo/workers/worker2/other", b"{}", ephemeral=True),
                    lambda: worker_zk.delete("/histo/workers/worker2/member")):
        with pytest.raises(NoAuthError):
            attempt()
    assert sorted(master_zk.get_children("/histo/workers")) == ["worker1", "worker2"]
    # the legitimate worker1 may replace its own member node inside its own slot
    assert master_zk.exists("/histo/workers/worker1/member")
    status, doc = cluster.upload(sample_image(40, 30, "PNG"), mode="gray")
    assert status == 202 and cluster.wait_job(doc["id"])["state"] == "done"
