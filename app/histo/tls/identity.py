"""Workload identities: SPIFFE IDs carried as URI SANs, and the checks peers make on them.

Peers authorize each other by these identities, never by IP address.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from .. import TRUST_DOMAIN

PeerCert = dict[str, Any]  # what ssl.SSLSocket.getpeercert() returns for a verified peer


class IdentityError(Exception):
    """The peer presented no identity, or one that is not allowed here."""


@dataclass(frozen=True)
class Identity:
    trust_domain: str
    role: str
    host: str

    @property
    def uri(self) -> str:
        return f"spiffe://{self.trust_domain}/{self.role}/{self.host}"

    def __str__(self) -> str:
        return self.uri


def spiffe_id(role: str, host: str, trust_domain: str = TRUST_DOMAIN) -> str:
    return Identity(trust_domain, role, host).uri


def parse_spiffe(uri: str) -> Identity:
    prefix = "spiffe://"
    if not uri.startswith(prefix):
        raise IdentityError(f"not a SPIFFE id: {uri!r}")
    parts = uri[len(prefix):].split("/")
    if len(parts) != 3 or not all(parts):
        raise IdentityError(f"malformed SPIFFE id: {uri!r}")
    return Identity(*parts)


def identity_from_peercert(peercert: PeerCert | None, trust_domain: str = TRUST_DOMAIN) -> Identity:
    """Extract the single SPIFFE identity of a verified peer certificate (ssl getpeercert() dict)."""
    if not peercert:
        raise IdentityError("peer presented no certificate")
    uris = [v for k, v in peercert.get("subjectAltName", ()) if k == "URI" and v.startswith("spiffe://")]
    if len(uris) != 1:
        raise IdentityError(f"peer certificate carries {len(uris)} SPIFFE ids, expected exactly one")
    ident = parse_spiffe(uris[0])
    if ident.trust_domain != trust_domain:
        raise IdentityError(f"peer is from trust domain {ident.trust_domain!r}, not {trust_domain!r}")
    return ident


def require_role(peercert: PeerCert | None, allowed_roles: tuple[str, ...], trust_domain: str = TRUST_DOMAIN,
                 peer_address: str | None = None) -> Identity:
    ident = identity_from_peercert(peercert, trust_domain)
    if ident.role not in allowed_roles:
        raise IdentityError(f"{ident.uri} is not allowed here (needs role {'/'.join(allowed_roles)})")
    if peer_address is not None:
        # Certificates carry their host's address (Vault issues no other): a certificate and key
        # copied to another machine are refused there even before the firewall drops them.
        check_address(peercert, ident, peer_address)
    return ident


def ip_sans(peercert: PeerCert | None) -> list[str]:
    return [str(v).strip() for k, v in (peercert or {}).get("subjectAltName", ()) if k == "IP Address"]


def check_address(peercert: PeerCert | None, ident: Identity, peer_address: str) -> None:
    """The certificate must name the address it is used from. A certificate without an IP SAN is
    refused outright (Vault issues none such: a host's policy requires its address), so a key copied
    off a machine does not work from anywhere else."""
    addresses = ip_sans(peercert)
    if not addresses:
        raise IdentityError(f"certificate of {ident.uri} carries no IP address")
    if _norm_ip(peer_address) not in {_norm_ip(a) for a in addresses}:
        raise IdentityError(f"certificate of {ident.uri} presented from {peer_address}, not its own address")


def _norm_ip(address: str) -> str:
    try:
        return str(ipaddress.ip_address(address.strip()))
    except ValueError:
        return address.strip()
