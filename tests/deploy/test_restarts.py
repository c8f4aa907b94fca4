"""Restarts without Ansible: a service killed and restarted by systemd, and a machine rebooted, come
back with a fresh certificate from Vault (the stored, address-bound secret_id logs in again) and
serve again — nobody re-runs a playbook."""
from __future__ import annotations

import re
import time

import pytest

from attack.deployed import DeployedCluster, Machine

from .api import upload, wait_ready

LOADED = re.compile(r"certificate (\S+) loaded")


def _unit(host: Machine) -> str:
    return "histo-master" if host.group == "masters" else "histo-worker"


def _serials(host: Machine) -> list[str]:
    """Serials of the certificates the service loaded, oldest first (its journal, this boot and before)."""
    out = host.run(f"journalctl -u {_unit(host)} -o cat --no-pager", timeout=30).stdout
    return LOADED.findall(out)


def _active_since(host: Machine) -> str:
    return host.run(f"systemctl show -p ActiveEnterTimestampMonotonic --value {_unit(host)}").stdout.strip()


def _wait_new_identity(host: Machine, before: list[str], timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        proc = host.run(f"systemctl is-active {_unit(host)}", check=False)
        serials = _serials(host) if proc.stdout.strip() == "active" else []
        fresh = [s for s in serials if s not in before]
        if fresh:
            return fresh[-1]
        time.sleep(1)
    raise AssertionError(f"{host.name}: no new certificate within {timeout:.0f}s after the restart")


def _wait_port(host: Machine, port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if host.run(f"ss -Htln 'sport = :{port}' | grep -q .", check=False).returncode == 0:
            return
        time.sleep(1)
    raise AssertionError(f"{host.name}: port {port} not listening {timeout:.0f}s after the restart")


@pytest.mark.parametrize("group", ["workers", "masters"])
def test_killed_service_is_restarted_by_systemd_with_a_fresh_certificate(cluster: DeployedCluster, group: str):
    host = cluster.group(group)[0]
    before = _serials(host)
    assert before, f"{host.name}: the service never logged a loaded certificate"
    since = _active_since(host)
    host.run(f"systemctl kill --signal=SIGKILL {_unit(host)}")
    serial = _wait_new_identity(host, before)
    assert serial not in before
    assert _active_since(host) != since, "the unit did not go through a restart"
    _wait_port(host, cluster.ports["internal"])
    # The address-bound secret_id was reused, not re-delivered: no wrapped secret_id is waiting.
    assert host.run("test -e /var/lib/histo/creds/secret_id.wrap", check=False).returncode != 0
    _ready_and_accepting(cluster)


def _ready_and_accepting(cluster: DeployedCluster) -> None:
    """Once the cluster says ready (live members only), the first upload is accepted at once."""
    token = cluster.env.get("HISTO_TOKEN_UPLOADER")
    if not token:
        pytest.skip("no uploader token in the env file")
    wait_ready(cluster)
    status, raw = upload(cluster, token)
    assert status == 202, raw


def test_rebooted_machine_comes_back_with_a_fresh_certificate(cluster: DeployedCluster):
    host = cluster.group("workers")[-1]
    before = _serials(host)
    # A container shares the host's kernel (and boot_id): its own boot shows as a new init start time.
    init_start = "cut -d' ' -f22 /proc/1/stat"
    boot = host.run(init_start).stdout.strip()
    host.run("systemctl reboot", check=False)  # the connection may drop as the container goes down
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        proc = host.run(init_start, check=False, timeout=10)
        if proc.returncode == 0 and proc.stdout.strip() and proc.stdout.strip() != boot:
            break
        time.sleep(2)
    serial = _wait_new_identity(host, before, timeout=180)
    assert serial not in before
    _wait_port(host, cluster.ports["internal"])
    _ready_and_accepting(cluster)


# Run as the server's own user with histo's interpreter on a ZooKeeper host: the certificate the server
# serves now (its notBefore), and the renewer's own restart request (zk/renew.py requested_restart:
# rewrite the flag the root path unit watches, wait until the server serves a newer certificate).
_ZK_PY = ("import json, sys; from pathlib import Path; from histo.zk import renew; "
          "from histo.zk.config import ZkConfig; "
          "zk = ZkConfig.from_json(json.loads(Path('/etc/histo/zk.json').read_text())); {}")
_ZK_SERVED = _ZK_PY.format("w = renew.probe(zk, zk.address, zk.port); print(w.not_before if w else '')")
_ZK_RENEW = _ZK_PY.format("renew.requested_restart(Path('/var/lib/histo-zk/restart-request'), zk)()")
_ZK_QUORUM = _ZK_PY.format("print(renew.ruok(zk, zk.address, zk.port) and None not in renew.others(zk))")


def _as_zookeeper(host: Machine, code: str, timeout: float = 60) -> str:
    proc = host.run(f"runuser -u zookeeper -- /opt/histo/bin/python -c \"{code}\"", timeout=timeout, check=False)
    assert proc.returncode == 0, (host.name, proc.stderr[-600:])
    return proc.stdout.strip()


def test_zookeeper_certificates_renewed_by_the_rolling_path_then_a_restarted_service_reconnects(
        cluster: DeployedCluster):
    """Issue 16's drill: every ZooKeeper server, one at a time, renews its certificates the way its
    renewer does when they reach 2/3 of their life (the unprivileged request, the root path unit's
    restart, fresh certificates from Vault at start), keeping quorum between servers; then a worker
    and a master restarted afterwards must open new TLS sessions to the renewed servers and serve."""
    servers = cluster.group("zookeeper")
    before = {h.name: float(_as_zookeeper(h, _ZK_SERVED) or 0) for h in servers}
    assert all(before.values()), f"a ZooKeeper server serves no certificate: {before}"
    for host in servers:
        t0 = time.monotonic()
        _as_zookeeper(host, _ZK_RENEW, timeout=240)
        served = float(_as_zookeeper(host, _ZK_SERVED) or 0)
        assert served > before[host.name], (host.name, before[host.name], served)
        deadline = time.monotonic() + 120  # the next server restarts only once the ensemble answers again
        while _as_zookeeper(host, _ZK_QUORUM) != "True":
            assert time.monotonic() < deadline, f"{host.name}: the ensemble did not answer after its restart"
            time.sleep(2)
        print(f"zookeeper drill: {host.name} renewed and back in {time.monotonic() - t0:.1f}s")
    for group in ("workers", "masters"):
        host = cluster.group(group)[0]
        loaded = _serials(host)
        host.run(f"systemctl restart {_unit(host)}", timeout=120)
        _wait_new_identity(host, loaded)
        _wait_port(host, cluster.ports["internal"])
    _ready_and_accepting(cluster)
