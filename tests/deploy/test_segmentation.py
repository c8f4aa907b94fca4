"""The DESIGN.md segmentation matrix, probed for real: from inside every machine, from the controller
and from a non-cluster client (a network namespace on histo-br0): every allowed path reaches the
service, every other one is dropped (no answer at all: inbound default drop)."""
from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time

import pytest

from attack.deployed import DeployedCluster, outsider

from .conftest import PROBE, check_targets

# every probe here is refused on purpose (issue 18's false-alarm audit expects their incidents)
pytestmark = pytest.mark.drill

TIMEOUT = 1.5
OUTSIDER = "192.168.56.99"  # a client that is not part of the cluster


def _design_allows(cluster: DeployedCluster, src_group: str | None, src_name: str | None, dst, port_name: str) -> bool:
    """The table of DESIGN.md, written out independently of the firewall role."""
    g = dst.group
    if src_name == dst.name:
        return False  # not probed
    if port_name == "ssh":
        return False  # on the cluster network: never (SSH only on the management network)
    if g == "vault" and port_name == "vault":
        return src_group in ("controller", "vault", "zookeeper", "masters", "workers", "secops")
    if g == "vault" and port_name == "vault_cluster":
        return src_group == "vault"  # raft between Vault peers only
    if g == "zookeeper" and port_name == "zk_client":
        # and the other ZooKeeper servers: the renewer's ruok before a rolling restart (DESIGN.md's
        # matrix leaves zk -> zk:2281 blank; zk/renew.py needs it, or no server ever restarts to renew)
        return src_group in ("masters", "workers", "zookeeper")
    if g == "zookeeper" and port_name in ("zk_quorum", "zk_election"):
        return src_group == "zookeeper"
    if g == "masters" and port_name == "public":
        return src_group in ("controller", "outsider")
    if g == "masters" and port_name == "internal":  # secops: the collector's relay (issue 17)
        return src_group in ("masters", "workers", "secops")
    if g == "workers" and port_name == "internal":
        return src_group == "masters"
    if g == "secops" and port_name == "secops":  # every machine's log shipper, not the controller
        return src_group in ("vault", "zookeeper", "masters", "workers", "secops")
    return False


def _matrix(cluster: DeployedCluster, src_group: str, src_name: str | None):
    ports = dict(cluster.ports, ssh=22)
    rows = []
    for dst in cluster.machines.values():
        if dst.name == src_name:
            continue
        for port_name, port in ports.items():
            rows.append((dst, port_name, port, _design_allows(cluster, src_group, src_name, dst, port_name)))
    return rows


def _judge(rows, results, where: str) -> list[str]:
    wrong = []
    for (dst, port_name, port, allowed), got in zip(rows, results):
        # Allowed: the packet reaches the host (a listener answers, or the kernel refuses when the
        # port has no listener, e.g. 2888 on a ZooKeeper follower). Denied: dropped, no answer.
        ok = got in ("open", "refused") if allowed else got == "timeout"
        if not ok:
            wrong.append(f"{where} -> {dst.name}:{port} ({port_name}): {'allowed' if allowed else 'denied'} "
                         f"by DESIGN.md, got {got}")
    return wrong


def _probe_here(src: str, targets) -> list[str]:
    out = subprocess.run([sys.executable, "-c", PROBE, src, str(TIMEOUT), json.dumps(targets)],
                         capture_output=True, text=True, timeout=120, check=True)
    return json.loads(out.stdout)


def test_matrix_from_every_machine(cluster: DeployedCluster):
    wrong = []
    for src in cluster.machines.values():
        rows = _matrix(cluster, src.group, src.name)
        targets = [(d.address, p) for d, _n, p, _a in rows]
        check_targets(targets)
        cmd = f"python3 -c {shlex.quote(PROBE)} {src.address} {TIMEOUT} {shlex.quote(json.dumps(targets))}"
        results = json.loads(src.run(cmd, timeout=120).stdout)
        wrong += _judge(rows, results, src.name)
    assert not wrong, "\n".join(wrong)


def test_matrix_from_the_controller(cluster: DeployedCluster):
    rows = _matrix(cluster, "controller", None)
    targets = [(d.address, p) for d, _n, p, _a in rows]
    check_targets(targets)
    wrong = _judge(rows, _probe_here(cluster.controller, targets), "controller")
    assert not wrong, "\n".join(wrong)


@pytest.fixture()
def outsider_netns(cluster: DeployedCluster):
    """A client on the cluster bridge that is not a cluster machine (its own namespace and address)."""
    with outsider("histo-outsider", "histo-out0", (OUTSIDER,)) as ns:
        yield ns


def test_only_the_public_api_is_reachable_from_a_non_cluster_client(cluster: DeployedCluster, outsider_netns: str):
    rows = _matrix(cluster, "outsider", None)
    targets = [(d.address, p) for d, _n, p, _a in rows]
    check_targets(targets)
    out = subprocess.run(["ip", "netns", "exec", outsider_netns, sys.executable, "-c", PROBE, OUTSIDER, str(TIMEOUT),
                          json.dumps(targets)], capture_output=True, text=True, timeout=120, check=True)
    results = json.loads(out.stdout)
    wrong = _judge(rows, results, "outsider")
    assert not wrong, "\n".join(wrong)
    # Spelled out: Vault and ZooKeeper do not even answer a stranger.
    for (dst, port_name, _p, _a), got in zip(rows, results):
        if port_name in ("vault", "zk_client"):
            assert got == "timeout", f"{dst.name} {port_name}: {got}"


def test_drops_are_logged_with_the_prefix(cluster: DeployedCluster):
    """Drops are logged (rate-limited) with the histo-drop: prefix; containers' logs reach the host's
    kernel log (net.netfilter.nf_log_all_netns=1, set by vagrant/network.sh)."""
    vault = cluster.group("vault")[0]
    worker = cluster.group("workers")[0]
    marker_port = cluster.ports["zk_client"]
    _probe_here(cluster.controller, [(worker.address, marker_port)])  # denied: logged by the worker
    time.sleep(0.5)
    dmesg = subprocess.run(["dmesg"], capture_output=True, text=True)
    if dmesg.returncode != 0:
        pytest.skip("the kernel log is not readable here")
    lines = [line for line in dmesg.stdout.splitlines() if "histo-drop:" in line
             and f"DST={worker.address}" in line and f"DPT={marker_port}" in line]
    assert lines, "no histo-drop: line for the dropped probe"
    assert vault  # the matrix has a vault (sanity)
