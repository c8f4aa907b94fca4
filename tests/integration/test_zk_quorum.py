"""A real 3-node ZooKeeper ensemble (beside the test cluster's single server, on its own loopback
addresses, with identities from the test cluster's Vault): the ensemble forms over TLS with quorum
certificates from the ZooKeeper quorum CA, and the quorum ports refuse every other certificate of our
CA (a master's, a worker's, even a ZooKeeper host's client-port certificate). ZooKeeper's own nodes
stay usable by their owners (quota bookkeeping, the config node the server writes, ruok)."""
from __future__ import annotations

import json
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hvac
import pytest
from kazoo.client import KazooClient
from kazoo.exceptions import NoAuthError
from kazoo.security import Permissions

from histo import TRUST_DOMAIN
from histo.files import private_dir
from histo.local.zkserver import ZkServer
from histo.testing.cluster import Cluster
from histo.testing.attacker import root_client, service_vault, zk_credentials
from histo.vault.client import ServiceVault
from histo.vault.provision import wrapped_secret_id, write_credentials
from histo.vault.setup import apply as vault_apply
from histo.zk.acl import ZK_CONFIG, ZK_QUOTA, ZK_SYSTEM, bootstrap_tree
from histo.zk.client import connect
from histo.zk.prepare import prepare_local, quorum_identity

ZK_PORT, QUORUM_PORT, ELECTION_PORT = 2281, 2888, 3888
NAMES = ("zq1", "zq2", "zq3")


def _ensemble_hosts(net: str) -> list[dict[str, str]]:
    return [{"name": n, "role": "zookeeper", "address": f"{net}.{12 + i}"} for i, n in enumerate(NAMES)]


