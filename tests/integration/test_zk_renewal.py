"""ZooKeeper certificate renewal by rolling restart (zk/renew.py), against a real 3-node ensemble
over TLS and a real OpenBao, with the ZooKeeper certificates compressed to 75 s: every server is
restarted in its own slot, a client's session (and its ephemeral node) survives every restart, a
write loop through it never fails, and once the first certificates have expired a new TLS client
still connects to each server. The ensemble is this test's own (NET.5x), beside nothing else."""
from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kazoo.client import KazooClient

from histo.files import private_dir, write_private
from histo.local.zkserver import ZkServer
from histo.vault.client import ServiceVault, VaultUnavailable
from histo.vault.secretid import SecretIdKeeper
from histo.zk.client import connect
from histo.zk.prepare import host_vault, prepare
from histo.zk.renew import ZkRenewer, cert_window, process_restart, renewer, ruok

from .vaultfix import configure, provisioned_service, provision, running_bao

from .cluster_fixture import NET

pytestmark = pytest.mark.long

ZK_PORT = 2281
ZK_CERT_TTL = 75  # seconds: due at 50 s, a 25 s margin for three restarts in 4 s slots
SLOT = 4.0
HOSTS = [{"name": f"zr{i}", "role": "zookeeper", "address": f"{NET}.{50 + i}"} for i in (1, 2, 3)]
CLIENT = {"name": "master1", "role": "master", "address": f"{NET}.54"}


