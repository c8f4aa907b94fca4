"""One public address that survives a master (roles/keepalived, master/floating.py): HISTO_URL is the
floating address, held by a standby (the leader schedules); the master holding it killed, it moves to
the survivor and keeps serving;
no other machine can take it over (VRRP from a worker is dropped by the masters' firewalls)."""
from __future__ import annotations

import json
import subprocess
import time
from typing import Callable
from urllib.parse import urlsplit

import pytest

from attack.deployed import DeployedCluster, Machine

from .api import request, upload, wait_ready


def _public(cluster: DeployedCluster) -> str:
    address = cluster.inventory["all"]["vars"].get("histo_public_address")
    if not address or len(cluster.group("masters")) < 2:
        pytest.skip("this profile has no floating public address (one master)")
    return str(address)


def _holders(cluster: DeployedCluster, address: str) -> list[str]:
    return [m.name for m in cluster.group("masters")
            if m.run(f"ip -o -4 addr show to {address}/32").stdout.strip()]


def _leader(cluster: DeployedCluster) -> str:
    status, raw, _h = request(cluster, "GET", "/api/v1/cluster", cluster.env["HISTO_TOKEN_VIEWER"])
    assert status == 200, raw
    return str(json.loads(raw)["leader"])


def _wait(pred: Callable[[], bool], timeout: float, what: str) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if pred():
            return time.monotonic() - start
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def test_histo_url_is_the_floating_address_held_by_a_standby(cluster: DeployedCluster) -> None:
    address = _public(cluster)
    assert urlsplit(cluster.env["HISTO_URL"]).hostname == address
    # the certificate it presents is valid for that address (urllib checks the IP SAN against the CA)
    status, raw, _h = request(cluster, "GET", "/readyz")
    assert status == 200, raw
    masters = {m.name for m in cluster.group("masters")}

    def on_a_standby() -> bool:
        holders = _holders(cluster, address)
        return len(holders) == 1 and holders[0] in masters - {_leader(cluster)}
    _wait(on_a_standby, 30, "a standby (not the leader) to hold the address")
    status, raw = upload(cluster, cluster.env["HISTO_TOKEN_UPLOADER"])
    assert status == 202, raw


def _inject_vrrp(worker: Machine, target: str, address: str) -> None:
    """A forged VRRPv2 advertisement, priority 255, for the public address's router id, from `worker`."""
    script = f"""
import socket, struct
def csum(b):
    s = sum(struct.unpack('!%dH' % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xffff); s += s >> 16
    return ~s & 0xffff
vip = socket.inet_aton({address!r})
pkt = struct.pack('!BBBBBBH', 0x21, 20, 255, 1, 0, 1, 0) + vip + b'\\0' * 8
pkt = pkt[:6] + struct.pack('!H', csum(pkt)) + pkt[8:]
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, 112)
s.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 255)
for _ in range(5):
    s.sendto(pkt, ({target!r}, 0))
"""
    worker.attach(["python3", "-c", script], timeout=30)


@pytest.mark.drill
def test_a_worker_cannot_take_the_public_address(cluster: DeployedCluster) -> None:
    address = _public(cluster)
    worker = cluster.group("workers")[0]
    before = _holders(cluster, address)
    assert len(before) == 1, before
    holder = cluster.machines[before[0]]

    def drops() -> int:  # the kernel log is the host's: the machines' firewalls log there
        out = subprocess.run(["dmesg"], capture_output=True, text=True, check=True).stdout
        return sum(1 for line in out.splitlines() if "histo-drop:" in line and f"SRC={worker.address} " in line
                   and f"DST={holder.address} " in line and "PROTO=112" in line)
    count = drops()
    _inject_vrrp(worker, holder.address, address)
    _wait(lambda: drops() > count, 15, "the forged VRRP to be logged and dropped")
    time.sleep(3)  # several advertisement intervals: the address has not moved
    assert _holders(cluster, address) == before
    status, raw, _h = request(cluster, "GET", "/readyz")
    assert status == 200, raw


@pytest.mark.disruptive
def test_holder_killed_the_public_address_moves_and_serves(cluster: DeployedCluster) -> None:
    address = _public(cluster)
    status, raw = upload(cluster, cluster.env["HISTO_TOKEN_UPLOADER"])
    assert status == 202, raw
    job = json.loads(raw)["id"]
    _wait(lambda: json.loads(request(cluster, "GET", f"/api/v1/jobs/{job}",
                                     cluster.env["HISTO_TOKEN_UPLOADER"])[1]).get("state") == "done",
          60, "the job to finish")
    _wait(lambda: len(_holders(cluster, address)) == 1, 30, "one holder of the address")
    victim = cluster.machines[_holders(cluster, address)[0]]
    victim.run("systemctl kill --signal=SIGKILL histo-master")

    seen: list[str] = []  # what each attempt met, for the report: refused, timed out, a status

    def served() -> bool:
        t = time.monotonic()
        try:
            status, _raw, _h = request(cluster, "GET", f"/api/v1/jobs/{job}/result",
                                       cluster.env["HISTO_TOKEN_UPLOADER"], timeout=3)
        except OSError as exc:
            seen.append(f"{type(exc).__name__}@{time.monotonic() - t:.1f}s")
            return False
        seen.append(str(status))
        return status == 200
    took = _wait(served, 60, "HISTO_URL to serve the stored result again")
    print(f"public address back in {took:.1f}s after the master holding it was killed; attempts: {seen}")
    holders = _holders(cluster, address)
    assert len(holders) == 1, holders
    wait_ready(cluster)  # systemd restarted the victim; it rejoins (and, leading or not, the cluster is whole)
