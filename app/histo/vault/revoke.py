"""`histo identity revoke`: end a workload identity now instead of at its certificate's expiry.

  --serial S    revokes that one certificate in Vault PKI (`pki_int/revoke`).
  --host H      revokes every unexpired certificate Vault issued to host H (any role).
  --block       (with --host) also cuts H off from Vault: its policy is replaced by one that allows
                nothing (in force at once, for the token it holds too) and its secret_ids are
                destroyed, so it cannot obtain a new certificate. Re-admitting H is provisioning:
                `histo vault-setup` restores its policy and `histo provision` delivers a new
                secret_id.

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
from .setup import APPROLE, INT

BLOCKED_POLICY = '''# histo host {name}: BLOCKED by `histo identity revoke --block` ({when}).
# Re-admit with `histo vault-setup` (restores the host policy) and `histo provision`.
path "{mount}/issue/host-{name}" {{
  capabilities = ["deny"]
}}
'''


def _colon(serial: str) -> str:
    h = f"{serial_int(serial):x}"
    h = h if len(h) % 2 == 0 else "0" + h
    return ":".join(h[i:i + 2] for i in range(0, len(h), 2))


def revoke_serial(client: hvac.Client, serial: str) -> dict[str, Any]:
    resp = client.write_data(f"{INT}/revoke", data={"serial_number": _colon(serial)})
    return dict((resp or {}).get("data") or {})


def host_serials(client: hvac.Client, host: str, trust_domain: str = TRUST_DOMAIN) -> list[str]:
    """Serials of the unexpired, unrevoked certificates Vault issued to `host`."""
    try:
        keys = (client.list(f"{INT}/certs") or {}).get("data", {}).get("keys") or []
    except InvalidPath:
        return []
    now = datetime.now(timezone.utc)
    suffix = f"/{host}"
    prefix = f"spiffe://{trust_domain}/"
    found = []
    for serial in keys:
        data = (client.read(f"{INT}/cert/{serial}") or {}).get("data") or {}
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


def block_host(client: hvac.Client, host: str) -> int:
    """Deny-all policy for the host (effective immediately) and its secret_ids destroyed."""
    when = datetime.now(timezone.utc).isoformat(timespec="seconds")
    client.sys.create_or_update_policy(f"histo-{host}", BLOCKED_POLICY.format(name=host, when=when, mount=INT))
    role = f"histo-{host}"
    try:
        accessors = (client.list(f"auth/{APPROLE}/role/{role}/secret-id") or {}).get("data", {}).get("keys") or []
    except InvalidPath:
        accessors = []
    for acc in accessors:
        client.write_data(f"auth/{APPROLE}/role/{role}/secret-id-accessor/destroy",
                          data={"secret_id_accessor": acc})
    return len(accessors)


def revoke(client: hvac.Client, *, serial: str | None = None, host: str | None = None, block: bool = False,
           trust_domain: str = TRUST_DOMAIN) -> dict[str, Any]:
    if bool(serial) == bool(host):
        raise ValueError("name exactly one of --serial or --host")
    if block and not host:
        raise ValueError("--block needs --host")
    out: dict[str, Any] = {"revoked": []}
    if block and host:  # first: no new certificate can be issued while we revoke the current ones
        out["secret_ids_destroyed"] = block_host(client, host)
        out["blocked"] = host
    serials = [serial] if serial else host_serials(client, str(host), trust_domain)
    for s in serials:
        revoke_serial(client, s)
        out["revoked"].append(_colon(s))
    return out
