"""The PKI intermediate rotated live against a real OpenBao (issue 16 item 2): a peer that still has
a leaf of the old intermediate and a CA bundle from before the rotation and a peer with a leaf of the
new one complete mutual TLS both ways; both revocations reach a peer whose bundle predates the new
intermediate; a forged intermediate cannot un-revoke or revoke anyone; vault setup sees no drift;
the provisioner may not rotate; prune removes the retired one only after its leaves' life."""
from __future__ import annotations

import json
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hvac import exceptions as hx

from histo.files import write_private
from histo.tls.contexts import LiveContexts
from histo.tls.revocation import parse_crl, serial_int
from histo.vault.client import ServiceVault
from histo.vault import pki
from histo.vault.secretzero import generate_root, retire_root
from histo.vault.setup import apply

from .vaultfix import NET, configure, default_hosts, provisioned_service, running_bao, spec_for

HOSTS = {h["name"]: h for h in default_hosts()}


def _identity(vault: ServiceVault, where: Path) -> tuple[LiveContexts, str, x509.Certificate]:
    """What CertManager writes: the leaf and its intermediate, the key, the CA bundle of the moment."""
    bundle = vault.issue_cert("10m")
    where.mkdir(parents=True, exist_ok=True)
    inter = [c for c in x509.load_pem_x509_certificates(bundle.chain_pem.encode()) if c.issuer != c.subject]
    write_private(where / "cert.pem", bundle.cert_pem.strip() + "\n"
                  + "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in inter))
    write_private(where / "key.pem", bundle.key_pem)
    write_private(where / "ca.pem", vault.ca_chain_pem())
    return LiveContexts(where / "ca.pem", where / "cert.pem", where / "key.pem"), bundle.serial, inter[0]


def _mutual_tls(server: LiveContexts, client: LiveContexts, address: str) -> str:
    """One handshake on loopback, each side verifying the other; returns the client's view of the
    server's common name (or raises ssl.SSLError)."""
    with socket.socket() as lsock:
        lsock.bind((address, 0))
        lsock.listen(1)
        port = lsock.getsockname()[1]
        errors: list[BaseException] = []

        def serve() -> None:
            try:
                conn, _ = lsock.accept()
                with server.internal_server.wrap_socket(conn, server_side=True) as tls:
                    tls.sendall(b"ok")
            except (OSError, ssl.SSLError) as exc:
                errors.append(exc)
        t = threading.Thread(target=serve, daemon=True)
        t.start()
        client.internal_client.check_hostname = False  # the peer is named by its address, checked below
        with socket.create_connection((address, port), timeout=5) as raw, \
                client.internal_client.wrap_socket(raw) as tls:
            assert tls.recv(2) == b"ok"
            der = tls.getpeercert(binary_form=True)
            assert der is not None
            names = x509.load_der_x509_certificate(der).subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
            subject = str(names[0].value)
        t.join(5)
        if errors:
            raise errors[0]
        return str(subject)


def _forged_intermediate(like: x509.Certificate) -> tuple[str, ec.EllipticCurvePrivateKey]:
    """An intermediate with the real one's subject, signed by a root of the attacker's own."""
    import datetime as dt
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(like.subject).issuer_name(like.issuer)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=1)).not_valid_after(now + dt.timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key


def _crl_by(key: ec.EllipticCurvePrivateKey, issuer: x509.Name, serials: list[int]) -> bytes:
    import datetime as dt
    now = dt.datetime.now(dt.timezone.utc)
    b = x509.CertificateRevocationListBuilder().issuer_name(issuer).last_update(now).next_update(
        now + dt.timedelta(hours=1))
    for s in serials:
        b = b.add_revoked_certificate(x509.RevokedCertificateBuilder().serial_number(s).revocation_date(now).build())
    return b.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def test_intermediate_rotates_live(tmp_path: Path) -> None:
    with running_bao(tmp_path / "vault", f"{NET}.90") as bao:
        role_ids = configure(bao)["role_ids"]
        root = bao.root_client()
        master = provisioned_service(bao, role_ids, HOSTS["master1"], tmp_path / "m-creds")
        worker = provisioned_service(bao, role_ids, HOSTS["worker1"], tmp_path / "w-creds")
        old_ctx, old_serial, old_int = _identity(master, tmp_path / "master1")
        before_bundle = tmp_path / "master1" / "ca.pem"  # a peer that has not renewed since

        # the provisioner token (what `make provision` holds) may not rotate; root may
        retire_root(bao.client(), bao.init_path, tmp_path / "provisioner-token", tmp_path / "root-token")
        prov = bao.client((tmp_path / "provisioner-token").read_text().strip())
        with pytest.raises(hx.Forbidden):
            pki.rotate(prov)
        generate_root(prov, bao.init_path, tmp_path / "root-token")  # the documented way back to a root token
        root = bao.client((tmp_path / "root-token").read_text().strip())
        proc = subprocess.run([sys.executable, "-m", "histo.cli", "pki", "rotate", f"--vault-url={bao.url}",
                               f"--vault-ca={bao.ca_path}", f"--token-file={tmp_path / 'root-token'}"],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        out = json.loads(proc.stdout)
        assert out["previous_default"] in out["retired"] and out["new"] != out["previous_default"]

        new_ctx, new_serial, new_int = _identity(worker, tmp_path / "worker1")
        assert new_int.subject != old_int.subject and new_int.issuer == old_int.issuer  # same root
        # the overlap: old leaf + old bundle <-> new leaf, both directions, mutual
        assert _mutual_tls(new_ctx, old_ctx, HOSTS["worker1"]["address"]) == "worker1.histo.internal"
        assert _mutual_tls(old_ctx, new_ctx, HOSTS["master1"]["address"]) == "master1.histo.internal"
        # every peer's bundle now holds both intermediates
        bundle = x509.load_pem_x509_certificates(worker.ca_chain_pem().encode())
        assert {old_int.subject, new_int.subject} <= {c.subject for c in bundle}

        # revocations of a leaf of each intermediate reach the peer with the pre-rotation bundle
        root.write_data("pki_int/revoke", data={"serial_number": old_serial})
        root.write_data("pki_int/revoke", data={"serial_number": new_serial})
        root.read("pki_int/crl/rotate")
        seen: set[int] = set()
        for der, issuer in master.crl_bundles():
            seen |= parse_crl(der, before_bundle, issuer)
        assert {serial_int(old_serial), serial_int(new_serial)} <= seen
        # without the issuer beside it the new intermediate's CRL is refused by that old bundle
        new_crl = [der for der, issuer in master.crl_bundles()
                   if x509.load_pem_x509_certificate(issuer.encode()).subject == new_int.subject][0]
        with pytest.raises(ValueError):
            parse_crl(new_crl, before_bundle)
        # a forged intermediate with the real subject: its CRL neither revokes nor replaces anyone's
        fake_pem, fake_key = _forged_intermediate(new_int)
        with pytest.raises(ValueError):
            parse_crl(_crl_by(fake_key, new_int.subject, [12345]), before_bundle, fake_pem)

        # the configuration is what vault setup wants: the provisioner's re-run (as on machines) changes nothing
        assert apply(prov, spec_for(bao, default_hosts()))["changed"] is False

        # prune: not while leaves of the retired one may live; then it goes, the current one stays
        assert pki.longest_leaf(root) == 24 * 3600  # the spec's leaf_max_ttl, read back from the roles
        assert pki.prune(root, now=time.time() + 3600) == []  # its leaves may live 24 h
        assert pki.prune(root, now=time.time() + 25 * 3600, at_least=26 * 3600) == []
        assert pki.prune(root, now=time.time() + 25 * 3600) == out["retired"]
        assert {i for i, info in pki.issuers(root).items() if info.get("key_id")} == {out["new"]}
        assert apply(prov, spec_for(bao, default_hosts()))["changed"] is False
        assert worker.issue_cert("5m").serial
