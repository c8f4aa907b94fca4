"""OpenBao with three nodes (integrated storage, raft, static seal), under a real histo cluster.

Its own lean cluster on cluster_fixture.RAFT_NET (3 OpenBao nodes at .10/.16/.17, ZooKeeper, 1 master, 1 worker):
every service's `vault_url` names all three nodes. The active node is killed (SIGKILL) while uploads
run: every upload is accepted and every job completes, the master is ready again; the killed node,
started again, joins and unseals itself (no key submitted) and is a voter again."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from histo import TRUST_DOMAIN
from histo.local import cluster as local_cluster
from histo.local.raft import BaoCluster
from histo.testing.cluster import Cluster, sample_image
from histo.testing.waiting import wait_until
from histo.vault.listener import served_certificate

from .cluster_fixture import RAFT_NET

pytestmark = pytest.mark.long

NET = RAFT_NET


@pytest.fixture(scope="module")
def raft(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, BaoCluster]]:
    root = tmp_path_factory.mktemp("raft")
    try:
        info = local_cluster.up(root, masters=1, workers=1, cert_ttl="1h", zk_session_timeout=4.0, net=NET,
                                vault_nodes=3, extra={"store_quorum": 1, "task_timeout": 20.0, "job_timeout": 90.0,
                                                      "rate_per_address": 1000.0, "burst_per_address": 2000,
                                                      "uploads_per_principal": 100.0, "upload_burst": 200,
                                                      "worker_strip_min_pixels": 1,
                                                      # the uploads below do not wait for their jobs: the
                                                      # per-owner running-jobs cap must not refuse them
                                                      "max_running_jobs": 200})
        vault = local_cluster.vault_server(root.resolve(), NET, 3)
        assert isinstance(vault, BaoCluster)
        yield Cluster(root=root.resolve(), env=info["env"]), vault
    finally:
        local_cluster.down(root)


def _ready(cluster: Cluster) -> bool:
    try:
        status, _, _ = cluster.request("GET", "/readyz", timeout=3)
    except OSError:
        return False
    return status == 200


def test_every_service_knows_the_three_nodes(raft: tuple[Cluster, BaoCluster]) -> None:
    cluster, vault = raft
    servers = vault.peers()
    assert sorted(str(s["node_id"]) for s in servers) == ["vault1", "vault2", "vault3"]
    assert all(s["voter"] for s in servers)
    for name in ("master1", "worker1"):
        assert cluster.config(name)["vault_url"].split(",") == vault.urls
    # the seal is the static one: every node unsealed itself, no unseal key was ever submitted to vault2/3
    status = vault.nodes[1].client().sys.read_seal_status()
    assert status["type"] == "static" and not status["sealed"]
    # each node's own renewer replaced the controller's fallback with its own pki_vault certificate
    deadline = time.time() + 60
    issuers: dict[str, str] = {}
    while time.time() < deadline:
        issuers = {}
        for node in vault.nodes:
            served = served_certificate(node.address, node.port, str(vault.ca_path))
            issuers[node.node_id] = served.issuer.rfc4514_string() if served else ""
        if set(issuers.values()) == {"CN=histo vault listener CA"}:
            break
        time.sleep(1)
    assert set(issuers.values()) == {"CN=histo vault listener CA"}, issuers


def test_provisioner_second_setup_through_any_node_changes_nothing(raft: tuple[Cluster, BaoCluster],
                                                                    tmp_path: Path) -> None:
    """local.up configured Vault with the root token (through the active node); `histo vault-setup` with the
    provisioner token and the same spec, as the vault_config role's second run does, reports no change
    through every node, standbys included, and through all of them (the failover client). The PKI URLs
    name every node, so they do not depend on the node the setup talks to (they did: drift)."""
    cluster, vault = raft
    topo = json.loads((cluster.root / "topology.json").read_text())
    life = json.loads((cluster.root / "lifetimes.json").read_text())  # the lifetimes local.up applied
    # the Vault nodes too, and pki_vault's CA folder: the provisioner verifies the listener PKI unchanged
    spec = {"trust_domain": TRUST_DOMAIN, "hosts": topo["hosts"] + [h for h, _ in local_cluster.vault_nodes_of(vault)],
            "vault_url": vault.url, "listener_ca_dir": str(vault.ca_path.parent),
            **{k: life[k] for k in ("leaf_max_ttl", "token_ttl", "token_max_ttl", "secret_id_ttl", "issuer_max_ttl",
                                      "signing_key_rotation", "vault_listener_ttl")},
            "audit_log": str(cluster.root / "vault" / "audit.log")}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    active = vault.active()
    for url in [*vault.urls, vault.url]:
        proc = subprocess.run([sys.executable, "-m", "histo.cli", "vault-setup", f"--spec={tmp_path / 'spec.json'}",
                               f"--vault-url={url}", f"--vault-ca={vault.ca_path}",
                               f"--token-file={cluster.root / 'provisioner-token'}"],
                              capture_output=True, text=True, timeout=120)
        where = f"{url} ({'active' if url == active.url else 'standby' if ',' not in url else 'every node'})"
        assert proc.returncode == 0, f"{where}: {proc.stderr[-1000:]}"
        out = json.loads(proc.stdout)
        assert out["changed"] is False, f"{where}: {out['changes']}"
    urls = active.root_client().secrets.pki.read_urls(mount_point="pki_int")["data"]
    assert urls["crl_distribution_points"] == [f"{u}/v1/pki_int/crl" for u in vault.urls], urls


def test_active_node_killed_during_uploads_then_rejoins_unsealed(raft: tuple[Cluster, BaoCluster]) -> None:
    cluster, vault = raft
    assert _ready(cluster)
    active = vault.active()
    pid = active.running()
    assert pid
    results: list[tuple[int, dict[str, Any]]] = []
    stop = threading.Event()
    image = sample_image(200, 150, "PNG")

    def uploads() -> None:
        while not stop.is_set() and len(results) < 60:
            results.append(cluster.upload(image, mode="gray"))

    loader = threading.Thread(target=uploads, daemon=True)
    loader.start()
    wait_until(lambda: len(results) >= 3, 60, "the first uploads")
    os.kill(pid, signal.SIGKILL)
    before_kill = len(results)
    new_active = vault.active(timeout=30)
    assert new_active is not active
    wait_until(lambda: len(results) >= before_kill + 5, 60, "uploads after the election")
    stop.set()
    loader.join(60)
    bad = [(s, d) for s, d in results if s != 202]
    assert not bad, bad  # no upload refused during the election
    for _, doc in results:
        job = cluster.wait_job(doc["id"], timeout=60)
        assert job["state"] == "done", job
    wait_until(lambda: _ready(cluster), 30, "the master ready again")

    # The killed node comes back by itself: started (as systemd would), it unseals from its seal key,
    # catches up through raft and is a voter again. No unseal key is submitted.
    active.start()
    vault.wait_unsealed(active, timeout=30)
    wait_until(lambda: {s["node_id"]: s["voter"] for s in vault.peers()}.get(active.node_id) is True, 30,
          f"{active.node_id} a voter again")
    health = vault.health(active)
    assert health and not health["sealed"] and health["standby"], health
    # and it serves: a request to it alone (a standby forwards it to the active node)
    assert "transit/" in active.root_client().sys.list_mounted_secrets_engines()["data"]


def test_static_seal_recovery_keys_still_make_a_root_token(tmp_path_factory: pytest.TempPathFactory) -> None:
    """With the static seal the init's shares are recovery keys: after the root token is retired they
    still finish a root token generation (started by the provisioner token), and a restarted node
    unseals itself — the keys are needed for neither."""
    import hvac

    from histo.local.bao import BaoServer
    from histo.vault.sealkey import ensure_seal_key
    from histo.vault.secretzero import generate_root, retire_root, unseal

    from .vaultfix import configure, free_port

    root = tmp_path_factory.mktemp("static")
    ensure_seal_key(root / "seal.key")
    bao = BaoServer(root / "v", f"{NET}.40", free_port(f"{NET}.40"), seal_key=root / "seal.key")
    bao.start()
    try:
        bao.init_and_unseal(shares=3, threshold=2)
        assert bao.client().sys.read_seal_status()["type"] == "static"
        configure(bao)
        retire_root(bao.client(), bao.init_path, root / "prov")
        prov = hvac.Client(url=bao.url, verify=str(bao.ca_path), token=(root / "prov").read_text().strip())
        assert generate_root(prov, bao.init_path, root / "root-token")["changed"]
        regenerated = hvac.Client(url=bao.url, verify=str(bao.ca_path),
                                  token=(root / "root-token").read_text().strip())
        assert "root" in regenerated.auth.token.lookup_self()["data"]["policies"]
        bao.stop()
        bao.start()
        wait_until(lambda: not bao.is_sealed(), 30, "the restarted node unsealed by its seal key")
        assert unseal(bao.client(), bao.init_path) == {"changed": False, "sealed": False}
    finally:
        bao.stop()


def test_vault_serving_waits_for_every_node_to_serve(raft: tuple[Cluster, BaoCluster]) -> None:
    """`histo vault-serving` (scripts/after-up.sh: ready means ready): every node serves a request — the
    standbys by forwarding it — with the operator's issuer token; a node that cannot is named, one line."""
    cluster, vault = raft
    cmd = [sys.executable, "-m", "histo.cli", "vault-serving", f"--vault-url={','.join(vault.urls)}",
           f"--vault-ca={vault.ca_path}", f"--token-file={cluster.root / 'issuer-token'}"]
    out = subprocess.run([*cmd, "--timeout=60"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"serving": vault.urls}
    standby = next(n for n in vault.nodes if n is not vault.active())
    standby.stop()
    try:
        out = subprocess.run([*cmd, "--timeout=3"], capture_output=True, text=True, timeout=60)
        assert out.returncode == 1 and out.stdout == ""
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("histo: vault-serving: not serving after 3s: ")
        assert standby.url in lines[0] and all(u not in lines[0] for u in vault.urls if u != standby.url), lines
    finally:
        standby.start()
        vault.wait_unsealed(standby, timeout=30)
