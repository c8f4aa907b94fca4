"""`histo identity revoke`: end a workload identity now instead of at its certificate's expiry.

  --serial S    revokes that one certificate in Vault PKI (`pki_int/revoke`).
  --host H      revokes every unexpired certificate Vault issued to host H (any role).
  --block       (with --host) also deletes H's PKI role first, so no token (H's own included) can
                obtain a new certificate for H. Re-admitting H is provisioning: `make provision`
                (histo vault-setup) re-creates the role.

Without --block a host whose certificates were revoked fetches a fresh one by itself at its next
renewal (the remedy for a certificate or key that leaked from a host that is itself still
trusted); peers refuse the revoked serials within seconds (histo.tls.revocation).
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import hvac
from cryptography import x509
from hvac.exceptions import InvalidPath

from .. import TRUST_DOMAIN
from ..tls.revocation import serial_int
from .setup import INT

def _colon(serial: str) -> str:
    h = f"{serial_int(serial):x}"
    h = h if len(h) % 2 == 0 else "0" + h
    return ":".join(h[i:i + 2] for i in range(0, len(h), 2))


def _d(resp: Any) -> dict[str, Any]:
    return resp if isinstance(resp, dict) else {}


def revoke_serial(client: hvac.Client, serial: str) -> dict[str, Any]:
    resp = client.write_data(f"{INT}/revoke", data={"serial_number": _colon(serial)})
    return dict(_d(resp).get("data") or {})


def host_serials(client: hvac.Client, host: str, trust_domain: str = TRUST_DOMAIN) -> list[str]:
    """Serials of the unexpired, unrevoked certificates Vault issued to `host`."""
    try:
        keys = _d(client.list(f"{INT}/certs")).get("data", {}).get("keys") or []
    except InvalidPath:
        return []
    now = datetime.now(timezone.utc)
    suffix = f"/{host}"
    prefix = f"spiffe://{trust_domain}/"
    found = []
    for serial in keys:
        data = _d(client.read(f"{INT}/cert/{serial}")).get("data") or {}
        if int(data.get("revocation_time") or 0) > 0 or not data.get("certificate"):
            continue
        cert = x509.load_pem_x509_certificate(data["certificate"].encode())
        if cert.not_valid_after_utc <= now:
            continue
        try:
            sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            continue
        uris = sans.get_values_for_type(x509.UniformResourceIdentifier)
        if any(u.startswith(prefix) and u.endswith(suffix) and u.count("/") == 4 for u in uris):
            found.append(serial)
    return found


def block_host(client: hvac.Client, host: str) -> None:
    """No new certificate for the host: its PKI role is deleted (in force at once, whatever token
    asks). `histo vault-setup` (make provision) re-creates it: that is re-admitting the host."""
    client.delete(f"{INT}/roles/host-{host}")


def revoke(client: hvac.Client, *, serial: str | None = None, host: str | None = None, block: bool = False,
           trust_domain: str = TRUST_DOMAIN) -> dict[str, Any]:
    if bool(serial) == bool(host):
        raise ValueError("name exactly one of --serial or --host")
    if block and not host:
        raise ValueError("--block needs --host")
    out: dict[str, Any] = {"revoked": []}
    if block and host:  # first: no new certificate can be issued while we revoke the current ones
        block_host(client, host)
        out["blocked"] = host
    serials = [serial] if serial else host_serials(client, str(host), trust_domain)
    for s in serials:
        revoke_serial(client, s)
        out["revoked"].append(_colon(s))
    return out
