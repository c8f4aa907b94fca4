"""Address binding fails closed and revocation works (issue 13, item 4), against the real cluster:
a host's own Vault token cannot get a certificate without its address; peers refuse a certificate
without an IP SAN on both ends; revoking worker1's serial is refused by every master within
seconds and closes its open keep-alive connection, while worker2 (and worker1 with the fresh
certificate it fetches by itself) keeps working."""
from __future__ import annotations

import asyncio
import functools
import http.client
import json
import ssl
import time
from typing import Any, cast
from pathlib import Path

import hvac
import pytest
from aiohttp import web
from cryptography import x509
from hvac.exceptions import Forbidden

from histo.rpc import InternalClient, PeerRefused
from histo.testing.attacker import root_client, service_vault
from histo.testing.cluster import Cluster, sample_image, until as _wait
from histo.tls.revocation import serial_int
from histo.vault.revoke import revoke
from .cluster_fixture import NET

TASK_HEADERS = {"X-Histo-Job": "abc", "X-Histo-Task": "0", "X-Histo-Attempt": "forged", "X-Histo-Phase": "equalize",
                "X-Histo-Image-Mode": "L", "X-Histo-Width": "4", "X-Histo-Rows": "1",
                "X-Histo-Reply-To": f"https://{NET}.21:8443"}
RESULT = json.dumps([0] * 256).encode()
MASTERS = ("master1", "master2")


def _ctx(cluster: Cluster, cert: str, key: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=cluster.ca)
    ctx.load_cert_chain(cert, key)
    return ctx


def _files(cluster: Cluster, name: str, tmp_path: Path, tag: str = "") -> tuple[str, str, int]:
    """A stable copy of a service's current certificate and key (the service rotates its files)."""
    tls = cluster.service_dir(name) / "tls"
    for _ in range(20):
        cert, key = (tls / "cert.pem").read_bytes(), (tls / "key.pem").read_bytes()
        try:
            serial = x509.load_pem_x509_certificates(cert)[0].serial_number
            ssl_ctx = ssl.create_default_context()
            (tmp_path / f"{name}{tag}.crt").write_bytes(cert)
            (tmp_path / f"{name}{tag}.key").write_bytes(key)
            ssl_ctx.load_cert_chain(str(tmp_path / f"{name}{tag}.crt"), str(tmp_path / f"{name}{tag}.key"))
            return str(tmp_path / f"{name}{tag}.crt"), str(tmp_path / f"{name}{tag}.key"), serial
        except (ValueError, ssl.SSLError):
            time.sleep(0.1)  # torn read during a rotation
    raise AssertionError(f"could not read {name}'s certificate")


def _conn(cluster: Cluster, target: str, ctx: ssl.SSLContext, source: str) -> http.client.HTTPSConnection:
    cfg = cluster.config(target)
    return http.client.HTTPSConnection(cfg["address"], cfg["internal_port"], context=ctx, timeout=10,
                                       source_address=(source, 0))


def _post(conn: http.client.HTTPSConnection, path: str = "/internal/v1/results", body: bytes = RESULT,
          headers: dict[str, str] | None = None) -> int:
    conn.request("POST", path, body=body, headers=headers or TASK_HEADERS)
    resp = conn.getresponse()
    resp.read()
    return resp.status


def _once(cluster: Cluster, target: str, cert: str, key: str, source: str, **kw: Any) -> int:
    conn = _conn(cluster, target, _ctx(cluster, cert, key), source)
    try:
        return _post(conn, **kw)
    finally:
        conn.close()


def test_a_host_cannot_issue_itself_a_certificate_without_its_address(cluster: Cluster) -> None:
    vault = service_vault(cluster, "worker1")
    vault.login()
    base = {"common_name": "worker1.histo.internal", "uri_sans": "spiffe://histo.internal/worker/worker1",
            "format": "pem", "private_key_format": "pkcs8", "ttl": "60s"}
    for ip in (None, "", cluster.config("worker2")["address"], f"{NET}.99",
               f"{cluster.config('worker1')['address']},{NET}.99"):
        params = dict(base) if ip is None else {**base, "ip_sans": ip}
        with pytest.raises((Forbidden, hvac.exceptions.InvalidRequest)):
            vault.client.write_data("pki_int/issue/host-worker1", data=params)
    # legitimate: with exactly its own address
    data: Any = cast(Any, vault.client.write_data("pki_int/issue/host-worker1",
                                   data={**base, "ip_sans": cluster.config("worker1")["address"]}))["data"]
    cert = x509.load_pem_x509_certificate(data["certificate"].encode())
    ips = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.IPAddress)
    assert [str(i) for i in ips] == [cluster.config("worker1")["address"]]


