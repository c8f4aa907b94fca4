"""A bootstrap CA for Vault's own TLS listener: Vault must speak TLS before its PKI exists.

Files in `dirpath` (folder 0700):
  ca.pem       the bootstrap CA certificate (public: clients pin it to reach Vault)
  ca-key.pem   its private key, 0600 (kept so the listener certificate can be re-issued for new names,
               and so the controller can sign Vault's own listener intermediate, pki_vault)
  cert.pem     Vault's listener certificate (the `vault` Ansible role uses the same names)
  key.pem      its private key, PKCS#8, 0600

The listener certificate this module makes is the fallback: once Vault runs, each node's renewer
(vault/listener.py) replaces it with a leaf of the pki_vault intermediate, which this CA signed
(path length 1: the CA signs that intermediate and nothing deeper). A served file is leaf + that
intermediate, so clients keep trusting this one ca.pem.
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
RENEW_AT = 2 / 3  # a listener certificate in its last third is replaced (the renewers' rule everywhere)
CA_NAME = "histo vault bootstrap CA"
# bootstrap CA -> pki_vault intermediate -> listener leaf: one CA below the root
CA_PATH_LENGTH = 1


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
    try:
        pathlen = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length
    except x509.ExtensionNotFound:
        pathlen = None
    if pathlen is not None and pathlen < CA_PATH_LENGTH:
        # A CA made before pki_vault existed (path length 0 refuses any intermediate). Same key, same
        # name, same validity: every certificate it signed still verifies under the new one.
        cert = _ca_cert(key, cert.not_valid_before_utc, cert.not_valid_after_utc)
        write_private(dirpath / "ca.pem", cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return cert, key


def _chain_ok(chain: list[x509.Certificate], ca: x509.Certificate) -> bool:
    """leaf [+ one intermediate] ends at this CA, each certificate signed by the next."""
    try:
        for child, parent in zip(chain, chain[1:] + [ca]):
            child.verify_directly_issued_by(parent)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return len(chain) <= 1 + CA_PATH_LENGTH


def listener_problem(cert_pem: bytes, ca: x509.Certificate, hostnames: list[str], addresses: list[str],
                     now: datetime.datetime | None = None, renew_at: float = RENEW_AT) -> str | None:
    """Why a listener certificate file (leaf first, then its intermediate if any) must be replaced,
    or None while it serves: it must chain to the bootstrap CA (directly, or through pki_vault), name
    every requested name and address, and not be in its last third. The controller's check of an
    installed file (roles/vault tls.yml) and local mode's restart use this one rule."""
    try:
        chain = x509.load_pem_x509_certificates(cert_pem)
        sans = chain[0].extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, IndexError, x509.ExtensionNotFound):
        return "missing or unreadable"
    if not _chain_ok(chain, ca):
        return "does not chain to the bootstrap CA"
    have_dns = set(sans.get_values_for_type(x509.DNSName))
    have_ip = {str(i) for i in sans.get_values_for_type(x509.IPAddress)}
    if not (set(hostnames) <= have_dns and {str(ipaddress.ip_address(a)) for a in addresses} <= have_ip):
        return "names or addresses differ"
    start, end = chain[0].not_valid_before_utc, chain[0].not_valid_after_utc
    if (now or _now()) >= start + (end - start) * renew_at:
        return "in its last third"
    return None


def _leaf_ok(dirpath: Path, ca: x509.Certificate, hostnames: list[str], addresses: list[str]) -> bool:
    """The listener certificate is reusable: chained to this CA, matching its key, not in its last
    third, covering every requested name and address (a renewed pki_vault leaf counts)."""
    try:
        pem = (dirpath / "cert.pem").read_bytes()
        key = serialization.load_pem_private_key((dirpath / "key.pem").read_bytes(), None)
        cert = x509.load_pem_x509_certificate(pem)
    except (OSError, ValueError, TypeError):
        return False
    if key.public_key() != cert.public_key():
        return False
    return listener_problem(pem, ca, hostnames, addresses) is None


def _ca_cert(key: ec.EllipticCurvePrivateKey, not_before: datetime.datetime,
             not_after: datetime.datetime) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CA_NAME)])
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before).not_valid_after(not_after)
            # path length 1: the fallback listener certificate, and the pki_vault intermediate whose
            # leaves are the listener's; nothing deeper
            .add_extension(x509.BasicConstraints(ca=True, path_length=CA_PATH_LENGTH), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False, key_agreement=False,
                                         key_cert_sign=True, crl_sign=True, encipher_only=False,
                                         decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))


def _new_ca(dirpath: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    cert = _ca_cert(key, now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=CA_DAYS))
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


INTERMEDIATE_DAYS = 1825  # pki_vault's intermediate: 5 years (vault setup signs a new one in its last third)


def sign_intermediate(dirpath: Path, csr_pem: str, common_name: str, days: int = INTERMEDIATE_DAYS) -> str:
    """Sign the CSR of Vault's listener intermediate (pki_vault) with the bootstrap CA, on the
    controller: the CA key never leaves it. Path length 0 (it signs leaves only), no longer than the CA."""
    loaded = _load_ca(Path(dirpath))
    if loaded is None:
        raise ValueError(f"no valid bootstrap CA in {dirpath} (run histo vault-tls first)")
    ca, ca_key = loaded
    csr = x509.load_pem_x509_csr(csr_pem.encode())
    if not csr.is_signature_valid:
        raise ValueError("the intermediate's CSR has a bad signature")
    now = _now()
    not_after = min(now + datetime.timedelta(days=days), ca.not_valid_after_utc)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(ca.subject).public_key(csr.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False, key_agreement=False,
                                         key_cert_sign=True, crl_sign=True, encipher_only=False,
                                         decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(csr.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def load_ca(dirpath: Path) -> x509.Certificate:
    """The bootstrap CA certificate (public) of a folder or a ca.pem file."""
    path = Path(dirpath)
    return x509.load_pem_x509_certificate((path / "ca.pem" if path.is_dir() else path).read_bytes())
