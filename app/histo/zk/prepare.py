"""A ZooKeeper host's identity from Vault: its certificate and the super digest, fetched with the
host's own AppRole and written into its (0600) configuration before the server starts. Run at
every start (`histo zk-prepare`, ExecStartPre on machines), so a restart gets a fresh identity."""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, cast

from ..vault.client import ServiceVault, VaultUnavailable
from ..vault.setup import QUORUM
from .config import ZkConfig

# ZooKeeper 3.8.0 does not reload its client-port certificate: renewed by a restart (zk/renew.py).
ZK_CERT_TTL = "24h"
log = logging.getLogger("histo.zk.prepare")


def quorum_identity(vault: ServiceVault, ttl: str = ZK_CERT_TTL) -> tuple[str, str, str]:
    """This host's certificate for the quorum ports (cert, key, the quorum CA), from the quorum CA
    alone, with the host's own names and address (its policy allows nothing else)."""
    resp = cast(dict[str, Any], vault.client.write_data(f"{QUORUM}/issue/quorum-{vault.host}", data={
        "common_name": f"{vault.host}.{vault.trust_domain}", "alt_names": vault.host,
        "ip_sans": vault.source_address, "ttl": ttl, "format": "pem", "private_key_format": "pkcs8"}))
    data = resp["data"]
    return str(data["certificate"]), str(data["private_key"]), str(data["issuing_ca"])


def _write_from_vault(zk: ZkConfig, vault: ServiceVault, ttl: str) -> None:
    vault.login()
    bundle = vault.issue_cert(ttl)
    zk.write_config(cert_pem=bundle.cert_pem + "\n" + bundle.chain_pem, key_pem=bundle.key_pem,
                    ca_pem=vault.ca_chain_pem(), super_digest=vault.super_digest(),
                    quorum=quorum_identity(vault, ttl) if zk.peers else None)


def prepare_local(zk: ZkConfig, vault_url: str, vault_ca: str, creds_dir: Path, name: str, address: str,
                  cert_ttl: str = ZK_CERT_TTL) -> None:
    """Local mode and the tests (one server, or an ensemble when `zk.peers` is set)."""
    vault = ServiceVault(vault_url, vault_ca, host=name, role="zookeeper", creds_dir=creds_dir,
                         source_address=address)
    _write_from_vault(zk, vault, cert_ttl)


def prepare(config_path: Path) -> None:
    """Deployment entry point. The JSON config names the host, Vault, and the ensemble."""
    cfg = json.loads(config_path.read_text())
    zk = ZkConfig.from_json(cfg)
    try:
        _write_from_vault(zk, host_vault(cfg), str(cfg.get("cert_ttl") or ZK_CERT_TTL))
    except VaultUnavailable:
        # A start while Vault is away (a reboot, a restart racing an outage) goes on with the
        # certificates it has while they are valid; the renewer replaces them once Vault is back.
        if not _still_valid(zk):
            raise
        log.warning("Vault unavailable: ZooKeeper starts on its current certificates")


def _still_valid(zk: ZkConfig, now: float | None = None) -> bool:
    from .renew import windows
    now = time.time() if now is None else now
    found = windows(zk)
    return bool(found) and zk.cfg_path.exists() and all(w.not_after > now + 60 for w in found)


def host_vault(cfg: dict[str, Any]) -> ServiceVault:
    """The ZooKeeper host's own Vault session, from its zk.json."""
    return ServiceVault(cfg["vault_url"], cfg["vault_ca"], host=cfg["name"], role="zookeeper",
                        creds_dir=Path(cfg["creds_dir"]), source_address=cfg["address"])
