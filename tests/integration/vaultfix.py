"""Reusable helpers for tests that need a real OpenBao server (never -dev mode).

Plain functions and context managers, so any test module can build its own fixture:

    with running_bao(tmp_path / "vault", f"{NET}.10") as bao:
        role_ids = configure(bao, default_hosts())["role_ids"]
        vault = provisioned_service(bao, role_ids, host, tmp_path / "creds")
"""
from __future__ import annotations

import contextlib
import socket
from pathlib import Path
from typing import Iterator

from histo.vault.client import ServiceVault
from histo.vault.provision import wrapped_secret_id, write_credentials
from histo.local.bao import BaoServer
from histo.vault.setup import apply

from .cluster_fixture import VAULT_NET

# Linux routes all of 127/8 to lo: every host gets its own address, on a /24 of this pytest process's
# own (cluster_fixture.it_net: per HISTO_IT_NET and per pytest-xdist worker)
NET = VAULT_NET


def default_hosts(net: str = NET) -> list[dict]:
    return [{"name": "zk1", "role": "zookeeper", "address": f"{net}.11"},
            {"name": "master1", "role": "master", "address": f"{net}.21"},
            {"name": "worker1", "role": "worker", "address": f"{net}.31"},
            {"name": "worker2", "role": "worker", "address": f"{net}.32"}]


def free_port(address: str) -> int:
    """A port free on `address`, with the next one free too (bao's cluster_addr uses port + 1)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind((address, 0))
            port = s.getsockname()[1]
        if port < 65535:
            with socket.socket() as s2:
                try:
                    s2.bind((address, port + 1))
                except OSError:
                    continue
            return port
    raise RuntimeError(f"no free port pair on {address}")


@contextlib.contextmanager
def running_bao(state_dir: Path, address: str = f"{NET}.10", port: int | None = None) -> Iterator[BaoServer]:
    """A started, initialized and unsealed BaoServer; stopped (by its pid) on exit."""
    bao = BaoServer(Path(state_dir), address, port or free_port(address))
    bao.start()
    try:
        bao.init_and_unseal()
        yield bao
    finally:
        bao.stop()


def spec_for(bao: BaoServer, hosts: list[dict], **overrides: object) -> dict:
    spec: dict[str, object] = {"trust_domain": "histo.internal", "hosts": hosts, "leaf_max_ttl": "24h",
            "audit_log": str(bao.audit_path), "secret_id_ttl": "720h", "token_ttl": "1h", "token_max_ttl": "24h"}
    spec.update(overrides)
    return spec


def configure(bao: BaoServer, hosts: list[dict] | None = None, **overrides: object) -> dict:
    """apply() the histo configuration with the root client; returns apply's result."""
    return apply(bao.root_client(), spec_for(bao, hosts or default_hosts(), **overrides))


@contextlib.contextmanager
def configured_vault(state_dir: Path, address: str = f"{NET}.10", hosts: list[dict] | None = None,
                     **overrides: object) -> Iterator[tuple[BaoServer, dict]]:
    """running_bao + configure: yields (bao, apply result)."""
    with running_bao(state_dir, address) as bao:
        yield bao, configure(bao, hosts, **overrides)


def provision(bao: BaoServer, role_ids: dict, host: dict, creds_dir: Path, wrap_ttl: str = "120s") -> Path:
    """What the provisioner does for one host: role_id + wrapped, address-bound secret_id, 0600."""
    token = wrapped_secret_id(bao.root_client(), host["name"], host["address"], wrap_ttl)
    write_credentials(Path(creds_dir), role_ids[host["name"]], token)
    return Path(creds_dir)


def service_vault(bao: BaoServer, host: dict, creds_dir: Path, source: str | None = None) -> ServiceVault:
    """The host's own Vault session, speaking from `source` (default: the host's address)."""
    return ServiceVault(bao.url, str(bao.ca_path), host=host["name"], role=host["role"], creds_dir=Path(creds_dir),
                        source_address=source or host["address"])


def provisioned_service(bao: BaoServer, role_ids: dict, host: dict, creds_dir: Path) -> ServiceVault:
    """Provisioned and logged in."""
    provision(bao, role_ids, host, creds_dir)
    vault = service_vault(bao, host, creds_dir)
    vault.login()
    return vault
