"""Due-ness of Vault's listener certificate (histo.vault.listener, histo.tls.selfsigned): pure logic on
certificates made here; the real renewal is tests/integration/test_vault_listener.py."""
from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from histo.tls.selfsigned import ensure_bootstrap_tls, listener_problem, load_ca, sign_intermediate
from histo.vault.listener import file_due, served_due

NOW = datetime.datetime.now(datetime.timezone.utc)
NAMES, ADDR = ["vault.histo.internal", "vault1"], "127.0.0.1"


def _chained(ca_dir: Path, life: datetime.timedelta, names: list[str] = NAMES, addr: str = ADDR,
             start: datetime.datetime = NOW) -> tuple[bytes, x509.Certificate]:
    """leaf + intermediate, the intermediate signed by the bootstrap CA as vault setup does."""
    ikey = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "i")])).sign(ikey, hashes.SHA256()))
    inter = x509.load_pem_x509_certificate(
        sign_intermediate(ca_dir, csr.public_bytes(serialization.Encoding.PEM).decode(), "histo vault listener CA")
        .encode())
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(inter.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(start + life)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]
                                                       + [x509.IPAddress(ipaddress.ip_address(addr))]), critical=False)
            .sign(ikey, hashes.SHA256()))
    pem = leaf.public_bytes(serialization.Encoding.PEM) + inter.public_bytes(serialization.Encoding.PEM)
    return pem, leaf


def test_bootstrap_ca_allows_one_intermediate_and_an_old_ca_is_recertified_with_its_key(tmp_path: Path) -> None:
    ca_path, cert, _ = ensure_bootstrap_tls(tmp_path, NAMES, [ADDR])
    bc = load_ca(tmp_path).extensions.get_extension_for_class(x509.BasicConstraints).value
    assert bc.ca and bc.path_length == 1
    # a CA of the time before pki_vault (path length 0): same key and name, path length 1 after a run
    key = serialization.load_pem_private_key((tmp_path / "ca-key.pem").read_bytes(), None)
    old = load_ca(tmp_path)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    zero = (x509.CertificateBuilder().subject_name(old.subject).issuer_name(old.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(old.not_valid_before_utc)
            .not_valid_after(old.not_valid_after_utc)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True).sign(key, hashes.SHA256()))
    ca_path.write_bytes(zero.public_bytes(serialization.Encoding.PEM))
    leaf_before = cert.read_bytes()
    ensure_bootstrap_tls(tmp_path, NAMES, [ADDR])
    new = load_ca(tmp_path)
    assert new.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length == 1
    assert new.public_key() == zero.public_key() and new.subject == zero.subject
    assert cert.read_bytes() == leaf_before  # what the old CA signed still verifies: not re-issued
    x509.load_pem_x509_certificate(leaf_before).verify_directly_issued_by(new)


def test_file_due(tmp_path: Path) -> None:
    _, cert, _ = ensure_bootstrap_tls(tmp_path, NAMES, [ADDR])
    ca = load_ca(tmp_path)
    assert file_due(None, ca, NAMES, ADDR, NOW) == "missing"
    assert file_due(b"garbage", ca, NAMES, ADDR, NOW) == "missing or unreadable"
    # the controller's fallback is replaced at the first pass Vault answers
    assert file_due(cert.read_bytes(), ca, NAMES, ADDR, NOW) == "made by the bootstrap CA (the fallback)"
    life = datetime.timedelta(hours=720)
    pem, _ = _chained(tmp_path, life)
    assert file_due(pem, ca, NAMES, ADDR, NOW) is None
    assert file_due(pem, ca, NAMES, ADDR, NOW + life * 0.66) is None
    assert file_due(pem, ca, NAMES, ADDR, NOW + life * 0.67) == "in its last third"
    assert file_due(pem, ca, NAMES + ["vault2"], ADDR, NOW) == "names or addresses differ"
    assert file_due(pem, ca, NAMES, "127.0.0.2", NOW) == "names or addresses differ"
    other = tmp_path / "other"
    ensure_bootstrap_tls(other, NAMES, [ADDR])
    assert file_due(pem, load_ca(other), NAMES, ADDR, NOW) == "does not chain to the bootstrap CA"
    leaf_only = pem.split(b"-----END CERTIFICATE-----")[0] + b"-----END CERTIFICATE-----\n"
    assert file_due(leaf_only, ca, NAMES, ADDR, NOW) == "does not chain to the bootstrap CA"


def test_served_due(tmp_path: Path) -> None:
    ensure_bootstrap_tls(tmp_path, NAMES, [ADDR])
    life = datetime.timedelta(minutes=6)
    _, leaf = _chained(tmp_path, life)
    assert served_due(None, NOW) is None  # nothing answers: the file decides
    assert served_due(leaf, NOW + life / 2) is None
    assert served_due(leaf, NOW + life * 0.7) == "served certificate in its last third"


def test_controller_check_of_an_installed_certificate(tmp_path: Path) -> None:
    """What roles/vault tls.yml asks (histo vault-tls --check-installed): a renewed pki_vault leaf is
    kept, the fallback goes in only when the installed one is bad or in its last third."""
    ensure_bootstrap_tls(tmp_path, NAMES, [ADDR])
    ca = load_ca(tmp_path)
    life = datetime.timedelta(hours=720)
    pem, _ = _chained(tmp_path, life)
    assert listener_problem(pem, ca, NAMES, [ADDR], NOW) is None
    old, _ = _chained(tmp_path, life, start=NOW - life * 0.8)
    assert listener_problem(old, ca, NAMES, [ADDR], NOW) == "in its last third"
    assert listener_problem(b"", ca, NAMES, [ADDR], NOW) == "missing or unreadable"
