"""A ZooKeeper host's identity from Vault: its certificate and the super digest, fetched with the
host's own AppRole and written into its (0600) configuration before the server starts. Run at
every start (`histo zk-prepare`, ExecStartPre on machines), so a restart gets a fresh identity."""
from __future__ import annotations

import json
from pathlib import Path

from ..vault.client import ServiceVault
from .config import ZkConfig

ZK_CERT_TTL = "24h"  # ZooKeeper 3.8 does not reload its client-port certificate: renewed by restart.


def _write_from_vault(zk: ZkConfig, vault: ServiceVault) -> None:
    vault.login()
    bundle = vault.issue_cert(ZK_CERT_TTL)
    zk.write_config(cert_pem=bundle.cert_pem + "\n" + bundle.chain_pem, key_pem=bundle.key_pem,
                    ca_pem=vault.ca_chain_pem(), super_digest=vault.super_digest())


def prepare_local(zk: ZkConfig, vault_url: str, vault_ca: str, creds_dir: Path, name: str, address: str) -> None:
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
