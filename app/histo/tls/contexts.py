"""Live TLS contexts.

Each service builds its SSLContexts once and keeps them for its lifetime. A certificate
rotation calls load_cert_chain() on the *same* context objects: new handshakes get the
new certificate while established connections carry on, so no request is dropped.
"""
from __future__ import annotations

import ssl
import threading
from pathlib import Path


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
        self.internal_client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca_path))
        self.internal_client.minimum_version = ssl.TLSVersion.TLSv1_2
        self._load_all()

    def _server(self, require_client_cert: bool) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
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
