"""A bootstrap CA for Vault's own TLS listener: Vault must speak TLS before its PKI exists.

Files in `dirpath` (folder 0700):
  ca.pem       the bootstrap CA certificate (public: clients pin it to reach Vault)
  ca-key.pem   its private key, 0600 (kept so the listener certificate can be re-issued for new names)
  cert.pem     Vault's listener certificate (the `vault` Ansible role uses the same names)
  key.pem      its private key, PKCS#8, 0600
"""
from __future__ import annotations

import datetime
import ipaddress
import os
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from ..files import private_dir, write_private

CA_DAYS, LEAF_DAYS = 3650, 365
RENEW_BEFORE = datetime.timedelta(days=30)  # re-issue the listener certificate a month before it expires
CA_NAME = "histo vault bootstrap CA"


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _load_ca(dirpath: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None:
    """The existing bootstrap CA if it is whole (cert + matching key) and valid long enough."""
    try:
        cert = x509.load_pem_x509_certificate((dirpath / "ca.pem").read_bytes())
        key = serialization.load_pem_private_key((dirpath / "ca-key.pem").read_bytes(), None)
    except (OSError, ValueError):
        return None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != cert.public_key():
        return None
    if cert.not_valid_after_utc < _now() + datetime.timedelta(days=LEAF_DAYS):
        return None  # the CA must outlive a fresh leaf
    return cert, key


def _leaf_ok(dirpath: Path, ca: x509.Certificate, hostnames: list[str], addresses: list[str]) -> bool:
    """The listener certificate is reusable: issued by this CA, matching its key, not near expiry,
    covering every requested name and address."""
    try:
        cert = x509.load_pem_x509_certificate((dirpath / "cert.pem").read_bytes())
        key = serialization.load_pem_private_key((dirpath / "key.pem").read_bytes(), None)
        cert.verify_directly_issued_by(ca)
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (OSError, ValueError, TypeError, x509.ExtensionNotFound, InvalidSignature):
        return False
    if key.public_key() != cert.public_key():
        return False
    if cert.not_valid_after_utc < _now() + RENEW_BEFORE:
        return False
    have_dns = set(sans.get_values_for_type(x509.DNSName))
    have_ip = {str(i) for i in sans.get_values_for_type(x509.IPAddress)}
    return set(hostnames) <= have_dns and {str(ipaddress.ip_address(a)) for a in addresses} <= have_ip


def _new_ca(dirpath: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CA_NAME)])
    now = _now()
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
            # path_length=0: this CA signs Vault's listener certificate and nothing below it
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False, key_agreement=False,
                                         key_cert_sign=True, crl_sign=True, encipher_only=False,
                                         decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    write_private(dirpath / "ca-key.pem", _key_pem(key), 0o600)
    write_private(dirpath / "ca.pem", cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return cert, key


def _new_leaf(dirpath: Path, ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey,
              hostnames: list[str], addresses: list[str]) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    sans = [x509.DNSName(h) for h in hostnames] + [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostnames[0])]))
            .issuer_name(ca.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=LEAF_DAYS))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False, key_agreement=False,
                                         key_cert_sign=False, crl_sign=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    # key first: a cert.pem without its key would be picked up by Vault on restart
    write_private(dirpath / "key.pem", _key_pem(key), 0o600)
    write_private(dirpath / "cert.pem", cert.public_bytes(serialization.Encoding.PEM), 0o644)


def ensure_bootstrap_tls(dirpath: Path, hostnames: list[str], addresses: list[str],
                         leaf_dir: Path | None = None) -> tuple[Path, Path, Path]:
    """(ca.pem, cert.pem, key.pem) for the Vault listener. Idempotent: files are reused (and left
    untouched, modes included) while valid for these names; EC P-256, CA 10 years, leaf 1 year.
    `leaf_dir` (default: `dirpath`) holds the leaf: raft peers share one CA, each has its own leaf."""
    if not hostnames:
        raise ValueError("at least one hostname is needed for Vault's listener certificate")
    dirpath = Path(dirpath)
    private_dir(dirpath)
    os.chmod(dirpath, 0o700)
    loaded = _load_ca(dirpath)
    ca, ca_key = loaded if loaded else _new_ca(dirpath)
    leaf = private_dir(Path(leaf_dir)) if leaf_dir else dirpath
    if loaded is None or not _leaf_ok(leaf, ca, hostnames, addresses):
        _new_leaf(leaf, ca, ca_key, hostnames, addresses)
    return dirpath / "ca.pem", leaf / "cert.pem", leaf / "key.pem"
