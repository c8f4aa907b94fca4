"""A real OpenBao raft cluster on loopback: N BaoServer nodes sharing one bootstrap CA, one init file
and one static seal key, each joining through `retry_join` and unsealing itself, the way the vault
role's nodes do on the machines (docs/SECURITY.md, "Vault's seal").

The declarative audit device is part of the replicated configuration: every peer must name the same
file path (OpenBao refuses to unseal a node whose path differs), so the loopback nodes append to one
shared audit.log, as the machines each write /var/log/openbao/audit.log.

    cluster = BaoCluster(root, ["127.0.26.1", "127.0.26.2", "127.0.26.3"], port=8200)
    cluster.start()            # node 1 initializes; the others join and unseal without a key typed
    cluster.active()           # the node that serves writes now
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

import hvac
import hvac.exceptions
import requests

from ..files import private_dir
from ..vault.sealkey import ensure_seal_key
from .bao import BaoServer, VaultServerError


class BaoCluster:
    def __init__(self, root: Path, addresses: Sequence[str], port: int = 8200) -> None:
        self.root = private_dir(Path(root))
        seal_key = self.root / "seal.key"
        ensure_seal_key(seal_key)
        urls = [f"https://{a}:{port}" for a in addresses]
        self.nodes = [BaoServer(self.root / f"vault{i}", a, port, node_id=f"vault{i}",
                                peers=[u for u in urls if u != urls[i - 1]], shared_dir=self.root,
                                seal_key=seal_key, audit_log=self.root / "audit.log")
                      for i, a in enumerate(addresses, start=1)]

    @property
    def urls(self) -> list[str]:
        return [n.url for n in self.nodes]

    @property
    def url(self) -> str:
        """Every node, comma-separated: the form a service's `vault_url` takes (vault/failover.py)."""
        return ",".join(self.urls)

    @property
    def ca_path(self) -> Path:
        return self.nodes[0].ca_path

    @property
    def audit_path(self) -> Path:
        return self.nodes[0].audit_path

    def root_client(self) -> hvac.Client:
        """The root token on the active node (local mode's setup and the tests only)."""
        return self.active().root_client()

    def running(self) -> bool:
        return any(n.running() for n in self.nodes)

    def start(self, timeout: float = 60.0) -> None:
        """Start every node, initialize through the first (once), wait until all are unsealed."""
        for node in self.nodes:
            node.start()
        self.nodes[0].init_and_unseal(shares=1, threshold=1)
        for node in self.nodes:
            self.wait_unsealed(node, timeout)
        self.wait_voters(timeout)

    def wait_voters(self, timeout: float = 60.0) -> None:
        """Joined nodes start as non-voters; autopilot promotes them once stable (about 10 s). Only
        then can the cluster lose its active node and still elect one."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                servers = self.peers()
            except (requests.RequestException, hvac.exceptions.VaultError, VaultServerError):
                servers = []
            if len(servers) == len(self.nodes) and all(s.get("voter") for s in servers):
                return
            time.sleep(0.5)
        raise VaultServerError(f"not every OpenBao node became a raft voter within {timeout:.0f}s")

    @staticmethod
    def health(node: BaoServer) -> dict[str, object] | None:
        """sys/health of one node (unauthenticated), None while it does not answer."""
        try:
            resp = node.client().sys.read_health_status(standby_code=200, sealed_code=200, uninit_code=200,
                                                         method="GET")  # every state as a body, not an error
        except (requests.RequestException, hvac.exceptions.VaultError):
            return None
        return resp if isinstance(resp, dict) else None

    def wait_unsealed(self, node: BaoServer, timeout: float = 60.0) -> None:
        """A joined node is unsealed (by its seal key) and a raft member: active or standby."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            h = self.health(node)
            if h and h.get("initialized") and not h.get("sealed"):
                return
            time.sleep(0.2)
        raise VaultServerError(f"{node.node_id} did not join and unseal within {timeout:.0f}s; see {node.log_path}")

    def active(self, timeout: float = 30.0) -> BaoServer:
        """The node that is active now (waits through an election)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            for node in self.nodes:
                h = self.health(node)
                if h and not h.get("sealed") and not h.get("standby"):
                    return node
            time.sleep(0.1)
        raise VaultServerError(f"no active OpenBao node within {timeout:.0f}s")

    def peers(self) -> list[dict[str, object]]:
        """The raft configuration as the active node sees it (root token: tests and local mode only)."""
        resp = self.active().root_client().sys.read_raft_config()
        return list(resp["data"]["config"]["servers"])

    def stop(self) -> bool:
        """Stop every node (by its pid); False if none was running."""
        return any([node.stop() for node in self.nodes])
