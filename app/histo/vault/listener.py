"""Vault's own listener certificate, renewed on its node without a human (`histo vault-listener-renew`).

The certificate comes from pki_vault (vault/setup.py), an intermediate the bootstrap CA signed, so
every client keeps verifying Vault with the one bootstrap ca.pem it has. One pass:

- due when the file is missing, does not chain to the bootstrap CA, was made by the bootstrap CA
  itself (the controller's fallback: replaced by a pki_vault one at the first pass Vault answers),
  names something else, or has spent 2/3 of its life; and when the certificate the listener actually
  serves (a real TLS handshake) is in its last third or fails to verify;
- issues a fresh leaf with the host's own AppRole from pki_vault/issue/listener-<host> (only this
  host's names and address: its policy and the PKI role both say so), writes key then certificate
  (leaf + intermediate) atomically, and sends the server SIGHUP: OpenBao reloads its listener's
  certificate on SIGHUP, and a connection already open keeps the certificate it started with;
- a served serial that is not the file's (a lost signal, a restart that raced) gets another SIGHUP.

Vault away: the pass fails with one line, the next pass (the loop, or the timer) tries again; the
margin is the last third of the certificate's life (240 h of 720 h). The host's secret_id is kept
alive by the same loop (vault/secretid.py)."""
from __future__ import annotations

import json
import logging
import os
import signal
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from .. import TRUST_DOMAIN, procs
from ..durations import parse_duration
from ..files import write_private
from ..tls.selfsigned import RENEW_AT, listener_problem, load_ca
from .client import ServiceVault, VaultAuthError, VaultUnavailable
from .secretid import SecretIdKeeper
from .setup import LISTENER

log = logging.getLogger("histo.vault.listener")
RELOAD_WAIT = 10.0  # seconds for the listener to serve the new certificate after SIGHUP


class ListenerError(RuntimeError):
    """A configuration or state this renewer cannot work with (one readable line)."""


@dataclass(frozen=True)
class ListenerConfig:
    host: str  # the node's inventory name: its AppRole histo-<host>, its PKI role listener-<host>
    address: str  # its listener's address (an IP SAN; the source of its Vault requests)
    port: int
    hostnames: list[str]  # names in the certificate, the first one its common name
    vault_url: str  # every node, comma-separated (any node may issue)
    vault_ca: str  # the bootstrap CA (ca.pem)
    creds_dir: str  # role_id + secret_id of the host's AppRole
    cert: str  # the listener's certificate file (leaf + intermediate)
    key: str  # ... and its key (PKCS#8, 0600)
    ttl: str = "720h"
    server_pid_file: str = ""  # local mode: the bao pid file (procs.alive with server_marker)
    server_marker: str = ""
    server_unit: str = ""  # machines: the systemd unit whose main process gets SIGHUP
    trust_domain: str = TRUST_DOMAIN

    @classmethod
    def from_file(cls, path: Path) -> ListenerConfig:
        try:
            doc = json.loads(Path(path).read_text())
            known = {k: doc[k] for k in cls.__dataclass_fields__ if k in doc}
            cfg = cls(**known)
            parse_duration(cfg.ttl)
        except OSError as exc:
            raise ListenerError(f"cannot read {path}: {exc.strerror}") from None
        except (ValueError, TypeError) as exc:
            raise ListenerError(f"bad listener config {path}: {exc}") from None
        if not cfg.hostnames or not (cfg.server_pid_file or cfg.server_unit):
            raise ListenerError(f"bad listener config {path}: needs hostnames and server_pid_file or server_unit")
        return cfg


def file_due(cert_pem: bytes | None, ca: x509.Certificate, hostnames: list[str], address: str,
             now: datetime, renew_at: float = RENEW_AT) -> str | None:
    """Why the certificate file must be replaced, or None while it serves (pure: the unit tests')."""
    if not cert_pem:
        return "missing"
    why = listener_problem(cert_pem, ca, hostnames, [address], now, renew_at)
    if why:
        return why
    leaf = x509.load_pem_x509_certificate(cert_pem)
    if leaf.issuer == ca.subject:
        return "made by the bootstrap CA (the fallback)"
    return None


def served_due(served: x509.Certificate | None, now: datetime, renew_at: float = RENEW_AT) -> str | None:
    """Why the certificate the listener serves calls for a renewal (None: it is fine, or unknown)."""
    if served is None:
        return None  # the server is down or refuses: the file decides
    start, end = served.not_valid_before_utc, served.not_valid_after_utc
    if now >= start + (end - start) * renew_at:
        return "served certificate in its last third"
    return None


def served_certificate(address: str, port: int, ca_path: str, timeout: float = 5.0) -> x509.Certificate | None:
    """The leaf the listener serves now, read from a real handshake verified against the bootstrap CA
    (hostname not checked: the address is what we asked for). None when nothing verifiable answers."""
    ctx = ssl.create_default_context(cafile=ca_path)
    ctx.check_hostname = False
    try:
        with socket.create_connection((address, port), timeout=timeout) as sock:
            with ctx.wrap_socket(sock) as tls:
                der = tls.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError):
        return None
    return x509.load_der_x509_certificate(der) if der else None