@pytest.fixture(scope="module")
def ensemble(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    topo = json.loads((cluster.root / "topology.json").read_text())
    net = topo["net"]
    members = _ensemble_hosts(net)
    admin = root_client(cluster)
    vault_apply(admin, {"trust_domain": TRUST_DOMAIN, "hosts": topo["hosts"] + members, "leaf_max_ttl": "24h",
                        "audit_log": str(cluster.root / "vault" / "audit.log")})
    peers = [{"id": i + 1, "address": h["address"], "quorum_port": QUORUM_PORT, "election_port": ELECTION_PORT}
             for i, h in enumerate(members)]
    base = tmp_path_factory.mktemp("zq")
    vault_cfg = cluster.config("master1")
    servers: list[ZkServer] = []
    try:
        for i, h in enumerate(members):
            creds = private_dir(base / h["name"] / "creds")
            role_id = admin.auth.approle.read_role_id(f"histo-{h['name']}")["data"]["role_id"]
            write_credentials(creds, role_id, wrapped_secret_id(admin, h["name"], h["address"]))
            zk = ZkServer(private_dir(base / h["name"] / "zk"), h["address"], ZK_PORT, server_id=i + 1, peers=peers)
            prepare_local(zk, vault_cfg["vault_url"], vault_cfg["vault_ca"], creds, h["name"], h["address"])
            servers.append(zk)
        for zk in servers:
            zk.start()
        yield {"servers": servers, "members": members, "net": net,
               "hosts": ",".join(f"{h['address']}:{ZK_PORT}" for h in members)}
    finally:
        for zk in servers:
            zk.stop()


def _master(cluster: Cluster, hosts: str, timeout: float = 60) -> KazooClient:
    tls = cluster.service_dir("master1") / "tls"
    user, password = zk_credentials(cluster, "master")
    ids = root_client(cluster).secrets.kv.v2.read_secret_version(
        "histo/zk/acl-ids", mount_point="secret", raise_on_deleted_version=True)["data"]["data"]
    deadline = time.time() + timeout
    while True:  # the ensemble serves once a leader is elected
        try:
            return connect(hosts, str(tls / "ca.pem"), str(tls / "cert.pem"), str(tls / "key.pem"), user, password,
                           "master", acl_ids=ids, timeout=10)
        except Exception:
            if time.time() > deadline:
                raise
            time.sleep(1)


def _handshake(address: str, port: int, cert: Path | None, key: Path | None) -> str:
    """A TLS 1.2 client (so a refused client certificate fails inside the handshake itself)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE  # only the server's verdict on us matters
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    if cert:
        ctx.load_cert_chain(str(cert), str(key))
    try:
        with socket.create_connection((address, port), timeout=5) as raw, ctx.wrap_socket(raw) as s:
            s.do_handshake()
            return "accepted"
    except ssl.SSLError as exc:
        return f"refused ({exc.reason})"
    except OSError as exc:
        return f"dropped ({type(exc).__name__})"


def _split_pem(bundle: Path, into: Path) -> tuple[Path, Path]:
    """quorum.pem holds key then certificate: the pair as a TLS client loads it."""
    text = bundle.read_text()
    key = text[:text.index("-----BEGIN CERTIFICATE-----")]
    cert = text[len(key):]
    into.mkdir(mode=0o700, exist_ok=True)
    (into / "cert.pem").write_text(cert)
    (into / "key.pem").write_text(key)
    (into / "key.pem").chmod(0o600)
    return into / "cert.pem", into / "key.pem"


def test_ensemble_forms_over_tls_with_quorum_certificates(cluster: Cluster, ensemble: dict[str, Any]) -> None:
    master = _master(cluster, ensemble["hosts"])
    try:
        master.create("/quorum-probe", b"x")
        assert master.get("/quorum-probe")[0] == b"x"
        master.delete("/quorum-probe")
        config, _ = master.get(ZK_CONFIG)  # written by the servers themselves, read by anyone, written by none
        assert all(f"server.{i}=" in config.decode() for i in (1, 2, 3))
    finally:
        master.stop()
        master.close()
    for zk in ensemble["servers"]:
        cfg = zk.cfg_path.read_text()
        assert "ssl.quorum.trustStore.location=" + str(zk.dir / "conf" / "quorum-ca.pem") in cfg
        ca = (zk.dir / "conf" / "quorum-ca.pem").read_text()
        assert ca.count("BEGIN CERTIFICATE") == 1  # the quorum CA alone, not the histo chain
        assert ca.strip() not in (cluster.root / "ca.pem").read_text()


def test_quorum_ports_accept_only_zookeeper_peers(cluster: Cluster, ensemble: dict[str, Any], tmp_path: Path) -> None:
    _master(cluster, ensemble["hosts"]).stop()  # the ensemble is up
    zq1 = ensemble["servers"][0]
    peer_cert, peer_key = _split_pem(zq1.dir / "conf" / "quorum.pem", tmp_path / "peer")
    histo_zk_cert, histo_zk_key = _split_pem(zq1.dir / "conf" / "server.pem", tmp_path / "zk-client-port")
    # Whoever leads listens on 2888; every server listens on 3888.
    ports = [(s.address, ELECTION_PORT) for s in ensemble["servers"]]
    leaders = [(s.address, QUORUM_PORT) for s in ensemble["servers"]
               if _handshake(s.address, QUORUM_PORT, peer_cert, peer_key) == "accepted"]
    assert len(leaders) == 1, leaders
    ports += leaders
    intruders: dict[str, tuple[Path | None, Path | None]] = {
        name: (cluster.service_dir(name) / "tls" / "cert.pem", cluster.service_dir(name) / "tls" / "key.pem")
        for name in ("master1", "worker1")}
    intruders["zk host's client-port certificate"] = (histo_zk_cert, histo_zk_key)
    intruders["no certificate"] = (None, None)
    for address, port in ports:
        for who, (cert, key) in intruders.items():
            verdict = _handshake(address, port, cert, key)
            assert not verdict.startswith("accepted"), f"{who} joined {address}:{port}"
        assert _handshake(address, port, peer_cert, peer_key) == "accepted", f"a peer refused at {address}:{port}"


def test_zookeeper_nodes_owned_by_masters_and_zookeeper_still_works(cluster: Cluster,
                                                                    ensemble: dict[str, Any]) -> None:
    ids = root_client(cluster).secrets.kv.v2.read_secret_version(
        "histo/zk/acl-ids", mount_point="secret", raise_on_deleted_version=True)["data"]["data"]
    master = _master(cluster, ensemble["hosts"])
    tls = cluster.service_dir("worker1") / "tls"
    anon = KazooClient(hosts=ensemble["hosts"], use_ssl=True, verify_certs=True, check_hostname=True,
                       ca=str(tls / "ca.pem"), certfile=str(tls / "cert.pem"), keyfile=str(tls / "key.pem"), timeout=4)
    try:
        # before the masters' bootstrap, ZooKeeper's own nodes are world-writable (what histo fixes)
        assert any(a.id.scheme == "world" and a.perms & Permissions.CREATE for a in master.get_acls(ZK_QUOTA)[0])
        bootstrap_tree(master, ids)
        bootstrap_tree(master, ids)  # idempotent
        for path in (ZK_SYSTEM, ZK_QUOTA):
            assert {a.id.scheme for a in master.get_acls(path)[0]} == {"digest"}
        anon.start(timeout=15)
        for path in (f"{ZK_SYSTEM}/x", f"{ZK_QUOTA}/x", f"{ZK_QUOTA}/histo/zookeeper_limits", f"{ZK_CONFIG}/x"):
            with pytest.raises(NoAuthError):
                anon.create(path, b"count=1", makepath=True)
        with pytest.raises(NoAuthError):
            anon.set(ZK_CONFIG, b"server.9=evil:2888:3888")
        # quota bookkeeping still runs (the server updates the stats node itself, past the ACLs)
        master.create("/qtest", b"")
        master.create("/zookeeper/quota/qtest/zookeeper_limits", b"count=100,bytes=-1", makepath=True)
        master.create("/zookeeper/quota/qtest/zookeeper_stats", b"count=0,bytes=0")
        for i in range(3):
            master.create(f"/qtest/n{i}", b"abc")
        deadline = time.time() + 10
        while b"count=4" not in master.get("/zookeeper/quota/qtest/zookeeper_stats")[0] and time.time() < deadline:
            time.sleep(0.2)
        assert b"count=4" in master.get("/zookeeper/quota/qtest/zookeeper_stats")[0]
        master.delete("/zookeeper/quota/qtest", recursive=True)
        master.delete("/qtest", recursive=True)
    finally:
        for c in (anon, master):
            c.stop()
            c.close()
    # every server still answers ruok over TLS with a client certificate
    for zk in ensemble["servers"]:
        ctx = ssl.create_default_context(cafile=str(tls / "ca.pem"))
        ctx.load_cert_chain(str(tls / "cert.pem"), str(tls / "key.pem"))
        with socket.create_connection((zk.address, ZK_PORT), timeout=5) as raw, \
                ctx.wrap_socket(raw, server_hostname=zk.address) as s:
            s.sendall(b"ruok")
            assert s.recv(4) == b"imok"


def test_acls_of_zookeeper_nodes_survive_a_restart(cluster: Cluster, ensemble: dict[str, Any]) -> None:
    """ACL changes are transactions: a restarted server replays them (no window with world:anyone)."""
    zq3 = ensemble["servers"][2]
    zq3.stop()
    time.sleep(1)
    zq3.start()
    master = _master(cluster, f"{zq3.address}:{ZK_PORT}")  # the restarted server alone
    try:
        for path in (ZK_SYSTEM, ZK_QUOTA):
            assert {a.id.scheme for a in master.get_acls(path)[0]} == {"digest"}, path
    finally:
        master.stop()
        master.close()


def test_only_a_zookeeper_host_gets_a_quorum_certificate_and_only_its_own(cluster: Cluster) -> None:
    topo = json.loads((cluster.root / "topology.json").read_text())
    net = topo["net"]
    own = {"common_name": f"zk1.{TRUST_DOMAIN}", "alt_names": "zk1", "ip_sans": f"{net}.11", "ttl": "60s",
           "format": "pem", "private_key_format": "pkcs8"}
    for name in ("master1", "worker1"):  # the attackers: any other identity of the histo CA
        v = service_vault(cluster, name)
        v.login()
        with pytest.raises(hvac.exceptions.Forbidden):
            v.client.write_data("pki_zk_quorum/issue/quorum-zk1", data=own)
        with pytest.raises(hvac.exceptions.Forbidden):
            v.client.write_data(f"pki_zk_quorum/issue/quorum-{name}",
                                data={**own, "common_name": f"{name}.{TRUST_DOMAIN}", "alt_names": name})
    cfg = cluster.config("master1")
    zk1 = ServiceVault(cfg["vault_url"], cfg["vault_ca"], host="zk1", role="zookeeper",
                       creds_dir=cluster.root / "zk1" / "creds", source_address=f"{net}.11")
    zk1.login()
    for bad in ({**own, "ip_sans": f"{net}.99"}, {**own, "uri_sans": "spiffe://histo.internal/master/master1"},
                {**own, "common_name": f"master1.{TRUST_DOMAIN}"}):
        with pytest.raises((hvac.exceptions.Forbidden, hvac.exceptions.InvalidRequest)):
            zk1.client.write_data("pki_zk_quorum/issue/quorum-zk1", data=bad)
    with pytest.raises(hvac.exceptions.Forbidden):
        zk1.client.write_data("pki_zk_quorum/issue/quorum-zq1", data=own)
    cert, _key, ca = quorum_identity(zk1, ttl="60s")  # the legitimate path
    assert "BEGIN CERTIFICATE" in cert and ca.strip() not in (cluster.root / "ca.pem").read_text()
