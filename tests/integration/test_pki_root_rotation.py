"""The PKI root rotated live against a real OpenBao in server mode (issue 16 item 2), in real mutual
TLS handshakes: `histo pki root-stage` publishes a new root (every bundle holds both) while leaves
still come from the old chain; `root-finish` is refused before the wait, then makes the new chain
issue; a leaf of each chain is accepted by a peer with the new bundle, and a revoked leaf of each
chain is refused; a CA of nobody's is refused; after `prune` the old chain is trusted no more."""
from __future__ import annotations

import datetime as dt
import ipaddress
import json
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from histo.files import write_private
from histo.local.bao import BaoServer
from histo.tls.contexts import LiveContexts
from histo.tls.revocation import RevocationList, parse_crl
from histo.vault import pki
from histo.vault.client import ServiceVault
from histo.vault.setup import apply

from .test_pki_rotation import _crl_by, _forged_intermediate, _identity, _mutual_tls
from .cluster_fixture import NET  # the session cluster's /24 (this module binds .91 only)
from .vaultfix import default_hosts, provisioned_service, running_bao, spec_for

HOSTS = {h["name"]: h for h in default_hosts(NET)}


def _histo_pki(bao: BaoServer, token_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "histo.cli", "pki", *args, f"--vault-url={bao.url}",
                           f"--vault-ca={bao.ca_path}", f"--token-file={token_file}"],
                          capture_output=True, text=True, timeout=60)


def _roots(pem: str) -> set[x509.Name]:
    return {c.subject for c in x509.load_pem_x509_certificates(pem.encode()) if c.subject == c.issuer}


def _refresh_bundle(ctx: LiveContexts, where: Path, vault: ServiceVault) -> None:
    """What a peer's CertManager does at its next renewal, for the CA bundle only."""
    write_private(where / "ca.pem", vault.ca_chain_pem())
    ctx.reload()


def _refused(server: LiveContexts, client: LiveContexts, address: str) -> bool:
    """The handshake failed on either side (the side that refuses ends it; the other may only see the
    connection go)."""
    try:
        _mutual_tls(server, client, address)
    except (ssl.SSLError, OSError, AssertionError):
        return True
    return False


