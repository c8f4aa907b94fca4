"""The floating public address: the state a master publishes for keepalived's check
(master/floating.py), and the addresses Vault lets a host's certificate name (vault/setup.py)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from histo.config import ConfigError, ServiceConfig
from histo.master.floating import StateFile, state_of
from histo.vault import setup


def test_state_follows_readiness_and_leadership() -> None:
    assert state_of(ready=False, leader=True) == "starting"
    assert state_of(ready=True, leader=True) == "leader"
    assert state_of(ready=True, leader=False) == "standby"


def test_state_file_written_on_change_only_and_withdrawn(tmp_path: Path) -> None:
    f = StateFile(tmp_path / "run" / "public-state")
    assert f.publish("standby")
    assert (tmp_path / "run" / "public-state").read_text() == f"standby {os.getpid()}\n"
    assert not f.publish("standby")
    assert f.publish("leader")
    assert f.path.read_text().split()[0] == "leader"
    assert not list(f.path.parent.glob("*.tmp"))
    f.withdraw()
    assert not f.path.exists()
    f.withdraw()  # idempotent
    with pytest.raises(ValueError):
        f.publish("owner")


def _spec(**master: str) -> dict[str, Any]:
    return {"trust_domain": "histo.internal", "hosts": [
        {"name": "master1", "role": "master", "address": "10.0.0.21", **master},
        {"name": "worker1", "role": "worker", "address": "10.0.0.31"}]}


def test_master_certificate_may_name_the_public_address_and_nothing_else() -> None:
    spec = _spec(public_address="10.0.0.20")
    setup.validate_spec(spec)
    applier = setup._Applier.__new__(setup._Applier)
    applier.td, applier.spec = "histo.internal", spec
    master = applier.host_policy(spec["hosts"][0])
    assert '"ip_sans" = ["10.0.0.21", "10.0.0.21,10.0.0.20"]' in master
    worker = applier.host_policy(spec["hosts"][1])
    assert '"ip_sans" = ["10.0.0.31"]' in worker
    assert setup.host_addresses(spec["hosts"][0]) == ["10.0.0.21", "10.0.0.20"]
    assert setup.host_addresses(spec["hosts"][1]) == ["10.0.0.31"]


@pytest.mark.parametrize("bad", [{"public_address": "10.0.0.20/24"}, {"public_address": "x\"y"}])
def test_bad_public_address_refused(bad: dict[str, str]) -> None:
    with pytest.raises(setup.SetupError):
        setup.validate_spec(_spec(**bad))


def test_only_a_master_serves_the_public_address() -> None:
    spec = _spec()
    spec["hosts"][1]["public_address"] = "10.0.0.20"
    with pytest.raises(setup.SetupError, match="only a master"):
        setup.validate_spec(spec)
    base = {"role": "worker", "name": "worker1", "address": "10.0.0.31", "vault_url": "https://v", "vault_ca": "c",
            "creds_dir": "d", "state_dir": "s", "zk_hosts": "z:1"}
    with pytest.raises(ConfigError, match="only a master"):
        ServiceConfig.from_dict({**base, "public_address": "10.0.0.20"})
    with pytest.raises(ConfigError, match="public_address_mode"):
        ServiceConfig.from_dict({**base, "role": "master", "public_address_mode": "anycast"})
