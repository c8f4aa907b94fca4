"""A machine's own certificate as files, for a program that reads them itself (rsyslog's RELP over
TLS, roles/logship): issued by Vault to the host's own PKI role with the host's own AppRole, written
only when missing, of another identity, or past `renew_at` of its life, so a second run changes
nothing and a timer renews it in time."""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import NameOID

from ..files import write_private
from ..vault.client import ServiceVault

CERT, KEY, CA = "cert.pem", "key.pem", "ca.pem"


def _due(cert_path: Path, common_name: str, renew_at: float, now: datetime) -> str | None:
    """Why the certificate in `cert_path` must be issued again, or None while it serves."""
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except FileNotFoundError:
        return "missing"
    except ValueError:
        return "unreadable"
    names = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    if names != [common_name]:
        return "another identity"
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    if now >= start + (end - start) * renew_at:
        return "due"
    return None


def ensure(vault: ServiceVault, out: Path, ttl: str, renew_at: float = 2 / 3,
           now: datetime | None = None) -> dict[str, object]:
    """cert.pem (the leaf), key.pem (0600) and ca.pem (the histo chain, root included) in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    why = _due(out / CERT, f"{vault.host}.{vault.trust_domain}", renew_at, now or datetime.now(timezone.utc))
    if why is None and (out / KEY).is_file() and (out / CA).is_file():
        return {"changed": False}
    vault.login()
    bundle = vault.issue_cert(ttl)
    # the key first: a reader never sees a new certificate beside the old key
    write_private(out / KEY, bundle.key_pem)
    write_private(out / CA, bundle.chain_pem, 0o644)
    write_private(out / CERT, bundle.cert_pem, 0o644)
    return {"changed": True, "why": why or "files missing", "serial": bundle.serial,
            "not_after": bundle.not_after.isoformat()}
