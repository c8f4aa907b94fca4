"""histo's TLS settings live in one place (tls/contexts.py): every live context gets them, and the
servers configured outside Python (ZooKeeper's zoo.cfg, OpenBao's listener) carry the same suites."""
from __future__ import annotations

import re
import ssl
from pathlib import Path

from histo.tls import contexts
from histo.tls.contexts import TLS12_SUITES_IANA, TLS13_SUITES, harden
from histo.vault import hcl
from histo.zk import config as zk_config

AEAD = ("GCM", "CHACHA20", "POLY1305")


def test_harden_allows_tls12_and_13_with_aead_suites_only() -> None:
    ctx = harden(ssl.create_default_context(ssl.Purpose.CLIENT_AUTH))
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2 and ctx.maximum_version == ssl.TLSVersion.TLSv1_3
    assert ctx.options & ssl.OP_NO_RENEGOTIATION and ctx.options & ssl.OP_NO_COMPRESSION
    suites = ctx.get_ciphers()
    assert suites
    for suite in suites:
        assert suite["aead"] and any(m in suite["name"] for m in AEAD), suite["name"]
        assert suite["protocol"] == "TLSv1.3" or suite["name"].startswith("ECDHE-"), suite["name"]  # forward secrecy
    # the OpenSSL names and the IANA names given to Java and Go are the same suites
    tls12 = {s["name"] for s in suites if s["protocol"] != "TLSv1.3"}
    assert len(tls12) == len(TLS12_SUITES_IANA)
    assert {s["name"] for s in suites if s["protocol"] == "TLSv1.3"} == set(TLS13_SUITES)


def test_every_live_context_is_hardened() -> None:
    source = Path(contexts.__file__).read_text()
    # the three contexts are built in exactly two places, both through harden()
    assert source.count("ssl.create_default_context(") == source.count("harden(ssl.create_default_context(") == 2


def test_openbao_listener_offers_the_same_suites() -> None:
    rendered = hcl.render(node_id="v", data_dir="/d", address="127.0.0.1", port=8200, tls_cert_file="/c",
                          tls_key_file="/k")
    suites = re.search(r'tls_cipher_suites = "([^"]+)"', rendered)
    assert suites and tuple(suites.group(1).split(",")) == TLS12_SUITES_IANA
    assert 'tls_min_version = "tls12"' in rendered


def test_zookeeper_client_port_and_quorum_offer_the_same_suites() -> None:
    assert zk_config.CIPHERSUITES.split(",") == list(TLS13_SUITES + TLS12_SUITES_IANA)
    source = Path(zk_config.__file__).read_text()
    assert 'f"ssl.ciphersuites={CIPHERSUITES}"' in source and 'f"ssl.quorum.ciphersuites={CIPHERSUITES}"' in source


def test_raft_peers_share_one_bootstrap_ca_and_keep_their_own_leaf(tmp_path: Path) -> None:
    from cryptography import x509

    from histo.tls.selfsigned import ensure_bootstrap_tls
    ca1, cert1, _ = ensure_bootstrap_tls(tmp_path / "ca", ["vault1"], ["10.0.0.1"], leaf_dir=tmp_path / "v1")
    ca2, cert2, _ = ensure_bootstrap_tls(tmp_path / "ca", ["vault2"], ["10.0.0.2"], leaf_dir=tmp_path / "v2")
    assert ca1 == ca2 and cert1 != cert2
    first = cert1.read_bytes()
    ensure_bootstrap_tls(tmp_path / "ca", ["vault1"], ["10.0.0.1"], leaf_dir=tmp_path / "v1")
    assert cert1.read_bytes() == first  # idempotent per node: the other node's run does not replace it
    ca = x509.load_pem_x509_certificate(ca1.read_bytes())
    for cert in (cert1, cert2):
        x509.load_pem_x509_certificate(cert.read_bytes()).verify_directly_issued_by(ca)
