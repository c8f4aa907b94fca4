"""A certificate refused at the TLS handshake of the internal listener is reported (edge/conncap.py
handshake_refusal, HandshakeReporter; issue 17): real TLS on loopback, the services' own contexts
(tls/contexts.py LiveContexts), certificates made here with `cryptography` — an expired one backdated
by its own CA, one of another CA, none — beside a valid one that is still served. Noise is not
reported: plaintext, a reset, anything on the public listener (which asks for no certificate). The
reports are bounded per address and in all; the event is attributed by the collector
(secops/sources.py) to the address's inventory host."""
from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import socket
import ssl
from pathlib import Path
from typing import Any

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from histo.edge.conncap import CappedSite, ConnLimits, HandshakeReporter, handshake_refusal
from histo.edge.events import EventBus, EventFile
from histo.master import relay
from histo.secops.rules import load_rules
from histo.secops.sources import Inventory, classify
from histo.tls.contexts import LiveContexts

NOW = datetime.datetime.now(datetime.timezone.utc)
DAY = datetime.timedelta(days=1)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _ca(cn: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn)).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(NOW - 30 * DAY)
            .not_valid_after(NOW + 30 * DAY).add_extension(x509.BasicConstraints(True, None), critical=True)
            .sign(key, hashes.SHA256()))
    return cert, key


def _leaf(tmp: Path, stem: str, ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey], role: str, host: str,
          not_before: datetime.datetime, not_after: datetime.datetime) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(_name(f"{host}.histo.internal")).issuer_name(ca[0].subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(not_before).not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(False, None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                x509.UniformResourceIdentifier(f"spiffe://histo.internal/{role}/{host}")]), critical=False)
            .sign(ca[1], hashes.SHA256()))
    (tmp / f"{stem}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp / f"{stem}.key").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                        serialization.NoEncryption()))
    return tmp / f"{stem}.pem", tmp / f"{stem}.key"


class Pki:
    """The project CA of this test (a root that signs every leaf), another CA, and leaves."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.ca = _ca("histo test CA")
        (tmp / "ca.pem").write_bytes(self.ca[0].public_bytes(serialization.Encoding.PEM))
        self.server = _leaf(tmp, "server", self.ca, "master", "master1", NOW - DAY, NOW + DAY)
        self.valid = _leaf(tmp, "valid", self.ca, "worker", "worker1", NOW - DAY, NOW + DAY)
        # worker1's own certificate of the same CA, backdated: its life ended an hour ago
        self.expired = _leaf(tmp, "expired", self.ca, "worker", "worker1", NOW - 2 * DAY,
                             NOW - datetime.timedelta(hours=1))
        self.foreign = _leaf(tmp, "foreign", _ca("another CA"), "worker", "worker1", NOW - DAY, NOW + DAY)

    def client(self, which: tuple[Path, Path] | None) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.tmp / "ca.pem"))
        if which is not None:
            ctx.load_cert_chain(str(which[0]), str(which[1]))
        return ctx


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _site(pki: Pki, listener: str, report: Any) -> tuple[web.AppRunner, int]:
    live = LiveContexts(pki.tmp / "ca.pem", *pki.server)
    async def hello(_request: web.Request) -> web.Response:
        return web.json_response({"ok": True})
    app = web.Application()
    app.router.add_get("/", hello)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = _free_port()
    tls = live.internal_server if listener == "internal" else live.public_server
    await CappedSite(runner, "127.0.0.1", port, ssl_context=tls, listener=listener, on_handshake_refused=report,
                     limits=ConnLimits(per_address=16, total=64, handshake_timeout=1.0, idle_timeout=5.0)).start()
    return runner, port


async def _get(port: int, ctx: ssl.SSLContext | None, source: str = "127.0.0.1") -> int | str:
    """The status of GET /, or what refused it."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx, local_addr=(source, 0),
                                                       server_hostname="localhost" if ctx else None)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), 5)
        writer.close()
    except (ssl.SSLError, ConnectionError) as exc:
        return type(exc).__name__
    return int(data.split()[1]) if data.startswith(b"HTTP/") else "closed"


def test_refused_certificates_are_reported_and_a_valid_one_is_served(tmp_path: Path) -> None:
    pki = Pki(tmp_path)
    seen: list[tuple[str, str, str]] = []

    async def run() -> None:
        runner, port = await _site(pki, "internal", lambda a, lst, r: seen.append((a, lst, r)))
        try:
            assert await _get(port, pki.client(pki.valid)) == 200
            for which, source in ((pki.expired, "127.0.0.2"), (pki.foreign, "127.0.0.3"), (None, "127.0.0.4")):
                assert await _get(port, pki.client(which), source) != 200
            await asyncio.sleep(0.2)
            # plaintext on the TLS port and a connection closed at once: noise, never reported
            assert await _get(port, None, "127.0.0.5") in ("closed", "ConnectionResetError")
            r, w = await asyncio.open_connection("127.0.0.1", port, local_addr=("127.0.0.6", 0))
            w.close()
            await asyncio.sleep(0.3)
            assert await _get(port, pki.client(pki.valid)) == 200  # the legitimate path, after all that
        finally:
            await runner.cleanup()
    asyncio.run(run())
    assert seen == [("127.0.0.2", "internal", "certificate has expired"),
                    ("127.0.0.3", "internal", "unable to get local issuer certificate"),
                    ("127.0.0.4", "internal", "no client certificate")]


