"""The bootstrap CA of Vault's listener (histo.tls.selfsigned): files reused while valid, re-issued
when they do not belong together."""
from __future__ import annotations

import shutil
from pathlib import Path

from cryptography import x509

from histo.tls.selfsigned import ensure_bootstrap_tls


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_valid_files_are_reused(tmp_path: Path) -> None:
    ca, cert, _key = ensure_bootstrap_tls(tmp_path, ["vault"], ["127.0.0.1"])
    before = cert.read_bytes()
    ensure_bootstrap_tls(tmp_path, ["vault"], ["127.0.0.1"])
    assert cert.read_bytes() == before
    _cert(cert).verify_directly_issued_by(_cert(ca))


def test_listener_cert_of_another_ca_with_the_same_name_is_reissued(tmp_path: Path) -> None:
    mine, other = tmp_path / "mine", tmp_path / "other"
    ca, cert, key = ensure_bootstrap_tls(mine, ["vault"], ["127.0.0.1"])
    ensure_bootstrap_tls(other, ["vault"], ["127.0.0.1"])
    shutil.copy(other / "cert.pem", cert)  # same CA name, different CA key: the signature does not verify
    shutil.copy(other / "key.pem", key)
    ensure_bootstrap_tls(mine, ["vault"], ["127.0.0.1"])
    _cert(cert).verify_directly_issued_by(_cert(ca))


def test_new_name_reissues_the_listener_cert(tmp_path: Path) -> None:
    _ca, cert, _key = ensure_bootstrap_tls(tmp_path, ["vault"], ["127.0.0.1"])
    ensure_bootstrap_tls(tmp_path, ["vault", "vault.histo.internal"], ["127.0.0.1"])
    sans = _cert(cert).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(sans.get_values_for_type(x509.DNSName)) == {"vault", "vault.histo.internal"}