class ListenerRenewer:
    def __init__(self, cfg: ListenerConfig) -> None:
        self.cfg = cfg
        self.ca = load_ca(Path(cfg.vault_ca))
        self.vault = ServiceVault(cfg.vault_url, cfg.vault_ca, host=cfg.host, role="vault",
                                  creds_dir=Path(cfg.creds_dir), source_address=cfg.address,
                                  trust_domain=cfg.trust_domain)
        self.keeper = SecretIdKeeper(self.vault)

    # -- the server ------------------------------------------------------------------------------
    def server_pid(self) -> int | None:
        if self.cfg.server_pid_file:
            return procs.alive(Path(self.cfg.server_pid_file), self.cfg.server_marker)
        out = subprocess.run(["systemctl", "show", "--property=MainPID", "--value", self.cfg.server_unit],
                             capture_output=True, text=True, check=False)
        pid = int(out.stdout.strip() or 0) if out.returncode == 0 and out.stdout.strip().isdigit() else 0
        return pid or None

    def reload(self) -> bool:
        """SIGHUP to the server (its own user may signal it: no privilege needed). False when it is not
        running: it reads the files when it starts."""
        pid = self.server_pid()
        if not pid:
            return False
        os.kill(pid, signal.SIGHUP)
        return True

    def served(self) -> x509.Certificate | None:
        return served_certificate(self.cfg.address, self.cfg.port, self.cfg.vault_ca)

    def _key_problem(self, cert_pem: bytes | None) -> str | None:
        """The key file must pair with the certificate file, or the server cannot load either."""
        try:
            key = serialization.load_pem_private_key(Path(self.cfg.key).read_bytes(), None)
            cert = x509.load_pem_x509_certificate(cert_pem or b"")
        except (OSError, ValueError, TypeError):
            return "key missing or unreadable"
        return None if key.public_key() == cert.public_key() else "key does not match the certificate"

    def _file_pem(self) -> bytes | None:
        try:
            return Path(self.cfg.cert).read_bytes()
        except OSError:
            return None

    # -- one pass --------------------------------------------------------------------------------
    def issue(self) -> tuple[str, str, str]:
        """(certificate file text: leaf + intermediate, key PEM, serial) from pki_vault."""
        params = {"common_name": self.cfg.hostnames[0], "alt_names": ",".join(self.cfg.hostnames[1:]),
                  "ip_sans": self.cfg.address, "ttl": self.cfg.ttl, "format": "pem", "private_key_format": "pkcs8"}
        data = self.vault.call(self.vault.client.write_data, f"{LISTENER}/issue/listener-{self.cfg.host}",
                               data=params)["data"]
        # leaf + its intermediate; the bootstrap CA stays out (clients hold it as their trust anchor)
        chain = [c.strip() for c in (data.get("ca_chain") or [data["issuing_ca"]])]
        chain = [c for c in chain if x509.load_pem_x509_certificate(c.encode()).subject != self.ca.subject]
        key_pem = data["private_key"]
        if "BEGIN PRIVATE KEY" not in key_pem:  # a server that ignored private_key_format
            key = serialization.load_pem_private_key(key_pem.encode(), None)
            key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()).decode()
        return "\n".join([data["certificate"].strip(), *chain]) + "\n", key_pem, str(data["serial_number"])

    def once(self, now: datetime | None = None) -> dict[str, object]:
        now = now or datetime.now(timezone.utc)
        file_pem = self._file_pem()
        served = self.served()
        why = file_due(file_pem, self.ca, self.cfg.hostnames, self.cfg.address, now) or self._key_problem(file_pem)
        out: dict[str, object] = {"changed": False}
        if why is None:
            leaf = x509.load_pem_x509_certificate(file_pem or b"")
            if served is not None and served.serial_number != leaf.serial_number:
                # the files are newer than what is served: a lost signal, or files the server will not
                # load; the second shows as a served certificate that ages into its last third
                why = served_due(served, now)
                if why is None:
                    out["reloaded"] = self.reload()
                    self._keep_secret_id()
                    return out
            else:
                self._keep_secret_id()
                return out
        self.vault.login()
        cert_text, key_pem, serial = self.issue()
        # key first: a server (re)started between the two writes fails to pair them and systemd
        # starts it again a moment later, never with a new certificate beside the old key
        write_private(Path(self.cfg.key), key_pem, 0o600)
        write_private(Path(self.cfg.cert), cert_text, 0o644)
        new = x509.load_pem_x509_certificate(cert_text.encode())
        log.info("listener certificate renewed (%s): serial %s, valid until %s", why, serial,
                 new.not_valid_after_utc.isoformat())
        out.update(changed=True, why=why, serial=serial, not_after=new.not_valid_after_utc.isoformat(),
                   reloaded=self.reload())
        if out["reloaded"]:
            out["serving"] = self.wait_served(new.serial_number)
        self._keep_secret_id()
        return out

    def wait_served(self, serial: int, timeout: float = RELOAD_WAIT) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            served = self.served()
            if served is not None and served.serial_number == serial:
                return True
            time.sleep(0.2)
        return False

    def _keep_secret_id(self) -> None:
        """The host's secret_id outlives the certificate's 2/3: checked every pass, not only at a
        renewal. Vault away here is no failure of the pass (the certificate is what matters now)."""
        try:
            self.vault.renew_if_needed()
            if self.keeper.renew_if_needed():
                log.info("the listener renewer's secret_id was renewed")
        except (VaultUnavailable, VaultAuthError) as exc:
            log.warning("secret_id upkeep skipped this pass: %s", exc)


def run(config: Path, interval: float | None) -> dict[str, object] | None:
    """One pass (the timer's), or a loop that never dies of Vault being away."""
    r = ListenerRenewer(ListenerConfig.from_file(config))
    if interval is None:
        return r.once()
    while True:
        try:
            r.once()
        except (VaultUnavailable, VaultAuthError, OSError, ValueError, KeyError) as exc:
            log.warning("listener renewal pass failed (retrying in %.0fs): %s: %s", interval,
                        type(exc).__name__, str(exc)[:200])
        time.sleep(interval)