@pytest.fixture(scope="module")
def ensemble(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    base = tmp_path_factory.mktemp("zk-renewal")
    with running_bao(base / "vault", f"{NET}.50") as bao:
        role_ids = configure(bao, HOSTS + [CLIENT], leaf_max_ttl="10m")["role_ids"]
        peers = [{"id": i + 1, "address": h["address"], "quorum_port": 2888, "election_port": 3888}
                 for i, h in enumerate(HOSTS)]
        configs: list[Path] = []
        for i, h in enumerate(HOSTS):
            creds = provision(bao, role_ids, h, private_dir(base / h["name"] / "creds"))
            cfg = {"name": h["name"], "address": h["address"], "secure_port": ZK_PORT, "server_id": i + 1,
                   "peers": peers, "state_dir": str(private_dir(base / h["name"] / "zk")), "vault_url": bao.url,
                   "vault_ca": str(bao.ca_path), "creds_dir": str(creds), "cert_ttl": f"{ZK_CERT_TTL}s"}
            path = base / h["name"] / "zk.json"
            path.write_text(json.dumps(cfg))
            prepare(path)
            configs.append(path)
        servers = [ZkServer.from_json(json.loads(p.read_text())) for p in configs]
        try:
            for zk in servers:
                zk.start()
            yield {"bao": bao, "role_ids": role_ids, "configs": configs, "servers": servers, "base": base}
        finally:
            for zk in servers:
                zk.stop()


def _client(bao: Any, role_ids: dict[str, str], base: Path) -> tuple[KazooClient, ServiceVault]:
    sv = provisioned_service(bao, role_ids, CLIENT, private_dir(base / "client" / "creds"))
    bundle = sv.issue_cert("10m")
    tls = private_dir(base / "client" / "tls")
    write_private(tls / "cert.pem", bundle.cert_pem + bundle.chain_pem)
    write_private(tls / "key.pem", bundle.key_pem)
    write_private(tls / "ca.pem", sv.ca_chain_pem())
    user, password = sv.zk_credentials()
    hosts = ",".join(f"{h['address']}:{ZK_PORT}" for h in HOSTS)
    deadline = time.time() + 60
    while True:  # the ensemble serves once a leader is elected
        try:
            return connect(hosts, str(tls / "ca.pem"), str(tls / "cert.pem"), str(tls / "key.pem"), user, password,
                           "master", acl_ids=sv.zk_acl_ids(), timeout=10, session_timeout=10), sv
        except Exception:
            if time.time() > deadline:
                raise
            time.sleep(1)


def test_rolling_restart_renews_every_certificate_and_keeps_the_session(ensemble: dict[str, Any]) -> None:
    servers: list[ZkServer] = ensemble["servers"]
    client, _ = _client(ensemble["bao"], ensemble["role_ids"], ensemble["base"])
    first = [cert_window(zk.dir / "conf" / "server.pem") for zk in servers]
    first_quorum = [cert_window(zk.dir / "conf" / "quorum.pem") for zk in servers]
    session = client.client_id[0]
    client.create("/renewal-probe", b"", ephemeral=True)
    renewers = [renewer(p, process_restart(p)) for p in ensemble["configs"]]
    for r in renewers:
        r.slot = SLOT
    stop = threading.Event()
    errors: list[str] = []

    def renew_loop(r: ZkRenewer) -> None:
        while not stop.is_set():
            try:
                r.once()
            except Exception as exc:  # a failed pass is a finding, not a crash of the test thread
                errors.append(f"server {r.zk.server_id}: {exc}")
            stop.wait(1.0)

    threads = [threading.Thread(target=renew_loop, args=(r,), daemon=True) for r in renewers]
    for t in threads:
        t.start()
    writes, failed, t0 = 0, [], time.time()
    try:
        # past the first certificates' expiry, with every server restarted at least once
        deadline = time.time() + 150
        while time.time() < deadline and not (time.time() > max(w.not_after for w in first) + 2
                                              and all(r.restarts for r in renewers)):
            try:
                client.retry(client.set, "/renewal-probe", str(writes).encode())
                writes += 1
            except Exception as exc:
                failed.append(f"{type(exc).__name__} at +{time.time() - t0:.1f}s")
            time.sleep(0.2)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    print("restarts at", [(r.zk.server_id, [round(t - t0, 1) for t in r.restarted_at]) for r in renewers])
    assert not errors, errors
    assert [r.restarts for r in renewers] and all(r.restarts >= 1 for r in renewers), [r.restarts for r in renewers]
    assert not failed and writes > 100, (writes, failed)
    assert client.client_id[0] == session and client.exists("/renewal-probe")  # same session, node kept
    for zk, old, old_q in zip(servers, first, first_quorum):
        now = cert_window(zk.dir / "conf" / "server.pem")
        assert now.not_after > old.not_after and cert_window(zk.dir / "conf" / "quorum.pem").not_after > old_q.not_after
        assert time.time() > old.not_after  # the first certificate is expired ...
        assert ruok(zk, zk.address, ZK_PORT)  # ... and a new TLS connection is accepted
    client.stop()
    client.close()
    # a new session (a service restarted after the first certificates expired) connects too
    fresh, _ = _client(ensemble["bao"], ensemble["role_ids"], ensemble["base"] / "fresh")
    assert fresh.exists("/")
    fresh.stop()
    fresh.close()


def test_a_server_does_not_restart_while_a_peer_is_down(ensemble: dict[str, Any]) -> None:
    """Quorum guard: with zr3 down, zr1 (due, in its slot) waits instead of restarting."""
    servers: list[ZkServer] = ensemble["servers"]
    zr1, zr3 = servers[0], servers[2]
    restarted: list[int] = []
    renewer = ZkRenewer(zr1, SecretIdKeeper(host_vault(json.loads(ensemble["configs"][0].read_text()))),
                        lambda: restarted.append(1), slot=SLOT)
    expiry = cert_window(zr1.dir / "conf" / "server.pem").not_after
    in_slot = (int(expiry // (SLOT * 3)) + 1) * 3 * SLOT + 0.5  # a moment of zr1's slot, past due
    zr3.stop()
    try:
        assert renewer.once(now=in_slot)["restarted"] is False and not restarted
    finally:
        zr3.start()
    deadline = time.time() + 30
    while not ruok(zr1, zr3.address, ZK_PORT) and time.time() < deadline:
        time.sleep(0.5)
    assert renewer.once(now=in_slot)["restarted"] is True and restarted == [1]  # the same pass, peer back


def test_vault_away_at_the_renewal_moment_leaves_the_server_serving(ensemble: dict[str, Any]) -> None:
    """Sealed Vault: the pass fails before anything is stopped; a start meanwhile (zk-prepare) goes on
    with the valid certificates it has; after unsealing the pass renews."""
    zr1, config = ensemble["servers"][0], ensemble["configs"][0]
    restarted: list[int] = []
    r = renewer(config, lambda: restarted.append(1))
    r.slot = SLOT
    expiry = cert_window(zr1.dir / "conf" / "server.pem").not_after
    in_slot = (int(expiry // (SLOT * 3)) + 1) * 3 * SLOT + 0.5
    prepare(config)  # fresh files (no renewer ran since the first test), so they are valid throughout
    before = (zr1.dir / "conf" / "server.pem").read_text()
    ensemble["bao"].seal()
    try:
        with pytest.raises(VaultUnavailable):
            r.once(now=in_slot)
        assert not restarted and ruok(zr1, zr1.address, ZK_PORT)
        prepare(config)  # ExecStartPre with Vault away: the current, valid certificates stay
        assert (zr1.dir / "conf" / "server.pem").read_text() == before
    finally:
        ensemble["bao"].unseal()
    assert r.once(now=in_slot)["restarted"] is True and restarted == [1]
    assert (zr1.dir / "conf" / "server.pem").read_text() != before  # issued before the restart
