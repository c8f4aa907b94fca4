"""Revocation of workload identities: every peer follows Vault PKI's CRL and refuses, and hangs up
on, any certificate whose serial is on it.

One process-wide list (REVOKED): the internal listener's peer check and the InternalClient's
connector consult it on every request and every new connection, and register each live TLS
connection with its peer's serial, so a refresh that finds a serial newly revoked closes that
identity's open keep-alive connections, on both the server and the client side, within one poll
interval (POLL_SECONDS). The CRL comes from `pki_int/crl` (public, DER, signed by the intermediate:
its signature is checked against the CA bundle the service trusts, so whoever sits between us and
Vault cannot un-revoke anyone). While Vault is unreachable the last list stays in force.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from pathlib import Path
from typing import Any, Callable, Protocol, runtime_checkable

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec

log = logging.getLogger("histo.revocation")

POLL_SECONDS = 2.0


@runtime_checkable
class CrlSource(Protocol):
    def crl_der(self) -> bytes: ...


def _every_crl(source: CrlSource) -> list[tuple[bytes, str | None]]:
    """(CRL, its issuer's certificate or None): every intermediate's when the source knows them."""
    many = getattr(source, "crl_bundles", None)
    if callable(many):
        return [(der, pem) for der, pem in many()]
    return [(source.crl_der(), None)]


class _Closable(Protocol):
    def close(self) -> None: ...
    def is_closing(self) -> bool: ...


def serial_int(serial: str | int) -> int:
    """Vault's "1a:2b:..." and ssl's "1A2B..." spellings of a serial, as one integer."""
    if isinstance(serial, int):
        return serial
    return int(serial.replace(":", "").replace("-", "").strip(), 16)


def peer_serial(peercert: dict[str, Any] | None) -> int | None:
    raw = (peercert or {}).get("serialNumber")
    return serial_int(raw) if raw else None


def _issuers(ca_path: Path) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(ca_path.read_bytes())
    except (OSError, ValueError):
        return []


def parse_crl(der: bytes, ca_path: Path | None = None, issuer_pem: str | None = None) -> set[int]:
    """The serials a CRL lists; with `ca_path`, only if one of its certificates signed the CRL, or
    `issuer_pem` did and one of them (a root) signed that issuer (an intermediate newer than the bundle)."""
    return crl_entries(der, ca_path, issuer_pem)[1]


def crl_entries(der: bytes, ca_path: Path | None = None, issuer_pem: str | None = None) -> tuple[bytes, set[int]]:
    """(the CRL issuer's name, DER; the serials it lists), checked as parse_crl says."""
    crl = x509.load_der_x509_crl(der) if not der.lstrip().startswith(b"-----") else x509.load_pem_x509_crl(der)
    if ca_path is not None:
        trusted = _issuers(ca_path)
        signers = [c for c in trusted if c.subject == crl.issuer]
        if issuer_pem:
            signers += [c for c in _vouched(issuer_pem, trusted) if c.subject == crl.issuer]
        if not any(_signed_by(crl, c) for c in signers):
            raise ValueError("CRL not signed by a CA we trust")
    return crl.issuer.public_bytes(), {r.serial_number for r in crl}


def _vouched(pem: str, trusted: list[x509.Certificate]) -> list[x509.Certificate]:
    """`pem` if a self-signed CA certificate of `trusted` (a root, any of them) signed it directly, else nothing."""
    try:
        cert = x509.load_pem_x509_certificate(pem.encode())
    except ValueError:
        return []
    if not _is_ca(cert):
        return []  # a leaf the root signed is no issuer of CRLs
    for root in trusted:  # during a root rotation's overlap the bundle holds two roots: either vouches
        if root.subject != root.issuer or root.subject != cert.issuer or not _is_ca(root):
            continue
        try:
            cert.verify_directly_issued_by(root)
        except (ValueError, TypeError, InvalidSignature):
            continue
        return [cert]
    return []


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def _signed_by(crl: x509.CertificateRevocationList, issuer: x509.Certificate) -> bool:
    key = issuer.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey):
        return False
    return crl.is_signature_valid(key)


class RevocationList:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._revoked: frozenset[int] = frozenset()
        # per CRL issuer (its name): only a valid CRL of that issuer changes its serials, so an issuer
        # missing from one answer, or a CRL that fails its check, never un-revokes anything
        self._by_issuer: dict[bytes, frozenset[int]] = {}
        self._live: dict[int, tuple[_Closable, int, str]] = {}  # id(transport) -> (transport, serial, who)
        # hosts SecOps quarantined (secops/contain.py): every certificate of theirs, listed on a CRL or not
        self._denied: frozenset[str] = frozenset()
        self.updated = 0.0
        self.last_error = ""
        self.on_close: Callable[[str, int], None] | None = None

    # -- queries ----------------------------------------------------------------------------------
    def is_revoked(self, serial: int | str | None) -> bool:
        return serial is not None and serial_int(serial) in self._revoked

    def snapshot(self) -> frozenset[int]:
        return self._revoked

    def is_denied(self, host: str | None) -> bool:
        return host is not None and host in self._denied

    def denied(self) -> frozenset[str]:
        return self._denied

    # -- live connections --------------------------------------------------------------------------
    def track(self, transport: _Closable | None, serial: int | None, who: str = "") -> None:
        """Remember a live TLS connection and its peer's serial, to hang up on it if revoked."""
        if transport is None or serial is None:
            return
        with self._lock:
            self._live[id(transport)] = (transport, serial, who)

    def _sweep(self) -> list[tuple[_Closable, int, str]]:
        """Forget closed connections; return the live ones of a revoked serial (to close)."""
        doomed = []
        with self._lock:
            for key, (tr, serial, who) in list(self._live.items()):
                if tr.is_closing():
                    del self._live[key]
                elif serial in self._revoked or _host_of(who) in self._denied:
                    del self._live[key]
                    doomed.append((tr, serial, who))
        return doomed

    def live_count(self) -> int:
        self._sweep()
        return len(self._live)

    # -- updates ------------------------------------------------------------------------------------
    def update(self, serials: set[int] | frozenset[int]) -> int:
        """Install a new list (closing newly revoked connections); returns how many were closed.
        Call on the event loop's thread: closing a transport is not thread-safe."""
        new = frozenset(serials) - self._revoked
        self._revoked = frozenset(serials)
        self.updated = time.time()
        self.last_error = ""
        closed = self._close_doomed()
        if new:
            log.warning("%d certificate serial(s) newly revoked", len(new))
        return closed

    def deny_hosts(self, hosts: set[str] | frozenset[str]) -> int:
        """Install the quarantined hosts (closing their live connections, whatever certificate they
        hold); returns how many were closed. On the event loop's thread, as update()."""
        self._denied = frozenset(hosts)
        return self._close_doomed()

    def _close_doomed(self) -> int:
        closed = self._sweep()
        for tr, serial, who in closed:
            tr.close()
            log.warning("closed a live connection of %s certificate %x (%s)",
                        "quarantined" if _host_of(who) in self._denied else "revoked", serial, who or "peer")
            if self.on_close:
                self.on_close(who, serial)
        return len(closed)

    async def follow(self, source: CrlSource, ca_path: Path | None, interval: float = POLL_SECONDS) -> None:
        """Fetch the CRL every `interval` seconds forever; keep the last list while Vault is away."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                crls = await loop.run_in_executor(None, _every_crl, source)
                if not crls:
                    raise ValueError("Vault listed no CRL")
                bad = self.apply_crls(crls, ca_path)
                if bad:
                    self.last_error = f"CRL refresh: {len(bad)} of {len(crls)} CRLs refused ({bad[0]})"
                    log.warning("%s", self.last_error)
            except Exception as exc:  # Vault down: the last list stays in force
                self.last_error = f"CRL refresh failed: {exc}"
                log.debug("CRL refresh failed: %s", exc)
            await asyncio.sleep(interval)

    def apply_crls(self, crls: list[tuple[bytes, str | None]], ca_path: Path | None) -> list[str]:
        """Every CRL that passes its check replaces its issuer's serials; the rest keep theirs. Installs
        the union (update) and returns why each refused CRL was refused."""
        bad = []
        for der, issuer in crls:  # every intermediate's (a retired one's too)
            try:
                name, serials = crl_entries(der, ca_path, issuer)
            except Exception as exc:  # noqa: BLE001 - one bad CRL must not hold back the others
                bad.append(str(exc)[:200])
                continue
            self._by_issuer[name] = frozenset(serials)
        self.update(frozenset().union(*self._by_issuer.values()))
        return bad

    def as_dict(self) -> dict[str, object]:
        return {"revoked": len(self._revoked), "updated": self.updated, "error": self.last_error or None,
                "quarantined": sorted(self._denied)}


def _host_of(who: str) -> str:
    """The host of a tracked connection's SPIFFE id (spiffe://<domain>/<role>/<host>)."""
    return who.rsplit("/", 1)[-1] if who.startswith("spiffe://") else ""


REVOKED = RevocationList()