def _no_ip_cert(cluster: Cluster, tmp_path: Path, host: str, role: str) -> tuple[str, str]:
    """What a policy without the requirement would have handed out: our CA, no IP SAN."""
    data: Any = cast(Any, root_client(cluster).write_data(f"pki_int/issue/host-{host}", data={
        "common_name": f"{host}.histo.internal", "uri_sans": f"spiffe://histo.internal/{role}/{host}",
        "ttl": "120s", "format": "pem", "private_key_format": "pkcs8"}))["data"]
    cert = x509.load_pem_x509_certificate(data["certificate"].encode())
    assert not cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.IPAddress)
    (tmp_path / f"{host}-noip.crt").write_text(data["certificate"] + "\n" + data["issuing_ca"] + "\n")
    (tmp_path / f"{host}-noip.key").write_text(data["private_key"])
    return str(tmp_path / f"{host}-noip.crt"), str(tmp_path / f"{host}-noip.key")


def test_peers_refuse_a_client_certificate_without_ip_san(cluster: Cluster, tmp_path: Path) -> None:
    w_cert, w_key = _no_ip_cert(cluster, tmp_path, "worker1", "worker")
    m_cert, m_key = _no_ip_cert(cluster, tmp_path, "master1", "master")
    w_addr, m_addr = cluster.config("worker1")["address"], cluster.config("master1")["address"]
    for master in MASTERS:  # master internal port: a worker's certificate without its address
        assert _once(cluster, master, w_cert, w_key, w_addr) == 403
    for worker in ("worker1", "worker2"):  # worker internal port: a master's certificate without its address
        conn = _conn(cluster, worker, _ctx(cluster, m_cert, m_key), m_addr)
        conn.request("GET", "/internal/v1/status")
        assert conn.getresponse().status == 403
        conn.close()
    # legitimate: the services' own certificates (which carry their addresses)
    cert, key, _ = _files(cluster, "worker1", tmp_path)
    assert _once(cluster, "master1", cert, key, w_addr) == 409
    mc, mk, _ = _files(cluster, "master1", tmp_path)
    conn = _conn(cluster, "worker1", _ctx(cluster, mc, mk), m_addr)
    conn.request("GET", "/internal/v1/status")
    assert conn.getresponse().status == 200
    conn.close()


def test_internal_client_refuses_a_server_certificate_without_ip_san(cluster: Cluster, tmp_path: Path) -> None:
    s_cert, s_key = _no_ip_cert(cluster, tmp_path, "worker2", "worker")
    mc, mk, _ = _files(cluster, "master1", tmp_path)
    addr = f"{NET}.97"

    async def run() -> None:
        server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_ctx.load_cert_chain(s_cert, s_key)
        app = web.Application()
        async def status(_request: web.Request) -> web.Response:
            return web.json_response({"name": "worker2"})
        app.router.add_get("/internal/v1/status", status)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, addr, 0, ssl_context=server_ctx)
        await site.start()
        port = runner.addresses[0][1]
        # even a client whose TLS layer does not match names (by-name URLs, a lax context) is refused
        lax = ssl.create_default_context(cafile=cluster.ca)
        lax.check_hostname = False
        lax.load_cert_chain(mc, mk)
        client = InternalClient(lax, "histo.internal", source_address=cluster.config("master1")["address"])
        try:
            with pytest.raises(PeerRefused, match="no IP address"):
                await client.request("GET", f"https://{addr}:{port}/internal/v1/status", ("worker",))
            # legitimate: the real worker2 presents its address
            w2 = cluster.config("worker2")
            reply = await client.request("GET", f"https://{w2['address']}:{w2['internal_port']}/internal/v1/status",
                                         ("worker",), expect_host="worker2")
            assert reply.status == 200
        finally:
            await client.close()
            await runner.cleanup()
    asyncio.run(run())


def _refused(cluster: Cluster, target: str, cert: str, key: str, source: str) -> bool:
    return _once(cluster, target, cert, key, source) == 403


