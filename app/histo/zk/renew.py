"""ZooKeeper's certificates renewed by a restart, one server at a time, and the ZooKeeper host's
own secret_id kept alive.

Debian's ZooKeeper 3.8.0 reads its client-port certificate once, at start (client certificate
reload came in 3.8.5/3.9), so a server whose certificate passed 2/3 of its life is restarted: its
start (`histo zk-prepare`, ExecStartPre on machines) issues fresh certificates. Sessions live in the
ensemble (and in a lone server's snapshot and log), so clients reconnect within their session
timeout and keep their session and ephemeral nodes. A TLS proxy that reloads (stunnel, ghostunnel)
was the other standard answer and is refused here: ZooKeeper would see the proxy's certificate, not
the client's, and the membership ACLs are bound to each client's certificate (x509 auth).

One server at a time keeps quorum: a server restarts only in its own time slot
(`(now // slot) % ensemble size == server_id - 1`) and only while every other server answers
`ruok` over TLS, so two servers are never down together. The leader goes last (its restart costs an
election, which the followers' do not), unless its own certificate nears its end."""
from __future__ import annotations

import logging
import socket
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from cryptography import x509

from ..vault.secretid import SecretIdKeeper
from .config import ZkConfig

log = logging.getLogger("histo.zk.renew")
RENEW_FRACTION = 2 / 3


@dataclass(frozen=True)
class Window:
    not_before: float
    not_after: float

    def due(self, now: float, fraction: float = RENEW_FRACTION) -> bool:
        return now >= self.not_before + fraction * (self.not_after - self.not_before)


def cert_window(pem_path: Path) -> Window:
    """The leaf (first certificate) of a PEM file that may hold the key too."""
    cert = x509.load_pem_x509_certificates(pem_path.read_bytes())[0]
    return Window(cert.not_valid_before_utc.timestamp(), cert.not_valid_after_utc.timestamp())


def windows(zk: ZkConfig) -> list[Window]:
    conf = zk.dir / "conf"
    return [cert_window(p) for p in (conf / "server.pem", conf / "quorum.pem") if p.exists()]


