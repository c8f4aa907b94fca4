"""Live TLS contexts, and the one place histo's TLS settings live.

Each service builds its SSLContexts once and keeps them for its lifetime. A certificate
rotation calls load_cert_chain() on the *same* context objects: new handshakes get the
new certificate while established connections carry on, so no request is dropped.

Every context — the public listener, the internal mTLS listener, the client side of internal
calls — gets its protocol and cipher settings from `harden()`: TLS 1.2 and 1.3 only, and in TLS
1.2 only ECDHE key exchange with an AEAD cipher (AES-GCM, ChaCha20-Poly1305): no CBC suite
(LUCKY13), no static RSA (ROBOT), no renegotiation. TLS 1.3 has AEAD suites only. The servers
histo configures but does not run in Python take the same suites from here: ZooKeeper
(`zk/config.py`, `ssl.ciphersuites`) by import, OpenBao (`vault/openbao.hcl.j2`,
`tls_cipher_suites`) as a literal that tests/unit/test_tls_settings.py holds equal to
`TLS12_SUITES_IANA`. testssl.sh checks every listener (tests/integration/test_testssl.py,
tests/deploy/test_testssl.py).
"""
from __future__ import annotations

import ssl
import threading
from pathlib import Path

# TLS 1.2 suites, OpenSSL names (Python's ssl): ECDHE + AEAD only, server order.
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL"
# The same suites by their IANA names (Java's JSSE for ZooKeeper, Go's crypto/tls for OpenBao),
# for ECDSA and RSA certificates alike.
TLS12_SUITES_IANA = (
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384", "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384", "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
)
# TLS 1.3 suites (all AEAD; Java needs them named when the list is set).
TLS13_SUITES = ("TLS_AES_256_GCM_SHA384", "TLS_AES_128_GCM_SHA256", "TLS_CHACHA20_POLY1305_SHA256")
PROTOCOLS = ("TLSv1.2", "TLSv1.3")


def harden(ctx: ssl.SSLContext) -> ssl.SSLContext:
    """histo's TLS settings on one context (server or client); returns it."""
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    ctx.set_ciphers(TLS12_CIPHERS)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION | ssl.OP_CIPHER_SERVER_PREFERENCE
    return ctx


class LiveContexts:
    def __init__(self, ca_path: Path, cert_path: Path, key_path: Path) -> None:
        self.ca_path, self.cert_path, self.key_path = ca_path, cert_path, key_path
        self._lock = threading.Lock()
        # Internal server: mutual TLS, the client must present a certificate from our CA.
        self.internal_server = self._server(require_client_cert=True)
        # Public server (master:443): ordinary HTTPS, clients authenticate with bearer tokens.
        self.public_server = self._server(require_client_cert=False)
        # Client side of internal calls: verifies the server against our CA *and* its address
        # (certificates carry the host's IP SAN); callers additionally check the SPIFFE id.
        self.internal_client = harden(ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca_path)))
        self._load_all()

    def _server(self, require_client_cert: bool) -> ssl.SSLContext:
        ctx = harden(ssl.create_default_context(ssl.Purpose.CLIENT_AUTH))
        if require_client_cert:
            ctx.load_verify_locations(cafile=str(self.ca_path))
            ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx

    def _load_all(self) -> None:
        for ctx in (self.internal_server, self.public_server, self.internal_client):
            ctx.load_cert_chain(str(self.cert_path), str(self.key_path))

    def reload(self) -> None:
        """Swap the freshly written certificate and key into every live context."""
        with self._lock:
            self._load_all()
            # A CA bundle that gained an issuer (intermediate rotation) is picked up too.
            self.internal_server.load_verify_locations(cafile=str(self.ca_path))
            self.internal_client.load_verify_locations(cafile=str(self.ca_path))