def test_the_public_listener_reports_nothing(tmp_path: Path) -> None:
    """It asks for no client certificate: an expired one is never looked at, and a failed handshake there
    (plaintext, a scanner, a reset) is noise."""
    pki = Pki(tmp_path)
    seen: list[Any] = []

    async def run() -> None:
        runner, port = await _site(pki, "public", lambda *a: seen.append(a))
        try:
            assert await _get(port, pki.client(pki.expired)) == 200
            assert await _get(port, None, "127.0.0.5") in ("closed", "ConnectionResetError")
            await asyncio.sleep(0.2)
        finally:
            await runner.cleanup()
    asyncio.run(run())
    assert seen == []


def test_only_certificate_refusals_count() -> None:
    required = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    required.verify_mode = ssl.CERT_REQUIRED
    expired = ssl.SSLCertVerificationError(1, "certificate verify failed")
    expired.verify_message, expired.verify_code = "certificate has expired", 10
    none = ssl.SSLError(1, "peer did not return a certificate")
    none.reason = "PEER_DID_NOT_RETURN_A_CERTIFICATE"
    plain = ssl.SSLError(1, "http request")
    plain.reason = "HTTP_REQUEST"
    assert handshake_refusal(expired, required) == "certificate has expired"
    assert handshake_refusal(none, required) == "no client certificate"
    for noise in (plain, ConnectionResetError(), asyncio.TimeoutError(), ConnectionAbortedError("timeout")):
        assert handshake_refusal(noise, required) is None
    public = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    assert handshake_refusal(expired, public) is None and handshake_refusal(none, None) is None


def test_reports_are_bounded_per_address_and_in_all() -> None:
    now = [0.0]
    got: list[dict[str, Any]] = []
    rep = HandshakeReporter(lambda kind, **f: got.append({"kind": kind, **f}), burst=3, every=10.0,
                            overall_rate=1.0, overall_burst=20, clock=lambda: now[0])
    for _ in range(1000):  # a worker whose certificate lapsed, retrying in a tight loop
        rep("192.168.56.31", "internal", "certificate has expired")
    assert len(got) == 3 and rep.suppressed == {"192.168.56.31": 997}
    now[0] = 10.0
    rep("192.168.56.31", "internal", "certificate has expired")
    assert len(got) == 4 and got[-1]["suppressed"] == 997 and rep.suppressed == {}
    assert got[0] == {"kind": "tls_handshake_refused", "severity": "warning", "peer": "192.168.56.31",
                      "listener": "internal", "reason": "certificate has expired", "suppressed": 0}
    # many forged source addresses: the overall bucket holds (20 at once, then 1 a second)
    got.clear()
    rep = HandshakeReporter(lambda kind, **f: got.append({"kind": kind, **f}), clock=lambda: now[0])
    for i in range(5000):
        rep(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}", "internal", "no client certificate")
    assert len(got) == 20 and len(rep.suppressed) <= rep.max_keys
    now[0] = 15.0
    rep("10.9.9.9", "internal", "no client certificate")
    assert len(got) == 21


def test_the_event_is_shipped_attributed_and_relayed(tmp_path: Path) -> None:
    """Through the service's event file (what the machine's shipper sends) to the collector's
    attribution: the address's inventory host and SPIFFE id, the listener, OpenSSL's reason; a worker's
    report is relayed by the leader; no certificate or key material anywhere."""
    ef = EventFile(tmp_path / "secops-events.jsonl")
    bus = EventBus(sink=ef.write)
    def publish(kind: str, **f: Any) -> None:
        bus.publish(kind, service="master1", **f)
    rep = HandshakeReporter(publish)
    rep("192.168.56.31", "internal", "certificate has expired")
    ef.close()
    (line,) = (tmp_path / "secops-events.jsonl").read_text().splitlines()
    inv = Inventory([{"name": "worker1", "role": "worker", "address": "192.168.56.31"},
                     {"name": "master1", "role": "master", "address": "192.168.56.21"}])
    got = classify({"msg": line, "host": "master1", "tag": "histo-events", "from": "192.168.56.21"}, inv)
    assert got is not None
    assert {k: got[k] for k in ("layer", "kind", "host", "spiffe", "address", "target", "listener", "reason")} == {
        "layer": "service", "kind": "tls_handshake_refused", "host": "worker1",
        "spiffe": "spiffe://histo.internal/worker/worker1", "address": "192.168.56.31", "target": "master1",
        "listener": "internal", "reason": "certificate has expired"}
    assert got["why"] == "TLS handshake refused on the internal listener: certificate has expired"
    assert "BEGIN" not in line and json.loads(line)["severity"] == "warning"
    # a worker's own report, in its status: the leader relays it under the certificate that answered
    events, refused = relay.accept([{"kind": "tls_handshake_refused", "peer": "192.168.56.21", "listener": "internal",
                                     "reason": "no client certificate", "suppressed": 4, "service": "worker9"}],
                                   "worker2")
    assert refused == 0 and events == [{"kind": "tls_handshake_refused", "severity": "warning", "service": "worker2",
                                        "relayed_from": "worker2", "reason": "no client certificate",
                                        "peer": "192.168.56.21", "listener": "internal", "suppressed": 4}]


def test_the_rule_alerts_on_a_run_and_never_quarantines() -> None:
    (rule,) = [r for r in load_rules() if r.name == "tls-handshake-refused-repeatedly"]
    assert rule.response == "alert" and (rule.count, rule.within) == (3, 60.0)
