"""Address binding fails closed, and the CRL-following revocation list (histo.tls.revocation)."""
import asyncio
import datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from histo.tls.identity import IdentityError, require_role
from histo.tls.revocation import RevocationList, parse_crl, peer_serial, serial_int
from histo.vault.revoke import _colon

URI = ("URI", "spiffe://histo.internal/worker/worker1")


def test_certificate_without_ip_san_is_refused_when_the_address_is_checked() -> None:
    with pytest.raises(IdentityError, match="no IP address"):
        require_role({"subjectAltName": (URI,)}, ("worker",), peer_address="127.0.10.31")
    with pytest.raises(IdentityError, match="not its own address"):
        require_role({"subjectAltName": (URI, ("IP Address", "127.0.10.31"))}, ("worker",),
                     peer_address="127.0.10.99")
    ident = require_role({"subjectAltName": (URI, ("IP Address", "127.0.10.31\n"))}, ("worker",),
                         peer_address="127.0.10.31")
    assert ident.host == "worker1"


def test_serial_spellings_agree() -> None:
    assert serial_int("1a:2b:03") == serial_int("1A2B03") == 0x1A2B03
    assert peer_serial({"serialNumber": "1A2B03"}) == 0x1A2B03 and peer_serial({}) is None
    assert _colon("1A2B03") == "1a:2b:03" and _colon("A2B03") == "0a:2b:03"


class FakeTransport:
    def __init__(self) -> None:
        self.closed = False

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


def test_update_closes_live_connections_of_newly_revoked_serials_only() -> None:
    rl = RevocationList()
    bad, good = FakeTransport(), FakeTransport()
    rl.track(bad, 0xAA, "spiffe://histo.internal/worker/worker1")
    rl.track(good, 0xBB, "spiffe://histo.internal/worker/worker2")
    assert rl.update({0xAA}) == 1
    assert bad.closed and not good.closed
    assert rl.is_revoked("aa") and not rl.is_revoked("bb") and not rl.is_revoked(None)
    assert rl.live_count() == 1


def _ca_and_crl(tmp_path: Path, serials: list[int], signer: ec.EllipticCurvePrivateKey | None = None) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "histo intermediate CA")])
    now = datetime.datetime.now(datetime.timezone.utc)
    ca = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
          .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
          .sign(key, hashes.SHA256()))
    b = x509.CertificateRevocationListBuilder().issuer_name(name).last_update(now).next_update(
        now + datetime.timedelta(hours=1))
    for s in serials:
        b = b.add_revoked_certificate(x509.RevokedCertificateBuilder().serial_number(s).revocation_date(now).build())
    from cryptography.hazmat.primitives import serialization
    crl = b.sign(signer or key, hashes.SHA256())
    (tmp_path / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    return crl.public_bytes(serialization.Encoding.DER)


def test_crl_must_be_signed_by_a_trusted_ca(tmp_path: Path) -> None:
    der = _ca_and_crl(tmp_path, [5, 7])
    assert parse_crl(der, tmp_path / "ca.pem") == {5, 7}
    (tmp_path / "other").mkdir()
    forged = _ca_and_crl(tmp_path / "other", [])  # same issuer name, another key
    with pytest.raises(ValueError):
        parse_crl(forged, tmp_path / "ca.pem")


def test_follow_keeps_the_last_list_while_vault_is_away(tmp_path: Path) -> None:
    der = _ca_and_crl(tmp_path, [9])
    calls: list[int] = []

    class Source:
        def crl_der(self) -> bytes:
            calls.append(1)
            if len(calls) > 1:
                raise RuntimeError("Vault down")
            return der

    rl = RevocationList()

    async def run() -> None:
        task = asyncio.create_task(rl.follow(Source(), tmp_path / "ca.pem", interval=0.01))
        await asyncio.sleep(0.1)
        task.cancel()
    asyncio.run(run())
    assert rl.is_revoked(9) and "Vault down" in rl.last_error


def _issuer(cn: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    return key, cert


def _crl(key: ec.EllipticCurvePrivateKey, cert: x509.Certificate, serials: list[int]) -> bytes:
    from cryptography.hazmat.primitives import serialization
    now = datetime.datetime.now(datetime.timezone.utc)
    b = x509.CertificateRevocationListBuilder().issuer_name(cert.subject).last_update(now).next_update(
        now + datetime.timedelta(hours=1))
    for s in serials:
        b = b.add_revoked_certificate(x509.RevokedCertificateBuilder().serial_number(s).revocation_date(now).build())
    return b.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def test_each_issuer_keeps_its_revocations_until_a_valid_crl_of_its_own_changes_them(tmp_path: Path) -> None:
    """Two intermediates (one retired after a rotation): a CRL that fails its check, an answer that
    leaves an issuer out, or an empty answer never un-revokes; a good CRL of the other still applies."""
    from cryptography.hazmat.primitives import serialization
    (old_key, old), (new_key, new) = _issuer("old intermediate"), _issuer("new intermediate")
    (tmp_path / "ca.pem").write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (old, new)))
    rl = RevocationList()
    assert rl.apply_crls([(_crl(old_key, old, [1]), None), (_crl(new_key, new, [2]), None)], tmp_path / "ca.pem") == []
    assert rl.is_revoked(1) and rl.is_revoked(2)
    forged_key, _ = _issuer("x")
    bad = rl.apply_crls([(_crl(forged_key, old, []), None), (_crl(new_key, new, [2, 3]), None)], tmp_path / "ca.pem")
    assert len(bad) == 1 and rl.is_revoked(1) and rl.is_revoked(3)  # the forgery changed nothing, the good one did
    assert rl.apply_crls([(_crl(new_key, new, [2, 3]), None)], tmp_path / "ca.pem") == []
    assert rl.is_revoked(1)  # the old issuer left out of this answer: its revocation stays

    class Empty:
        def crl_der(self) -> bytes:
            raise AssertionError("crl_bundles is asked first")

        def crl_bundles(self) -> list[tuple[bytes, str]]:
            return []

    async def run() -> None:
        task = asyncio.create_task(rl.follow(Empty(), tmp_path / "ca.pem", interval=0.01))
        await asyncio.sleep(0.05)
        task.cancel()
    asyncio.run(run())
    assert rl.is_revoked(1) and rl.is_revoked(3) and "no CRL" in rl.last_error


