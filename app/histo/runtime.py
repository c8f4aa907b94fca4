"""What every histo service does at start and while it runs, whatever its role:
log in to Vault with its AppRole, hold a renewed certificate, keep its Vault token alive,
hold a TLS + digest-authenticated ZooKeeper session, and keep its membership node current
(its certificate expiry follows each rotation)."""
from __future__ import annotations

import asyncio
import logging
import secrets
import time
from pathlib import Path
from typing import Callable

from kazoo.client import KazooClient, KazooState

from .config import ServiceConfig
from .tls.certs import CertManager, CertStatus
from .vault.client import ServiceVault
from .vault.secretid import SecretIdKeeper
from .zk.acl import x509_id
from .zk.client import connect as zk_connect
from .zk.membership import Member, Membership

log = logging.getLogger("histo.runtime")


class ServiceRuntime:
    def __init__(self, cfg: ServiceConfig, on_event: Callable[..., None] | None = None) -> None:
        self.cfg = cfg
        self.state_dir = Path(cfg.state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._emit = on_event or (lambda kind, **kw: None)
        self.vault = ServiceVault(cfg.vault_url, cfg.vault_ca, host=cfg.name, role=cfg.role,
                                  creds_dir=Path(cfg.creds_dir), source_address=cfg.address,
                                  trust_domain=cfg.trust_domain,
                                  extra_ip_sans=(cfg.public_address,))
        self.secret_ids = SecretIdKeeper(self.vault)
        self.certs = CertManager(self.vault, self.state_dir / "tls", cfg.cert_ttl, on_rotate=self._rotated)
        self.zk: KazooClient | None = None
        self.acl_ids: dict[str, str] = {}
        self.zk_state = "LOST"
        self.vault_ok = False
        self.vault_error = ""
        self.started = time.time()
        # This process's own id: in its membership node and in its answer to a liveness probe, so
        # a node left by a previous process of the same host is told apart from a live one.
        self.incarnation = secrets.token_hex(8)
        self.membership: Membership | None = None
        self.timings: dict[str, float] = {}

    # -- start ---------------------------------------------------------------------------
    def start(self) -> None:
        """Blocking start: Vault login, certificate, ZooKeeper session. Raises on failure."""
        t0 = time.perf_counter()
        self.vault.login()
        self.timings["vault_login"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        self.certs.fetch()
        self.timings["cert_issue"] = time.perf_counter() - t1
        user, password = self.vault.zk_credentials()
        self.acl_ids = self.vault.zk_acl_ids()
        self.vault_ok = True
        t2 = time.perf_counter()
        self.zk = zk_connect(self.cfg.zk_hosts, str(self.certs.ca_path), str(self.certs.cert_path),
                             str(self.certs.key_path), user, password, self.cfg.role, acl_ids=self.acl_ids,
                             session_timeout=self.cfg.zk_session_timeout,
                             x509_id=x509_id(self.cfg.name, self.cfg.trust_domain), source_address=self.cfg.address)
        del password
        self.zk_state = "CONNECTED"
        self.zk.add_listener(self._zk_listener)
        self.timings["zk_connect"] = time.perf_counter() - t2
        self.timings["total"] = time.perf_counter() - t0

    def _zk_listener(self, state: str) -> None:
        self.zk_state = state
        if state != KazooState.CONNECTED:
            log.warning("ZooKeeper session %s", state)

    def _rotated(self, status: CertStatus) -> None:
        self._emit("cert_rotated", severity="info", serial=status.serial,
                   not_after=status.as_dict()["not_after"], service=self.cfg.name)
        if self.membership is not None and self.membership.member is not None:
            self.membership.update(cert_not_after=status.not_after)

    # -- membership ------------------------------------------------------------------------
    def join(self, kind: str, public: str | None = None, take_over: bool = False) -> Membership:
        """Publish this process in /histo/<kind> (masters may take over their own predecessor's node)."""
        assert self.zk is not None, "start() first"
        self.membership = Membership(self.zk, kind, self.cfg.name, take_over=take_over)
        self.membership.join(Member(name=self.cfg.name, endpoint=self.cfg.internal_url,
                                    spiffe_id=self.cfg.spiffe_id, incarnation=self.incarnation,
                                    started=self.started, cert_not_after=self.certs.status.not_after,
                                    public=public))
        return self.membership

    # -- background upkeep ---------------------------------------------------------------
    async def upkeep(self) -> None:
        await asyncio.gather(self.certs.run(), self._token_loop())

    async def _token_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(5)
            try:
                await loop.run_in_executor(None, self.vault.renew_if_needed)
                if await loop.run_in_executor(None, self.secret_ids.renew_if_needed):
                    self._emit("secret_id_renewed", severity="info", service=self.cfg.name,
                               renewals=self.secret_ids.renewals)
                if not self.vault_ok:
                    self._emit("vault_recovered", severity="info", service=self.cfg.name)
                self.vault_ok, self.vault_error = True, ""
            except Exception as exc:
                if self.vault_ok:
                    self._emit("vault_unavailable", severity="warning", service=self.cfg.name, reason=str(exc))
                self.vault_ok, self.vault_error = False, str(exc)

    # -- readiness -------------------------------------------------------------------------
    def checks(self) -> dict[str, dict]:
        cert = self.certs.status
        checks = {
            "zookeeper": {"ok": self.zk_state == KazooState.CONNECTED, "state": str(self.zk_state)},
            "certificate": {"ok": cert.valid, **cert.as_dict()},
            # Vault being away is degraded, not fatal: we keep serving on the certificate we hold.
            "vault": {"ok": self.vault_ok, "error": self.vault_error or None},
        }
        return checks

    def stop(self) -> None:
        if self.membership is not None:
            self.membership.leave()
        if self.zk is not None:
            try:
                self.zk.stop()
                self.zk.close()
            except Exception:
                pass
