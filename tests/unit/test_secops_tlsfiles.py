"""histo tls-files decides alone when to issue: missing, unreadable, another identity, or 2/3 through."""
from __future__ import annotations

import datetime as dt
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from histo.secops.tlsfiles import _due

T0 = dt.datetime(2026, 12, 2, tzinfo=dt.timezone.utc)


def _cert(path: Path, cn: str, hours: int = 24) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(T0).not_valid_after(T0 + dt.timedelta(hours=hours))
            .sign(key, hashes.SHA256()))
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def test_when_a_certificate_is_issued_again(tmp_path: Path) -> None:
    p = tmp_path / "cert.pem"
    assert _due(p, "worker1.histo.internal", 2 / 3, T0) == "missing"
    p.write_text("not a certificate")
    assert _due(p, "worker1.histo.internal", 2 / 3, T0) == "unreadable"
    _cert(p, "worker1.histo.internal")
    assert _due(p, "worker1.histo.internal", 2 / 3, T0 + dt.timedelta(hours=15)) is None
    assert _due(p, "worker1.histo.internal", 2 / 3, T0 + dt.timedelta(hours=16)) == "due"
    assert _due(p, "worker2.histo.internal", 2 / 3, T0 + dt.timedelta(hours=1)) == "another identity"
