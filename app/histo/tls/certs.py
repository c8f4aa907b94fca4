"""CertManager: a service's certificate from Vault, renewed at about 2/3 of its life.

The files live in the service's private state folder (mode 0600) because OpenSSL's
load_cert_chain and kazoo read paths; after each renewal the live contexts are reloaded
in place (see contexts.py), so no listener restarts and no request is dropped.
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Protocol

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from .contexts import LiveContexts
from .revocation import REVOKED, CrlSource
from ..files import write_private

log = logging.getLogger("histo.certs")

RENEW_FRACTION = 2 / 3


class IssuedCert(Protocol):
    """What a CertSource issues (histo.vault.client.CertBundle is one)."""
    cert_pem: str
    chain_pem: str  # issuing CA first, then up to and including the root
    key_pem: str
    not_before: datetime
    not_after: datetime
    serial: str


class CertSource(Protocol):
    def issue_cert(self, ttl: str) -> IssuedCert: ...
    def ca_chain_pem(self) -> str: ...


@dataclass
class CertStatus:
    serial: str = ""
    not_before: float = 0.0
    not_after: float = 0.0
    rotations: int = 0
    last_error: str = ""

    @property
    def valid(self) -> bool:
        return self.not_before <= time.time() < self.not_after

    def as_dict(self) -> dict[str, object]:
        return {
            "serial": self.serial,
            "not_after": datetime.fromtimestamp(self.not_after, timezone.utc).isoformat() if self.not_after else None,
            "seconds_left": max(0, int(self.not_after - time.time())),
            "rotations": self.rotations,
            "last_error": self.last_error or None,
        }


class CertManager:
    def __init__(self, source: CertSource, tls_dir: Path, ttl: str,
                 on_rotate: Callable[[CertStatus], None] | None = None) -> None:
        self.source, self.ttl = source, ttl
        self.dir = tls_dir
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.cert_path, self.key_path, self.ca_path = self.dir / "cert.pem", self.dir / "key.pem", self.dir / "ca.pem"
        self.status = CertStatus()
        self.contexts: LiveContexts | None = None
        self._on_rotate = on_rotate

    def fetch(self) -> CertStatus:
        """Issue a fresh certificate, write it, and load it into the live contexts (blocking)."""
        return self.install(*self.issue())

    def issue(self) -> tuple[IssuedCert, str]:
        """Ask Vault for a certificate (blocking network I/O: run it off the event loop)."""
        return self.source.issue_cert(self.ttl), self.source.ca_chain_pem()

    def install(self, bundle: IssuedCert, ca: str) -> CertStatus:
        """Write and load a certificate (at start; a rotation writes off the event loop, then loads)."""
        self.write(bundle, ca)
        return self.load(bundle)

    def write(self, bundle: IssuedCert, ca: str) -> None:
        """Write the certificate, its key and the CA bundle, each fsynced (blocking: a rotation runs it in
        the executor, so that the event loop serving requests does not wait for the disk)."""
        # Serve leaf + issuing CA so peers that trust only the root can build the chain.
        write_private(self.cert_path, bundle.cert_pem.strip() + "\n" + _issuer_only(bundle.chain_pem))
        write_private(self.key_path, bundle.key_pem)
        write_private(self.ca_path, ca)

    def load(self, bundle: IssuedCert) -> CertStatus:
        """Load the written certificate into the live contexts. Called on the thread that runs the TLS
        handshakes, so a context is never changed under a handshake in progress."""
        first = self.contexts is None
        if self.contexts is None:
            self.contexts = LiveContexts(self.ca_path, self.cert_path, self.key_path)
        else:
            self.contexts.reload()
            self.status.rotations += 1
        self.status.serial = bundle.serial
        self.status.not_before = bundle.not_before.timestamp()
        self.status.not_after = bundle.not_after.timestamp()
        self.status.last_error = ""
        log.info("certificate %s loaded, valid until %s", bundle.serial, bundle.not_after.isoformat())
        if not first and self._on_rotate:
            self._on_rotate(self.status)
        return self.status

    def _issue_and_write(self) -> IssuedCert:
        bundle, ca = self.issue()
        self.write(bundle, ca)
        return bundle

    def renew_at(self) -> float:
        s = self.status
        return s.not_before + RENEW_FRACTION * (s.not_after - s.not_before)

    async def run(self) -> None:
        """Renew forever, and follow Vault's CRL (revoked peers are refused and hung up on)."""
        if not isinstance(self.source, CrlSource):
            await self._renew_forever()
            return
        await asyncio.gather(self._renew_forever(), REVOKED.follow(self.source, self.ca_path))

    async def _renew_forever(self) -> None:
        """When Vault is unavailable keep serving the current certificate and retry."""
        loop = asyncio.get_running_loop()
        while True:
            # Renew at 2/3 of the life, or at once when our own serial shows up on the CRL (an
            # operator revoked it: a leaked key, not this host, is the reason; see vault/revoke.py).
            while time.time() < self.renew_at() and not REVOKED.is_revoked(self.status.serial or None):  # noqa: ASYNC110
                await asyncio.sleep(min(1.0, max(0.0, self.renew_at() - time.time())))
            if REVOKED.is_revoked(self.status.serial or None):
                log.warning("our certificate %s was revoked: fetching a new one", self.status.serial)
            try:
                bundle = await loop.run_in_executor(None, self._issue_and_write)
                self.load(bundle)
            except Exception as exc:  # Vault down or sealed: retry soon, the old cert still serves.
                self.status.last_error = f"renewal failed: {exc}"
                log.warning("certificate renewal failed: %s", exc)
                left = self.status.not_after - time.time()
                await asyncio.sleep(min(5.0, max(0.5, left / 20)))


def _issuer_only(chain_pem: str) -> str:
    """The intermediates of `chain_pem`: every certificate that is not a self-signed root."""
    certs = x509.load_pem_x509_certificates(chain_pem.encode()) if chain_pem.strip() else []
    return "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in certs if c.issuer != c.subject)