def _ca(cn: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Certificate | None = None,
        signer: ec.EllipticCurvePrivateKey | None = None, ca: bool = True) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = datetime.datetime.now(datetime.timezone.utc)
    return (x509.CertificateBuilder().subject_name(name).issuer_name(issuer.subject if issuer else name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .sign(signer or key, hashes.SHA256()))


def test_during_a_root_rotation_either_root_in_the_bundle_vouches_for_its_intermediates_crl(tmp_path: Path) -> None:
    """The bundle holds the old and the new root (vault/pki.py root-stage): a CRL of an intermediate of
    either, brought with that intermediate, is accepted; one of a root not in the bundle (a stranger's,
    or the old root once pruned), or of a self-signed certificate that is no CA, is refused."""
    from cryptography.hazmat.primitives import serialization

    def pem(c: x509.Certificate) -> str:
        return c.public_bytes(serialization.Encoding.PEM).decode()
    keys = {n: ec.generate_private_key(ec.SECP256R1()) for n in ("r1", "r2", "rx", "i1", "i2", "ix", "iy", "nr")}
    r1, r2 = _ca("histo root CA", keys["r1"]), _ca("histo root CA 2", keys["r2"])
    rx = _ca("histo root CA 3", keys["rx"])
    i1 = _ca("histo intermediate CA", keys["i1"], r1, keys["r1"])
    i2 = _ca("histo intermediate CA 2", keys["i2"], r2, keys["r2"])
    ix = _ca("histo intermediate CA 3", keys["ix"], rx, keys["rx"])
    not_ca = _ca("histo root CA 4", keys["nr"], ca=False)  # self-signed, but no CA
    iy = _ca("histo intermediate CA 4", keys["iy"], not_ca, keys["nr"])
    both = tmp_path / "both.pem"
    both.write_text(pem(r1) + pem(r2) + pem(not_ca))
    assert parse_crl(_crl(keys["i1"], i1, [1]), both, pem(i1)) == {1}
    assert parse_crl(_crl(keys["i2"], i2, [2]), both, pem(i2)) == {2}
    for key, cert in ((keys["ix"], ix), (keys["iy"], iy)):
        with pytest.raises(ValueError):
            parse_crl(_crl(key, cert, [3]), both, pem(cert))
    pruned = tmp_path / "pruned.pem"
    pruned.write_text(pem(r2))
    with pytest.raises(ValueError):
        parse_crl(_crl(keys["i1"], i1, [1]), pruned, pem(i1))
    assert parse_crl(_crl(keys["i2"], i2, [2]), pruned, pem(i2)) == {2}
