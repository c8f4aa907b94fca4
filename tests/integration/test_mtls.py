"""Inside the cluster every call is mutual TLS, and peers authorize each other by SPIFFE identity:
only masters may call workers, only workers may report results, only masters may forward calls.
Each refusal is shown beside the legitimate path still working."""
import datetime
import http.client
import json
import ssl

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from histo.testing.cluster import sample_image
from .cluster_fixture import NET

TASK_HEADERS = {"X-Histo-Job": "abc", "X-Histo-Task": "0", "X-Histo-Attempt": "forged", "X-Histo-Phase": "equalize",
                "X-Histo-Image-Mode": "L", "X-Histo-Width": "4", "X-Histo-Rows": "1",
                "X-Histo-Reply-To": f"https://{NET}.21:8443"}


def _ctx(cluster, as_service: str | None = None, cert=None, key=None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=cluster.ca)
    if as_service:
        tls = cluster.service_dir(as_service) / "tls"
        # The service's cert file may be rotating under us: retry on a torn read.
        ctx.load_cert_chain(str(tls / "cert.pem"), str(tls / "key.pem"))
    elif cert:
        ctx.load_cert_chain(cert, key)
    return ctx


def call(cluster, target: str, path: str, *, as_service=None, cert=None, key=None, body=b"", headers=None,
         method="POST", source: str | None = None):
    """An internal call, made from `as_service`'s own address with its certificate (as that service
    would), or from `source` to play a thief holding copied files."""
    cfg = cluster.config(target)
    src = source or (cluster.config(as_service)["address"] if as_service else None)
    conn = http.client.HTTPSConnection(cfg["address"], cfg["internal_port"],
                                       context=_ctx(cluster, as_service, cert, key),
                                       timeout=10, source_address=(src, 0) if src else None)
    try:
        conn.request(method, path, body=body if method == "POST" else None, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def _job_still_works(cluster):
    status, doc = cluster.upload(sample_image(80, 60, "PNG"), mode="gray")
    assert status == 202
    assert cluster.wait_job(doc["id"])["state"] == "done"


def test_worker_refuses_client_without_certificate(cluster):
    with pytest.raises((ssl.SSLError, ConnectionError)):
        call(cluster, "worker1", "/internal/v1/status", method="GET")
    # a master's identity is accepted
    status, body = call(cluster, "worker1", "/internal/v1/status", as_service="master1", method="GET")
    assert status == 200 and json.loads(body)["name"] == "worker1"
    _job_still_works(cluster)


def test_worker_refuses_another_worker(cluster):
    status, body = call(cluster, "worker2", "/internal/v1/tasks", as_service="worker1", headers=TASK_HEADERS,
                        body=b"\0" * 4)
    assert status == 403 and json.loads(body)["error"] == "forbidden"
    # the same call from a master identity is authorized (and answered on its merits)
    status, _ = call(cluster, "worker2", "/internal/v1/tasks", as_service="master1",
                     headers={**TASK_HEADERS, "X-Histo-Task": "x"}, body=b"\0" * 4)
    assert status == 400


def test_master_accepts_results_only_from_workers(cluster):
    status, body = call(cluster, "master1", "/internal/v1/results", as_service="master2", headers=TASK_HEADERS,
                        body=b"[]")
    assert status == 403
    # a worker identity reaches the endpoint, but a forged result for no pending attempt is refused
    status, body = call(cluster, "master1", "/internal/v1/results", as_service="worker1", headers=TASK_HEADERS,
                        body=json.dumps([0] * 256).encode())
    assert status == 409 and json.loads(body)["error"] == "result_refused"
    _job_still_works(cluster)


def test_only_masters_may_forward_public_calls(cluster):
    token = cluster.token("uploader")
    status, _ = call(cluster, "master1", "/internal/v1/public/api/v1/jobs", as_service="worker1", method="GET",
                     headers={"Authorization": f"Bearer {token}"})
    assert status == 403
    status, body = call(cluster, "master1", "/internal/v1/public/api/v1/jobs", as_service="master2", method="GET",
                        headers={"Authorization": f"Bearer {token}"})
    assert status == 200 and "jobs" in json.loads(body)


def test_certificate_from_another_ca_is_refused(cluster, tmp_path):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "master1.histo.internal")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier("spiffe://histo.internal/master/master1")]), critical=False)
            .sign(key, hashes.SHA256()))
    (tmp_path / "c.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "k.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))
    with pytest.raises((ssl.SSLError, ConnectionError)):
        call(cluster, "worker1", "/internal/v1/status", cert=str(tmp_path / "c.pem"), key=str(tmp_path / "k.pem"),
             method="GET")
    status, _ = call(cluster, "worker1", "/internal/v1/status", as_service="master2", method="GET")
    assert status == 200


def test_certificate_copied_to_another_address_is_refused(cluster):
    thief = f"{NET}.99"
    status, body = call(cluster, "worker1", "/internal/v1/status", as_service="master1", method="GET", source=thief)
    assert status == 403 and json.loads(body)["error"] == "forbidden"
    status, _ = call(cluster, "master2", "/internal/v1/results", as_service="worker1", headers=TASK_HEADERS,
                     body=b"[]", source=thief)
    assert status == 403
    status, _ = call(cluster, "worker1", "/internal/v1/status", as_service="master1", method="GET")
    assert status == 200  # from its own address the same certificate works


