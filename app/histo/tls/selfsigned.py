"""A bootstrap CA for Vault's own TLS listener: Vault must speak TLS before its PKI exists."""
from __future__ import annotations

import datetime
import ipaddress
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _write(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(path, mode)


def _key_pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _covers(cert_path: Path, hostnames: list[str], addresses: list[str]) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except (OSError, ValueError):
        return False
    if cert.not_valid_after_utc < datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=7):
        return False
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    have_dns = set(sans.get_values_for_type(x509.DNSName))
    have_ip = {str(i) for i in sans.get_values_for_type(x509.IPAddress)}
    return set(hostnames) <= have_dns and set(addresses) <= have_ip


def ensure_bootstrap_tls(dirpath: Path, hostnames: list[str], addresses: list[str]) -> tuple[Path, Path, Path]:
    """(ca.pem, cert.pem, key.pem) for the Vault listener; reused while valid for these names."""
    dirpath.mkdir(parents=True, exist_ok=True, mode=0o700)
    ca_pem, cert_pem, key_pem = dirpath / "ca.pem", dirpath / "cert.pem", dirpath / "key.pem"
    ca_key_pem = dirpath / "ca-key.pem"
    if ca_pem.exists() and key_pem.exists() and _covers(cert_pem, hostnames, addresses):
        return ca_pem, cert_pem, key_pem
    now = datetime.datetime.now(datetime.timezone.utc)
    if ca_pem.exists() and ca_key_pem.exists():
        ca_cert = x509.load_pem_x509_certificate(ca_pem.read_bytes())
        ca_key = serialization.load_pem_private_key(ca_key_pem.read_bytes(), None)
    else:
        ca_key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "histo vault bootstrap CA")])
        ca_cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(ca_key.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=3650))
                   .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                   .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                                key_encipherment=False, data_encipherment=False, key_agreement=False,
                                                key_cert_sign=True, crl_sign=True, encipher_only=False,
                                                decipher_only=False), critical=True)
                   .sign(ca_key, hashes.SHA256()))
        _write(ca_key_pem, _key_pem(ca_key), 0o600)
        _write(ca_pem, ca_cert.public_bytes(serialization.Encoding.PEM), 0o644)
    key = ec.generate_private_key(ec.SECP256R1())
    sans = [x509.DNSName(h) for h in hostnames] + [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostnames[0])]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=365))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    _write(key_pem, _key_pem(key), 0o600)
    _write(cert_pem, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return ca_pem, cert_pem, key_pem