def test_revoking_a_serial_reaches_every_master_within_seconds(cluster: Cluster, tmp_path: Path) -> None:
    w1 = cluster.config("worker1")["address"]
    w2 = cluster.config("worker2")["address"]
    cert, key, serial = _files(cluster, "worker1", tmp_path, "-old")
    ctx = _ctx(cluster, cert, key)
    # worker1's open keep-alive connections to both masters, working
    kept = {m: _conn(cluster, m, ctx, w1) for m in MASTERS}
    for conn in kept.values():  # a call that keeps the connection open (an unread result body closes it)
        assert _post(conn, "/internal/v1/join", b"", {"Content-Length": "0"}) == 200
        assert conn.sock is not None  # kept open by both ends
    t0 = time.time()
    out = revoke(root_client(cluster), serial=f"{serial:x}")
    assert len(out["revoked"]) == 1

    # every master refuses the revoked certificate on a new connection within seconds
    for master in MASTERS:
        assert _wait(functools.partial(_refused, cluster, master, cert, key, w1), timeout=10), master
    refused_after = time.time() - t0
    assert refused_after < 10, refused_after

    # the open keep-alive connections were hung up on (not left to carry on until expiry)
    for master, conn in kept.items():
        conn.auto_open = 0  # the kept connection itself: http.client would otherwise quietly open a new one
        with pytest.raises((http.client.RemoteDisconnected, ConnectionError, ssl.SSLError, http.client.BadStatusLine,
                            http.client.NotConnected, OSError)):
            status = _post(conn, "/internal/v1/join", b"", {"Content-Length": "0"})
            raise AssertionError(f"{master} answered {status} on a revoked connection")
        conn.close()

    # legitimate: worker2 is untouched
    c2, k2, _ = _files(cluster, "worker2", tmp_path)
    for master in MASTERS:
        assert _once(cluster, master, c2, k2, w2) == 409

    # worker1 noticed its own serial on the CRL and fetched a new certificate, which works
    def renewed() -> tuple[str, str] | None:
        c, k, s = _files(cluster, "worker1", tmp_path, "-new")
        return (c, k) if s != serial else None
    got = _wait(renewed, timeout=15)
    assert got, "worker1 did not fetch a new certificate"
    for master in MASTERS:
        assert _once(cluster, master, got[0], got[1], w1) == 409

    # and jobs still run on the cluster
    status, doc = cluster.upload(sample_image(80, 60, "PNG"), mode="gray")
    assert status == 202
    assert cluster.wait_job(doc["id"])["state"] == "done"


def test_revoke_command_by_host(cluster: Cluster, tmp_path: Path) -> None:
    """`histo identity revoke --host worker2`: every unexpired certificate of worker2, none of another
    host's; without --block worker2 re-issues by itself and works again."""
    from histo.vault.revoke import host_serials
    from histo.vault.setup import INT
    root = root_client(cluster)
    c, k, current = _files(cluster, "worker2", tmp_path, "-revoked")
    serials = {serial_int(s): s for s in host_serials(root, "worker2")}
    assert current in serials
    others = {serial_int(s) for s in host_serials(root, "worker1")}
    out = revoke(root, host="worker2")
    revoked = {serial_int(s) for s in out["revoked"]}
    assert current in revoked and not others & revoked

    def expired(serial: str) -> bool:
        pem = cast(dict[str, Any], root.read(f"{INT}/cert/{serial}"))["data"]["certificate"]
        return bool(x509.load_pem_x509_certificate(pem.encode()).not_valid_after_utc.timestamp() <= time.time())
    # every one listed above, except one that expired before revoke listed them in turn (30 s lives here,
    # and each listing reads every certificate the session issued: seconds, on a busy machine)
    assert all(expired(serials[s]) for s in set(serials) - revoked), set(serials) - revoked
    assert current not in {serial_int(s) for s in host_serials(root, "worker2")}
    w2 = cluster.config("worker2")["address"]
    assert _wait(lambda: _once(cluster, "master1", c, k, w2) == 403, timeout=10)
    # a certificate revoke did not revoke: one worker2 renewed while revoke listed is revoked too, and
    # worker2, seeing that one revoked in turn, fetches another (certs.py)
    got = _wait(lambda: (lambda f: f if f[2] not in revoked else None)(_files(cluster, "worker2", tmp_path, "-n")),
                timeout=15)
    assert got, "worker2 did not fetch a new certificate"
    assert _wait(lambda: _once(cluster, "master2", got[0], got[1], w2) == 409, timeout=10)