def in_slot(zk: ZkConfig, now: float, slot: float) -> bool:
    members = max(1, len(zk.peers))
    return int(now // slot) % members == (zk.server_id - 1) % members


def probe(zk: ZkConfig, address: str, port: int, timeout: float = 3.0) -> Window | None:
    """`ruok` over the TLS client port, with this server's own certificate as the client's: the
    server's certificate window when it answers `imok`, None when it does not serve."""
    conf = zk.dir / "conf"
    ctx = ssl.create_default_context(cafile=str(conf / "ca.pem"))
    ctx.check_hostname = False  # the peer is named by its address here; its CA is what matters
    ctx.load_cert_chain(str(conf / "server.pem"))
    try:
        with socket.create_connection((address, port), timeout=timeout) as raw, \
                ctx.wrap_socket(raw) as s:
            der = s.getpeercert(binary_form=True)
            s.sendall(b"ruok")
            if s.recv(4) != b"imok" or der is None:
                return None
    except (OSError, ssl.SSLError):
        return None
    cert = x509.load_der_x509_certificate(der)
    return Window(cert.not_valid_before_utc.timestamp(), cert.not_valid_after_utc.timestamp())


def ruok(zk: ZkConfig, address: str, port: int) -> bool:
    return probe(zk, address, port) is not None


def others(zk: ZkConfig) -> list[Window | None]:
    return [probe(zk, str(p["address"]), int(p.get("client_port", zk.port)))
            for p in zk.peers if int(p["id"]) != zk.server_id]


def is_leader(zk: ZkConfig) -> bool:
    """Only the leader listens on the quorum port."""
    own = [p for p in zk.peers if int(p["id"]) == zk.server_id]
    if not own:
        return False
    try:
        with socket.create_connection((zk.address, int(own[0].get("quorum_port", 2888))), timeout=2):
            return True
    except OSError:
        return False


def may_restart(zk: ZkConfig, now: float, slot: float, fraction: float = RENEW_FRACTION) -> bool:
    """Due, in this server's slot, every other server serving; and the leader last (its restart costs
    an election), unless its own certificate is into the last sixth of its life. Due is judged by the
    certificate the server *serves* (a pass that wrote new files but whose restart did not happen asks
    again next time); a server that does not serve (stopped by an operator, starting) is left alone."""
    served = probe(zk, zk.address, zk.port)
    if served is None:
        return False
    conf = zk.dir / "conf"
    mine = [served] + ([cert_window(conf / "quorum.pem")] if (conf / "quorum.pem").exists() else [])
    if not any(w.due(now, fraction) for w in mine) or not in_slot(zk, now, slot):
        return False
    peers = others(zk)
    if any(w is None for w in peers):
        return False
    urgent = any(w.due(now, 5 / 6) for w in mine)
    if not urgent and any(w is not None and w.due(now, fraction) for w in peers) and is_leader(zk):
        return False
    return True


class ZkRenewer:
    """One pass (`once`) does what is due: the host's secret_id, then, in this server's slot and with
    every other server serving, a restart through `restart` when a certificate passed 2/3 of its life."""

    def __init__(self, zk: ZkConfig, keeper: SecretIdKeeper, restart: Callable[[], None],
                 slot: float = 30.0, fraction: float = RENEW_FRACTION,
                 prepare: Callable[[], None] | None = None) -> None:
        self.zk, self.keeper, self.restart = zk, keeper, restart
        # the new certificates are issued while the server still runs: with Vault away the pass fails
        # here and the server keeps serving on its current ones (never stopped without a successor)
        self.prepare = prepare or (lambda: None)
        self.slot, self.fraction = slot, fraction
        self.restarts = 0
        self.restarted_at: list[float] = []

    def once(self, now: float | None = None) -> dict[str, Any]:
        now = time.time() if now is None else now
        if not self.keeper.vault.client.token:
            self.keeper.vault.login()
        self.keeper.vault.renew_if_needed()
        renewed = self.keeper.renew_if_needed(now)
        restarted = False
        if may_restart(self.zk, now, self.slot, self.fraction):
            log.info("ZooKeeper certificate past %.0f%% of its life: restarting server %d to renew it",
                     100 * self.fraction, self.zk.server_id)
            self.prepare()
            self.restart()
            self.restarts += 1
            self.restarted_at.append(now)
            restarted = True
        return {"secret_id_renewed": renewed, "restarted": restarted}


def systemd_restart(unit: str = "histo-zookeeper") -> Callable[[], None]:
    """On machines: the unit's ExecStartPre (`histo zk-prepare`) issues the new certificates."""
    import subprocess

    def restart() -> None:
        subprocess.run(["systemctl", "restart", unit], check=True, timeout=120)
    return restart


def requested_restart(flag: Path, zk: ZkConfig, timeout: float = 180.0) -> Callable[[], None]:
    """On machines: the renewer runs as the server's own user, which may not restart units. It asks by
    rewriting `flag`; a root path unit (histo-zookeeper-restart.path) restarts the server, whose
    ExecStartPre issues the new certificates. Done once the server answers `ruok` with a certificate
    newer than the one it served before (no D-Bus needed); else OSError, which the renewal loop logs
    before trying again at its next pass."""

    def restart() -> None:
        before = probe(zk, zk.address, zk.port)
        tmp = flag.with_name(flag.name + ".tmp")
        tmp.write_text(f"{time.time():.3f}\n")
        tmp.replace(flag)  # one event for the path unit, never a half-written file
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            time.sleep(1.0)
            now = probe(zk, zk.address, zk.port)
            if now is not None and (before is None or now.not_before > before.not_before):
                return
        raise OSError(f"ZooKeeper server {zk.server_id} was not restarted within {timeout:.0f}s of the "
                      f"request in {flag}")
    return restart


def process_restart(config_path: Path) -> Callable[[], None]:
    """Local mode and the tests: the server process by its pid file (already prepared by the pass)."""
    from ..local.zkserver import ZkServer

    def restart() -> None:
        server = ZkServer.from_json(_json(config_path))
        server.stop()
        server.start()
    return restart


def _json(path: Path) -> dict[str, Any]:
    import json
    doc = json.loads(Path(path).read_text())
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: not a JSON object")
    return doc


def renewer(config_path: Path, restart: Callable[[], None]) -> ZkRenewer:
    from .prepare import host_vault, prepare
    cfg = _json(config_path)
    return ZkRenewer(ZkConfig.from_json(cfg), SecretIdKeeper(host_vault(cfg)), restart,
                     slot=float(cfg.get("renew_slot", 30.0)), prepare=lambda: prepare(config_path))


def run(config_path: Path, restart: Callable[[], None], interval: float | None) -> None:
    """`histo zk-renew`: one pass (a systemd timer's), or every `interval` seconds until stopped.
    In a loop, Vault or a peer being away is logged and retried next time, never fatal."""
    from ..vault.client import VaultAuthError, VaultUnavailable
    r = renewer(config_path, restart)
    if interval is None:
        r.once()
        return
    while True:
        try:
            r.once()
        except (VaultUnavailable, VaultAuthError, OSError) as exc:
            log.warning("ZooKeeper renewal pass failed (retrying in %.0fs): %s", interval, exc)
        time.sleep(interval)
