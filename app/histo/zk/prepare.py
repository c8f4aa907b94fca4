"""A ZooKeeper host's identity from Vault: its certificate and the super digest, fetched with the
host's own AppRole and written into its (0600) configuration before the server starts. Run at
every start (`histo zk-prepare`, ExecStartPre on machines), so a restart gets a fresh identity."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

from ..vault.client import ServiceVault
from ..vault.setup import QUORUM
from .config import ZkConfig

ZK_CERT_TTL = "24h"  # ZooKeeper 3.8 does not reload its client-port certificate: renewed by restart.


def quorum_identity(vault: ServiceVault, ttl: str = ZK_CERT_TTL) -> tuple[str, str, str]:
    """This host's certificate for the quorum ports (cert, key, the quorum CA), from the quorum CA
    alone, with the host's own names and address (its policy allows nothing else)."""
    resp = cast(dict[str, Any], vault.client.write_data(f"{QUORUM}/issue/quorum-{vault.host}", data={
        "common_name": f"{vault.host}.{vault.trust_domain}", "alt_names": vault.host,
        "ip_sans": vault.source_address, "ttl": ttl, "format": "pem", "private_key_format": "pkcs8"}))
    data = resp["data"]
    return str(data["certificate"]), str(data["private_key"]), str(data["issuing_ca"])


def _write_from_vault(zk: ZkConfig, vault: ServiceVault) -> None:
    vault.login()
    bundle = vault.issue_cert(ZK_CERT_TTL)
    zk.write_config(cert_pem=bundle.cert_pem + "\n" + bundle.chain_pem, key_pem=bundle.key_pem,
                    ca_pem=vault.ca_chain_pem(), super_digest=vault.super_digest(),
                    quorum=quorum_identity(vault) if zk.peers else None)


def prepare_local(zk: ZkConfig, vault_url: str, vault_ca: str, creds_dir: Path, name: str, address: str) -> None:
    """Local mode and the tests (one server, or an ensemble when `zk.peers` is set)."""
    vault = ServiceVault(vault_url, vault_ca, host=name, role="zookeeper", creds_dir=creds_dir,
                         source_address=address)
    _write_from_vault(zk, vault)


def prepare(config_path: Path) -> None:
    """Deployment entry point. The JSON config names the host, Vault, and the ensemble."""
    cfg = json.loads(config_path.read_text())
    zk = ZkConfig.from_json(cfg)
    vault = ServiceVault(cfg["vault_url"], cfg["vault_ca"], host=cfg["name"], role="zookeeper",
                         creds_dir=Path(cfg["creds_dir"]), source_address=cfg["address"])
    _write_from_vault(zk, vault)