def test_internal_certificates_carry_spiffe_ids(cluster):
    for name, role in (("master1", "master"), ("worker1", "worker")):
        cert = x509.load_pem_x509_certificates((cluster.service_dir(name) / "tls" / "cert.pem").read_bytes())[0]
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert sans.get_values_for_type(x509.UniformResourceIdentifier) == [f"spiffe://histo.internal/{role}/{name}"]
        life = cert.not_valid_after_utc - cert.not_valid_before_utc
        assert life <= datetime.timedelta(minutes=5), "tests run with short-lived certificates"
        assert oct((cluster.service_dir(name) / "tls" / "key.pem").stat().st_mode & 0o777) == "0o600"


def test_refusal_at_a_worker_reaches_the_secops_stream(cluster):
    import asyncio
    import time

    import aiohttp
    status, _ = call(cluster, "worker2", "/internal/v1/tasks", as_service="worker1", headers=TASK_HEADERS,
                     body=b"\0" * 4)
    assert status == 403

    async def wait_event():
        ctx = ssl.create_default_context(cafile=cluster.ca)
        async with aiohttp.ClientSession() as s:
            leader = cluster.leader()
            url = f"wss://{cluster.config(leader)['address']}:4443/api/v1/events"
            async with s.ws_connect(url, ssl=ctx) as ws:
                await ws.send_json({"type": "auth", "token": cluster.token("viewer")})
                deadline = time.time() + 15
                while time.time() < deadline:
                    msg = await ws.receive_json(timeout=15)
                    ev = msg.get("event", {})
                    if ev.get("kind") == "mtls_rejected" and ev.get("service") == "worker2" \
                            and "worker1" in ev.get("reason", ""):
                        return ev
        raise AssertionError("the worker's refusal never reached the dashboard")
    ev = asyncio.run(wait_event())
    assert "worker1" in ev["reason"]


def _dashboard_event(cluster, master: str, match, timeout: float = 20.0) -> dict:
    """The first event on `master`'s own dashboard stream (its recent history replayed first) that
    `match` accepts."""
    import asyncio
    import time

    import aiohttp

    async def wait_event() -> dict:
        ctx = ssl.create_default_context(cafile=cluster.ca)
        async with aiohttp.ClientSession() as s:
            url = f"wss://{cluster.config(master)['address']}:4443/api/v1/events"
            async with s.ws_connect(url, ssl=ctx) as ws:
                await ws.send_json({"type": "auth", "token": cluster.token("viewer")})
                deadline = time.time() + timeout
                while time.time() < deadline:
                    ev = (await ws.receive_json(timeout=timeout)).get("event", {})
                    if match(ev):
                        return ev
        raise AssertionError(f"no such event on {master}'s dashboard")
    return asyncio.run(wait_event())


def test_expired_certificate_refused_at_the_handshake_is_reported(cluster, tmp_path):
    """worker1's own certificate of the cluster's CA (OpenBao's pki_int, as worker1 issues them), once
    expired, presented from worker1's address to master1's internal port: the handshake is refused, so
    no request reaches the peer check (no mtls_rejected) — and master1 reports the refused handshake
    (tls_handshake_refused: the address, the listener, OpenSSL's reason; edge/conncap.py). The service's
    own certificate is accepted after it from the same address. A worker's listener reports too, relayed
    by the leader; no secret in any of it."""
    import time
    from pathlib import Path

    from histo.vault.client import ServiceVault

    w1 = cluster.config("worker1")
    v = ServiceVault(w1["vault_url"], w1["vault_ca"], host="worker1", role="worker", creds_dir=Path(w1["creds_dir"]),
                     source_address=w1["address"])
    v.login()
    try:
        bundle = v.issue_cert("2s")  # the role backdates not_before by 30 s; it ends 2 s from now
    finally:
        v.client.auth.token.revoke_self()
    (tmp_path / "cert.pem").write_text(bundle.cert_pem + bundle.chain_pem)
    (tmp_path / "key.pem").write_text(bundle.key_pem)
    time.sleep(max(0.0, bundle.not_after.timestamp() - time.time()) + 1.5)
    with pytest.raises((ssl.SSLError, ConnectionError)):
        call(cluster, "master1", "/internal/v1/results", cert=str(tmp_path / "cert.pem"), key=str(tmp_path / "key.pem"),
             headers=TASK_HEADERS, body=b"[]", source=w1["address"])
    ev = _dashboard_event(cluster, "master1", lambda e: e.get("kind") == "tls_handshake_refused"
                          and e.get("peer") == w1["address"])
    assert (ev["service"], ev["listener"], ev["reason"], ev["severity"]) == (
        "master1", "internal", "certificate has expired", "warning")
    # the legitimate path: worker1's own, valid certificate from the same address reaches the endpoint
    status, body = call(cluster, "master1", "/internal/v1/results", as_service="worker1", headers=TASK_HEADERS,
                        body=json.dumps([0] * 256).encode())
    assert status == 409 and json.loads(body)["error"] == "result_refused"
    log = (cluster.service_dir("master1") / "service.log").read_text(errors="replace")
    line = next(x for x in log.splitlines() if "tls_handshake_refused" in x and w1["address"] in x)
    assert "certificate has expired" in line
    assert bundle.key_pem.splitlines()[1] not in log and "BEGIN" not in line

    # a worker's internal listener: a client without a certificate, from an address of its own
    stranger = f"{NET}.98"
    with pytest.raises((ssl.SSLError, ConnectionError)):
        call(cluster, "worker2", "/internal/v1/status", method="GET", source=stranger)
    leader = cluster.leader()
    ev = _dashboard_event(cluster, leader, lambda e: e.get("kind") == "tls_handshake_refused"
                          and e.get("peer") == stranger)
    assert (ev["service"], ev.get("relayed_from"), ev["listener"], ev["reason"]) == (
        "worker2", "worker2", "internal", "no client certificate")
    status, _ = call(cluster, "worker2", "/internal/v1/status", as_service="master1", method="GET")
    assert status == 200
