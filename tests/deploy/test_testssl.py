"""testssl.sh against every TLS listener of the deployed cluster (issue 21): the public listener of each
master, OpenBao's listener, and — with master1's client certificate — each master's and each worker's
internal mTLS listener and each ZooKeeper's TLS client port. TLS 1.2 and 1.3 only, only AEAD suites,
nothing marked vulnerable, nothing MEDIUM or worse but the findings attack/tlsscan.py names as not
applicable (with the reason).

testssl.sh runs on the controller (the Debian package, scripts/bootstrap.sh), never on the machines.
The controller may reach only vault:8200 and master:443 (DESIGN.md segmentation), so the scans of the
internal ports run the controller's testssl inside master1's network namespace (nsenter --net: its
address, its firewall's view; the controller's files): from where a master connects in production.
Skipped when the cluster is not up (conftest.py)."""
from __future__ import annotations

import concurrent.futures
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest

from attack import tlsscan
from attack.deployed import DeployedCluster, Machine

from .conftest import check_targets

PARALLEL = 4


def _init_pid(machine: Machine) -> int:
    out = subprocess.run(["lxc-info", "-n", machine.container, "-p", "-H"], capture_output=True, text=True,
                         timeout=30, check=True)
    return int(out.stdout.strip())


def _scan_all(targets: dict[str, dict[str, Any]]) -> None:
    check_targets([(kw["host"], kw["port"]) for kw in targets.values()])
    if not shutil.which(tlsscan.TESTSSL):
        pytest.fail("testssl.sh is not installed on the controller (scripts/bootstrap.sh installs it)")
    with concurrent.futures.ThreadPoolExecutor(PARALLEL) as pool:
        scans = dict(zip(targets, pool.map(lambda kw: tlsscan.scan(**kw), targets.values())))
    for name, s in scans.items():
        print(f"{name}: {s.seconds:.0f} s, offers {', '.join(s.ciphers())}")
    failed = {name: s.problems for name, s in scans.items() if s.problems}
    assert not failed, failed


@pytest.mark.drill
def test_public_and_vault_listeners_from_the_controller(cluster: DeployedCluster) -> None:
    ca = str(cluster.root / cluster.env["HISTO_CA"])
    vault_ca = str(cluster.state / "vault-tls" / "ca.pem")
    targets: dict[str, dict[str, Any]] = {}
    for m in cluster.group("masters"):
        targets[f"{m.name}:{cluster.ports['public']} (public)"] = {
            "host": m.address, "port": cluster.ports["public"], "ca": ca}
    for m in cluster.group("vault"):
        targets[f"{m.name}:{cluster.ports['vault']} (OpenBao)"] = {
            "host": m.address, "port": cluster.ports["vault"], "ca": vault_ca,
            "not_applicable": tlsscan.VAULT_NOT_APPLICABLE}
    assert targets
    _scan_all(targets)


@pytest.mark.drill
def test_internal_listeners_and_zookeeper_from_a_master(cluster: DeployedCluster) -> None:
    masters = cluster.group("masters")
    assert masters, "no master in the inventory"
    source = masters[0]
    pid = _init_pid(source)
    ca = str(cluster.root / cluster.env["HISTO_CA"])
    with tempfile.TemporaryDirectory(prefix="histo-testssl-cert-") as tmp:
        # master1's own certificate and key, copied once (0600, in a 0700 folder, removed at the end)
        tls = Path(f"/proc/{pid}/root/var/lib/histo/tls")
        cert, key = Path(tmp) / "cert.pem", Path(tmp) / "key.pem"
        shutil.copyfile(tls / "cert.pem", cert)
        key.touch(mode=0o600)
        shutil.copyfile(tls / "key.pem", key)
        common = {"ca": ca, "cert": str(cert), "key": str(key), "netns_pid": pid}
        targets: dict[str, dict[str, Any]] = {}
        for m in cluster.group("masters") + cluster.group("workers"):
            targets[f"{m.name}:{cluster.ports['internal']} (internal, from {source.name})"] = {
                "host": m.address, "port": cluster.ports["internal"], **common}
        for m in cluster.group("zookeeper"):
            targets[f"{m.name}:{cluster.ports['zk_client']} (ZooKeeper, from {source.name})"] = {
                "host": m.address, "port": cluster.ports["zk_client"], **common}
        assert len(targets) > len(masters)
        _scan_all(targets)
