"""Quarantine (vault/quarantine.py) without a Vault: the guard rails that keep the collector from
containing what it must never cut off (pure function), a failed step that does not stop the next ones
(a stand-in client), and the responder rules generated for containable hosts only."""
from __future__ import annotations

import json
from typing import Any

import pytest
from hvac.exceptions import Forbidden

from histo.vault import quarantine as q
from histo.vault import setup

INVENTORY = [{"name": "vault1", "role": "vault"}, {"name": "zk1", "role": "zookeeper"},
             {"name": "secops1", "role": "secops"}, {"name": "master1", "role": "master"},
             {"name": "master2", "role": "master"}, {"name": "worker1", "role": "worker"},
             {"name": "worker2", "role": "worker"}]


@pytest.mark.parametrize("host", ["vault1", "zk1", "secops1"])
def test_never_a_vault_zookeeper_or_secops_host(host: str) -> None:
    role = next(h["role"] for h in INVENTORY if h["name"] == host)
    assert q.guard(INVENTORY, set(), host) == f"{host} is a {role} host: never contained automatically"


def test_never_an_unknown_host() -> None:
    assert q.guard(INVENTORY, set(), "worker9") == "worker9 is not in the inventory"


def test_a_worker_or_master_with_another_left_is_containable() -> None:
    assert q.guard(INVENTORY, set(), "worker1") is None
    assert q.guard(INVENTORY, set(), "master2") is None


def test_never_the_last_worker_not_already_quarantined() -> None:
    assert q.guard(INVENTORY, {"worker1"}, "worker2") == "worker2 is the last worker not quarantined"
    assert q.guard(INVENTORY, {"worker1"}, "worker1") is None  # already out: containing it again is harmless
    assert q.guard(INVENTORY, {"master1"}, "worker2") is None  # another role's quarantine does not count


def test_never_the_last_master() -> None:
    assert q.guard(INVENTORY, {"master1"}, "master2") == "master2 is the last master not quarantined"
    single = [h for h in INVENTORY if h["name"] != "master2"]
    assert q.guard(single, set(), "master1") == "master1 is the last master not quarantined"


class _Sys:
    def __init__(self, log: list[Any]) -> None:
        self.log = log

    def create_or_update_acl_policy(self, name: str, policy: str) -> None:
        self.log.append(("policy", name, policy))
        raise Forbidden("permission denied", errors=["permission denied"])


class _KV2:
    def __init__(self, log: list[Any]) -> None:
        self.log = log

    def create_or_update_secret(self, path: str, secret: dict[str, Any], mount_point: str) -> None:
        self.log.append(("kv", f"{mount_point}/{path}", json.loads(json.dumps(secret))))


class _Client:
    """hvac.Client as contain() uses it: the policy write is refused, everything else answers."""

    def __init__(self) -> None:
        self.log: list[Any] = []
        self.sys = _Sys(self.log)
        self.secrets = type("S", (), {"kv": type("K", (), {"v2": _KV2(self.log)})()})()

    def list(self, path: str) -> dict[str, Any]:
        self.log.append(("list", path))
        return {"data": {"keys": ["acc-1", "acc-2"]}} if path.endswith("/secret-id") else {"data": {"keys": []}}

    def write_data(self, path: str, data: dict[str, Any]) -> None:
        self.log.append(("write", path, data))

    def delete(self, path: str) -> None:
        self.log.append(("delete", path))


def test_a_failed_step_is_recorded_and_the_next_ones_still_run() -> None:
    client = _Client()
    out = q.contain(client, "worker1", {"id": "inc-7", "rule": "zk_auth_burst"}, now=1000.0)  # type: ignore[arg-type]
    steps = {a["name"]: a for a in out["actions"]}
    assert list(steps) == ["policy", "secret_ids", "pki_role", "certificates", "record"]
    assert steps["policy"]["ok"] is False and steps["policy"]["error"] == "Forbidden: permission denied"
    assert all(steps[n]["ok"] for n in ("secret_ids", "pki_role", "certificates", "record"))
    assert out["contained"] is False
    assert ("write", "auth/approle/role/histo-worker1/secret-id-accessor/destroy",
            {"secret_id_accessor": "acc-2"}) in client.log
    assert ("delete", "pki_int/roles/host-worker1") in client.log
    kv = [e for e in client.log if e[0] == "kv"]
    assert kv == [("kv", "secret/histo/quarantine/worker1",
                   {"host": "worker1", "incident": "inc-7", "rule": "zk_auth_burst", "since": 1000.0,
                    "actions": [{"name": "policy", "ok": False}, {"name": "secret_ids", "ok": True},
                                {"name": "pki_role", "ok": True}, {"name": "certificates", "ok": True}]})]
    assert "acc-1" not in json.dumps(out)  # the result names counts, not accessors


def test_responder_rules_only_for_masters_and_workers() -> None:
    hosts = [{"name": n, "role": r, "address": f"127.0.27.{i + 10}"} for i, (n, r) in
             enumerate((h["name"], h["role"]) for h in INVENTORY)]
    app = setup._Applier(None, {"hosts": hosts, "vault_url": "https://127.0.27.10:8200"})  # type: ignore[arg-type]
    secops = app.host_policy(next(h for h in hosts if h["role"] == "secops"))
    for name in ("master1", "master2", "worker1", "worker2"):
        assert f'path "sys/policies/acl/histo-{name}"' in secops
        assert f'path "pki_int/roles/host-{name}"' in secops
    responder = app.responder_rules()
    assert responder in secops
    for name in ("vault1", "zk1", "secops1"):
        assert f"-{name}" not in responder and f"quarantine/{name}" not in responder
    assert f'"policy" = [{json.dumps(q.QUARANTINED_POLICY)}]' in secops
    assert "sys/policies/acl" not in app.host_policy(next(h for h in hosts if h["name"] == "worker1"))
    master = app.host_policy(next(h for h in hosts if h["name"] == "master1"))
    assert 'path "secret/data/histo/quarantine/*"' in master and "sys/policies/acl" not in master
