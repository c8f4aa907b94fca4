"""A master's view of SecOps quarantine (master/quarantine.py, tls/revocation.py deny_hosts): every
certificate of a quarantined host is refused and its live connections closed, the list is read from
Vault KV, and an outage of Vault never releases anyone. tests/integration/test_quarantine.py runs it
against the real parts."""
from __future__ import annotations

from typing import Any

import pytest
from hvac.exceptions import InvalidPath, VaultDown

from histo.master.quarantine import QuarantineFollower
from histo.vault.quarantine import KV_PREFIX as KV_PATH
from histo.rpc import RevokedIdentity, peer_identity
from histo.tls.revocation import REVOKED, RevocationList

from .test_revocation import FakeTransport as RevocationFakeTransport


class FakeTransport(RevocationFakeTransport):
    def get_extra_info(self, name: str) -> Any:
        if name == "peercert":
            return {"subjectAltName": (("URI", "spiffe://histo.internal/worker/worker1"),
                                       ("IP Address", "127.0.10.31")), "serialNumber": "0C"}
        return None


def test_a_quarantined_hosts_connections_close_whatever_certificate_they_hold() -> None:
    rl = RevocationList()
    old, new, other = FakeTransport(), FakeTransport(), FakeTransport()
    rl.track(old, 0xA1, "spiffe://histo.internal/worker/worker1")
    rl.track(new, 0xA2, "spiffe://histo.internal/worker/worker1")  # a certificate on no CRL yet
    rl.track(other, 0xB1, "spiffe://histo.internal/worker/worker10")  # a name that merely starts alike
    assert rl.deny_hosts(frozenset({"worker1"})) == 2
    assert old.closed and new.closed and not other.closed
    assert rl.is_denied("worker1") and not rl.is_denied("worker10") and not rl.is_denied(None)
    assert rl.as_dict()["quarantined"] == ["worker1"]
    assert rl.deny_hosts(frozenset()) == 0 and not rl.is_denied("worker1")  # released


class Request:
    def __init__(self) -> None:
        self.transport = FakeTransport()
        self.remote = "127.0.10.31"


def test_the_mtls_check_refuses_a_quarantined_host_and_admits_it_after_release() -> None:
    try:
        REVOKED.deny_hosts(frozenset({"worker1"}))
        with pytest.raises(RevokedIdentity, match="quarantined"):
            peer_identity(Request(), ("worker",), "histo.internal")  # type: ignore[arg-type]
        REVOKED.deny_hosts(frozenset())
        assert peer_identity(Request(), ("worker",), "histo.internal").host == "worker1"  # type: ignore[arg-type]
    finally:
        REVOKED.deny_hosts(frozenset())


class FakeKv:
    def __init__(self) -> None:
        self.records: dict[str, dict[str, Any]] = {}
        self.down = False

    def list_secrets(self, path: str, mount_point: str) -> dict[str, Any]:
        assert path == KV_PATH and mount_point == "secret"
        if self.down:
            raise VaultDown("sealed")
        if not self.records:
            raise InvalidPath()
        return {"data": {"keys": sorted(self.records)}}

    def read_secret_version(self, path: str, mount_point: str, raise_on_deleted_version: bool) -> dict[str, Any]:
        host = path.rsplit("/", 1)[-1]
        if host not in self.records:
            raise InvalidPath()
        return {"data": {"data": self.records[host]}}


class FakeClient:
    def __init__(self) -> None:
        self.kv = FakeKv()
        self.secrets = type("S", (), {"kv": type("K", (), {"v2": self.kv})()})()


def test_the_list_is_followed_and_vault_away_keeps_it_in_force() -> None:
    client = FakeClient()
    seen: list[frozenset[str]] = []
    follower = QuarantineFollower(lambda: client, lambda hosts, records: seen.append(hosts))
    assert follower.poll() is False and follower.hosts == frozenset()  # nobody, no change
    client.kv.records["worker1"] = {"host": "worker1", "incident": "abc"}
    assert follower.poll() is True and follower.hosts == {"worker1"}
    assert follower.records["worker1"]["incident"] == "abc"
    client.kv.down = True
    assert follower.poll() is False and follower.hosts == {"worker1"}  # an outage releases nobody
    assert "sealed" in str(follower.as_dict()["error"])
    client.kv.down = False
    del client.kv.records["worker1"]
    assert follower.poll() is True and follower.hosts == frozenset()