def _stranger(where: Path, address: str, trusts: str) -> LiveContexts:
    """A CA of nobody's and a leaf under it with a master's name and address (trusting `trusts` too,
    so that it is the peer that refuses it, not it the peer)."""
    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = dt.datetime.now(dt.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("histo root CA")).issuer_name(name("histo root CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(minutes=1)).not_valid_after(now + dt.timedelta(hours=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True).sign(ca_key, hashes.SHA256()))
    leaf = (x509.CertificateBuilder().subject_name(name("master1.histo.internal")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=1)).not_valid_after(now + dt.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([
                x509.UniformResourceIdentifier("spiffe://histo.internal/master/master1"),
                x509.IPAddress(ipaddress.ip_address(address))]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    where.mkdir(parents=True, exist_ok=True)
    pem = serialization.Encoding.PEM
    write_private(where / "cert.pem", leaf.public_bytes(pem).decode())
    write_private(where / "key.pem", key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()).decode())
    write_private(where / "ca.pem", ca.public_bytes(pem).decode() + trusts)
    return LiveContexts(where / "ca.pem", where / "cert.pem", where / "key.pem")


def test_root_rotates_live(tmp_path: Path) -> None:
    with running_bao(tmp_path / "vault", f"{NET}.91") as bao:
        root = bao.root_client()
        spec = spec_for(bao, default_hosts(NET))
        role_ids = apply(root, spec)["role_ids"]
        token_file = tmp_path / "root-token"
        write_private(token_file, str(root.token) + "\n")  # 0600, never on a command line
        master = provisioned_service(bao, role_ids, HOSTS["master1"], tmp_path / "m-creds")
        worker = provisioned_service(bao, role_ids, HOSTS["worker1"], tmp_path / "w-creds")
        worker2 = provisioned_service(bao, role_ids, HOSTS["worker2"], tmp_path / "w2-creds")
        old_root = x509.load_pem_x509_certificate(pki.roots_pem(root)[0].encode())
        # leaves and bundles from before the rotation
        old_ctx, old_serial, old_int = _identity(master, tmp_path / "master1")
        stale_ctx, _, _ = _identity(worker2, tmp_path / "worker2-stale")  # a peer that will not renew in time

        # step 1: the new root is published; nothing is issued under it yet; a re-run changes nothing
        proc = _histo_pki(bao, token_file, "root-stage")
        assert proc.returncode == 0, proc.stderr
        staged = json.loads(proc.stdout)
        assert staged["changed"] is True
        again = json.loads(_histo_pki(bao, token_file, "root-stage").stdout)
        assert again == {**staged, "changed": False}
        bundle = worker.ca_chain_pem()
        assert len(_roots(bundle)) == 2 and old_root.subject in _roots(bundle)
        mid_ctx, _, mid_int = _identity(master, tmp_path / "master1-mid")  # a renewal during the overlap
        assert mid_int.subject == old_int.subject  # still the old chain: the staged intermediate issues nothing
        assert apply(root, spec)["changed"] is False  # vault setup sees no drift in a staged rotation
        # a peer that has not renewed since the stage follows every CRL it is given without a refusal
        # (the staged intermediate, which issued nothing, is not among them)
        assert RevocationList().apply_crls(list(master.crl_bundles()), tmp_path / "worker2-stale" / "ca.pem") == []
        with pytest.raises(pki.PkiError, match="root-finish"):
            pki.rotate(root)  # an intermediate rotation now would retire the staged one

        # step 2 refused before every peer can have renewed its bundle (one line, no traceback)
        early = _histo_pki(bao, token_file, "root-finish")
        assert early.returncode != 0 and early.stderr.startswith("histo: ") and "Traceback" not in early.stderr
        assert len(early.stderr.strip().splitlines()) == 1 and "run root-finish again in" in early.stderr
        assert pki.staged(root) is not None
        proc = _histo_pki(bao, token_file, "root-finish", "--wait=0s")  # the test stands in for the wait
        assert proc.returncode == 0, proc.stderr
        done = json.loads(proc.stdout)
        assert done["changed"] is True and done["intermediate"] == staged["staged"] and done["root"] == staged["root"]
        assert done["previous_default"] in done["retired"] and done["previous_root"] in done["retired_roots"]
        assert json.loads(_histo_pki(bao, token_file, "root-finish").stdout)["changed"] is False

        new_ctx, new_serial, new_int = _identity(worker, tmp_path / "worker1")
        assert new_int.issuer != old_root.subject and new_int.issuer in _roots(worker.ca_chain_pem())
        # the overlap: a leaf of the old chain (before the stage, and during it) and one of the new chain,
        # mutual TLS both ways, at peers whose bundle holds both roots
        _refresh_bundle(old_ctx, tmp_path / "master1", master)
        for old_side in (old_ctx, mid_ctx):
            assert _mutual_tls(new_ctx, old_side, HOSTS["worker1"]["address"]) == "worker1.histo.internal"
            assert _mutual_tls(old_side, new_ctx, HOSTS["master1"]["address"]) == "master1.histo.internal"
        # why root-finish waits: a peer whose bundle predates the stage refuses a leaf of the new chain
        with pytest.raises(ssl.SSLError):
            _mutual_tls(new_ctx, stale_ctx, HOSTS["worker1"]["address"])
        # a CA of nobody's: its leaf is refused by a peer of either chain, as a server and as a client
        stranger = _stranger(tmp_path / "stranger", HOSTS["master1"]["address"], worker.ca_chain_pem())
        for peer in (new_ctx, old_ctx):
            with pytest.raises(ssl.SSLError):
                _mutual_tls(stranger, peer, HOSTS["master1"]["address"])
            assert _refused(peer, stranger, HOSTS["master1"]["address"])
        assert not _refused(new_ctx, old_ctx, HOSTS["worker1"]["address"])  # the check above can tell
        # the public API's clients (HISTO_CA) get both roots too, no token needed
        roots = subprocess.run([sys.executable, "-m", "histo.cli", "pki", "roots", f"--vault-url={bao.url}",
                                f"--vault-ca={bao.ca_path}", f"--out={tmp_path / 'histo-ca.pem'}"],
                               capture_output=True, text=True, timeout=60)
        assert roots.returncode == 0, roots.stderr
        assert json.loads(roots.stdout)["changed"] is True
        assert _roots((tmp_path / "histo-ca.pem").read_text()) == _roots(worker.ca_chain_pem())
        assert json.loads(subprocess.run(roots.args, capture_output=True, text=True, timeout=60).stdout)["changed"] \
            is False  # what provisioning re-runs: nothing rewritten
        # a step that changes the PKI without a token: one line, no traceback
        bare = subprocess.run([sys.executable, "-m", "histo.cli", "pki", "root-stage", f"--vault-url={bao.url}",
                               f"--vault-ca={bao.ca_path}"], capture_output=True, text=True, timeout=60)
        assert bare.returncode != 0 and bare.stderr.strip() == "histo: pki root-stage needs --token-file (a root token)"

        # revocation across the overlap: a leaf of each chain revoked, each CRL vouched for by its own
        # root in the peer's bundle; the peer refuses both serials (what rpc.peer_check consults)
        root.write_data("pki_int/revoke", data={"serial_number": old_serial})
        root.write_data("pki_int/revoke", data={"serial_number": new_serial})
        root.read("pki_int/crl/rotate")
        revoked = RevocationList()
        assert revoked.apply_crls(list(worker.crl_bundles()), tmp_path / "worker1" / "ca.pem") == []
        assert revoked.is_revoked(old_serial) and revoked.is_revoked(new_serial)
        assert not revoked.is_revoked(_serial_of(tmp_path / "master1-mid"))
        # a forged intermediate with the new one's name, under a root of nobody's: no revocation from it
        fake_pem, fake_key = _forged_intermediate(new_int)
        with pytest.raises(ValueError):
            parse_crl(_crl_by(fake_key, new_int.subject, [12345]), tmp_path / "worker1" / "ca.pem", fake_pem)

        # prune: nothing while leaves of the old chain may live; then the old intermediate, the old
        # root and pki_int's copy of it go, and the old chain is trusted no more
        assert pki.prune(root, now=time.time() + 3600) == []
        gone = pki.prune(root, now=time.time() + 25 * 3600)
        assert set(done["retired"]) | set(done["retired_roots"]) <= set(gone)
        assert pki.prune(root, now=time.time() + 25 * 3600) == []  # a re-run deletes nothing
        after = worker.ca_chain_pem()
        assert _roots(after) == {new_int.issuer}
        assert old_int.subject not in {c.subject for c in x509.load_pem_x509_certificates(after.encode())}
        # a peer started with the pruned bundle (a running one's SSLContext only ever adds CAs: it drops
        # the old root at its next restart, docs/SECURITY.md)
        write_private(tmp_path / "worker1" / "ca.pem", after)
        new_ctx = LiveContexts(tmp_path / "worker1" / "ca.pem", tmp_path / "worker1" / "cert.pem",
                               tmp_path / "worker1" / "key.pem")
        with pytest.raises(ssl.SSLError):
            _mutual_tls(mid_ctx, new_ctx, HOSTS["master1"]["address"])  # an old-chain leaf, now refused
        assert _refused(new_ctx, mid_ctx, HOSTS["worker1"]["address"])
        fresh_ctx, _, fresh_int = _identity(master, tmp_path / "master1-fresh")
        assert fresh_int.subject == new_int.subject
        assert _mutual_tls(new_ctx, fresh_ctx, HOSTS["worker1"]["address"]) == "worker1.histo.internal"
        assert apply(root, spec)["changed"] is False


def _serial_of(where: Path) -> int:
    return x509.load_pem_x509_certificate((where / "cert.pem").read_bytes()).serial_number
