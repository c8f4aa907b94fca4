"""The public edge against the real cluster: roles, object-level checks, token refusals and
revocation, throttling, headers, size and pixel limits, audit log, the WebSocket, OpenAPI."""
import asyncio
import json
import ssl
import stat
import struct
import time
import zlib

import aiohttp
import hvac

from histo.edge.openapi import spec
from histo.edge.tokens import issue_token
from histo.testing.attacker import get_from
from histo.testing.cluster import sample_image
from .cluster_fixture import NET


def issue(cluster, role: str, sub: str, ttl: int = 600) -> str:
    topo = json.loads((cluster.root / "topology.json").read_text())
    signer = hvac.Client(url=f"https://{topo['net']}.10:8200", verify=str(cluster.root / "vault" / "tls" / "ca.pem"),
                         token=(cluster.root / "issuer-token").read_text().strip())
    return issue_token(signer, role=role, subject=sub, ttl_seconds=ttl)


def test_roles_are_enforced(cluster):
    data = sample_image(48, 32, "PNG")
    status, doc = cluster.upload(data, token=cluster.token("viewer"))
    assert status == 403 and doc["error"] == "forbidden"
    status, _, _ = cluster.request("GET", "/api/v1/cluster", token=cluster.token("uploader"))
    assert status == 403
    status, _, _ = cluster.request("GET", "/api/v1/cluster", token=cluster.token("viewer"))
    assert status == 200
    status, doc = cluster.upload(data, token=cluster.token("uploader"))
    assert status == 202


def test_another_users_job_is_not_found_like_an_unknown_one(cluster):
    bob = issue(cluster, "uploader", "bob")
    status, doc = cluster.upload(sample_image(40, 40, "JPEG"), token=cluster.token("uploader"))
    assert status == 202
    cluster.wait_job(doc["id"])
    for path in ("", "/result", "/histogram", "/histogram.png"):
        s_other, _, b_other = cluster.request("GET", f"/api/v1/jobs/{doc['id']}{path}", token=bob)
        s_unknown, _, b_unknown = cluster.request("GET", f"/api/v1/jobs/{'0' * 24}{path}", token=bob)
        assert s_other == s_unknown == 404 and json.loads(b_other) == json.loads(b_unknown)
        s_owner, _, _ = cluster.request("GET", f"/api/v1/jobs/{doc['id']}{path}", token=cluster.token("uploader"))
        s_admin, _, _ = cluster.request("GET", f"/api/v1/jobs/{doc['id']}{path}", token=cluster.token("admin"))
        assert s_owner == s_admin == 200
    _, _, raw = cluster.request("GET", "/api/v1/jobs", token=bob)
    assert doc["id"] not in raw.decode()
    _, _, raw = cluster.request("GET", "/api/v1/jobs", token=cluster.token("admin"))
    assert doc["id"] in raw.decode()


def test_revocation_reaches_every_master_within_seconds(cluster):
    carol = issue(cluster, "uploader", "carol")
    src = f"{NET}.97"  # carol's refusals must not throttle the other tests' address
    for url in cluster.urls:
        assert _from(cluster, src, "/api/v1/jobs", carol, url)[0] == 200
    jti = json.loads(__import__("base64").urlsafe_b64decode(carol.split(".")[1] + "==="))["jti"]
    status, _, _ = cluster.request("POST", "/api/v1/tokens/revoke", token=cluster.token("uploader"),
                                   body=json.dumps({"jti": jti}).encode(), headers={"Content-Type": "application/json"})
    assert status == 403  # only an admin revokes
    status, _, _ = cluster.request("POST", "/api/v1/tokens/revoke", token=cluster.token("admin"),
                                   body=json.dumps({"jti": jti}).encode(), headers={"Content-Type": "application/json"})
    assert status == 200
    deadline = time.time() + 5
    while time.time() < deadline:
        if all(_from(cluster, src, "/api/v1/jobs", carol, u)[0] == 401 for u in cluster.urls):
            break
        time.sleep(0.25)
    for url in cluster.urls:
        assert _from(cluster, src, "/api/v1/jobs", carol, url)[0] == 401
        assert cluster.request("GET", "/api/v1/jobs", token=cluster.token("uploader"), url=url)[0] == 200


def _from(cluster, source: str, path: str, token: str, url: str | None = None) -> tuple[int, dict]:
    return get_from(cluster, source, path, token, url)


def test_repeated_auth_failures_throttle_that_address_only(cluster):
    attacker = f"{NET}.99"
    statuses = [_from(cluster, attacker, "/api/v1/jobs", "forged.token.value")[0] for _ in range(12)]
    assert statuses[0] == 401 and statuses[-1] == 429
    status, headers = _from(cluster, attacker, "/api/v1/jobs", cluster.token("uploader"))
    assert status == 429 and int(headers["Retry-After"]) > 0  # even a good token, from the throttled address
    status, _ = _from(cluster, f"{NET}.98", "/api/v1/jobs", cluster.token("uploader"))
    assert status == 200  # everyone else still gets through


def _png_bomb(w: int, h: int) -> bytes:
    ihdr = b"IHDR" + struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    idat = b"IDAT" + zlib.compress(b"\0" * 1024)
    chunk = lambda c: struct.pack(">I", len(c) - 4) + c + struct.pack(">I", zlib.crc32(c))  # noqa: E731
    return b"\x89PNG\r\n\x1a\n" + chunk(ihdr) + chunk(idat) + chunk(b"IEND")


def test_size_and_pixel_limits(cluster):
    status, doc = cluster.upload(_png_bomb(60000, 60000))
    assert status == 413 and doc["error"] == "too_many_pixels"
    big = b"\xff\xd8\xff" + b"\0" * (17 * 1024 * 1024)  # over the test cluster's 16 MiB request limit
    status, doc = cluster.upload(big)
    assert status == 413 and doc["error"]
    status, doc = cluster.upload(sample_image(64, 64, "PNG"))
    assert status == 202


def test_security_headers_and_no_credential_in_html(cluster):
    status, headers, body = cluster.request("GET", "/")
    assert status == 200
    csp = headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert headers["X-Content-Type-Options"] == "nosniff" and "max-age" in headers["Strict-Transport-Security"]
    assert b"<script>" not in body and b"eyJ" not in body and b"Bearer ey" not in body
    status, headers, _ = cluster.request("GET", "/api/v1/jobs", token=cluster.token("uploader"))
    assert headers["Cache-Control"] == "no-store"
    status, headers, body = cluster.request("GET", "/api/v1/nope")
    assert status == 404 and json.loads(body)["error"] == "not_found"


def test_audit_log_records_decisions(cluster):
    cluster.request("GET", "/api/v1/jobs", token="garbage")
    cluster.request("GET", "/api/v1/cluster", token=cluster.token("uploader"))
    lines = []
    for name in ("master1", "master2"):
        path = cluster.service_dir(name) / "audit.log"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        lines += [json.loads(line) for line in path.read_text().splitlines()]
    assert {"deny", "allow"} <= {entry["decision"] for entry in lines}
    assert all({"ts", "who", "what", "where", "decision", "why"} <= set(entry) for entry in lines)
    assert not any("eyJ" in json.dumps(entry) for entry in lines)


def test_websocket_events_need_a_token_and_stream_secops(cluster):
    async def run():
        ctx = ssl.create_default_context(cafile=cluster.ca)
        async with aiohttp.ClientSession() as s:
            async with s.ws_connect(cluster.url.replace("https", "wss") + "/api/v1/events", ssl=ctx) as ws:
                await ws.send_json({"type": "auth", "token": "nope"})
                msg = await ws.receive(timeout=5)
                assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED) and ws.close_code == 4401
            async with s.ws_connect(cluster.url.replace("https", "wss") + "/api/v1/events", ssl=ctx) as ws:
                await ws.send_json({"type": "auth", "token": cluster.token("viewer")})
                assert (await ws.receive_json(timeout=5))["type"] == "ready"
                await asyncio.get_running_loop().run_in_executor(
                    None, lambda: cluster.request("GET", "/api/v1/jobs", token="bad.token.here"))
                deadline = time.time() + 10
                while time.time() < deadline:
                    msg = await ws.receive_json(timeout=10)
                    if msg["type"] == "event" and msg["event"]["kind"] == "auth_failure":
                        return
                raise AssertionError("no auth_failure event")
    asyncio.run(run())


def test_a_standby_streams_the_end_of_the_jobs_it_accepted(cluster):
    """The public address prefers a standby (roles/keepalived): a job accepted there runs on the leader,
    and the owner's event stream on the standby still hears that it is done (Master.follow), only the
    owner's."""
    from histo.testing.cluster import sample_image
    leader = cluster.leader()
    standby = next(n for n in ("master1", "master2") if n != leader)
    url = next(u for u in cluster.urls if f"//{cluster.config(standby)['address']}:" in u)

    async def run():
        ctx = ssl.create_default_context(cafile=cluster.ca)
        async with aiohttp.ClientSession() as s:
            async with s.ws_connect(url.replace("https", "wss") + "/api/v1/events", ssl=ctx) as owner, \
                    s.ws_connect(url.replace("https", "wss") + "/api/v1/events", ssl=ctx) as other:
                await owner.send_json({"type": "auth", "token": cluster.token("uploader")})
                await other.send_json({"type": "auth", "token": cluster.token("viewer")})
                assert (await owner.receive_json(timeout=5))["type"] == "ready"
                assert (await other.receive_json(timeout=5))["type"] == "ready"
                status, doc = await asyncio.get_running_loop().run_in_executor(
                    None, lambda: cluster.upload(sample_image(64, 48, "PNG"), url=url))
                assert status == 202, doc
                deadline = time.time() + 30
                while True:
                    try:
                        msg = await owner.receive_json(timeout=max(0.1, deadline - time.time()))
                    except asyncio.TimeoutError:
                        raise AssertionError("no job_progress for the owner's job on the standby") from None
                    event = msg.get("event") or {}
                    if event.get("kind") == "job_progress" and event.get("job") == doc["id"]:
                        assert event["state"] == "done" and event["progress"] == 1.0
                        break
                quiet = time.time() + 1
                while time.time() < quiet:  # the viewer's stream (not the owner) never names that job
                    try:
                        msg = await other.receive_json(timeout=max(0.05, quiet - time.time()))
                    except asyncio.TimeoutError:
                        break
                    assert (msg.get("event") or {}).get("job") != doc["id"], msg
    asyncio.run(run())


def test_openapi_is_served_and_covers_every_route(cluster):
    status, _, raw = cluster.request("GET", "/api/v1/openapi.json")
    served = json.loads(raw)
    assert status == 200 and served == spec()
    from histo.master import api
    from aiohttp import web

    class Fake:
        pass
    app = web.Application()
    api.add_routes(app, Fake(), "")
    routes = {r.resource.canonical for r in app.router.routes() if r.method != "HEAD"}
    assert routes == set(served["paths"]), routes ^ set(served["paths"])


def _cli(cluster, *args):
    import subprocess
    import sys
    topo = json.loads((cluster.root / "topology.json").read_text())
    return subprocess.run([sys.executable, "-m", "histo.cli", *args, "--vault-url", f"https://{topo['net']}.10:8200",
                           "--vault-ca", str(cluster.root / "vault" / "tls" / "ca.pem"),
                           "--token-file", str(cluster.root / "issuer-token")],
                          capture_output=True, text=True, timeout=60)


def test_token_command_and_key_rotation_without_downtime(cluster):
    out = _cli(cluster, "token", "issue", "--role", "uploader", "--subject", "dave", "--ttl", "15m")
    assert out.returncode == 0, out.stderr
    old = out.stdout.strip()
    assert cluster.request("GET", "/api/v1/jobs", token=old)[0] == 200
    # the signing key rotates in Vault: new tokens carry the new kid, old ones stay valid
    from histo.testing.attacker import root_client
    root_client(cluster).secrets.transit.rotate_key("histo-tokens", mount_point="transit")
    new = _cli(cluster, "token", "issue", "--role", "uploader", "--subject", "dave", "--ttl", "15m").stdout.strip()
    assert json.loads(__import__("base64").urlsafe_b64decode(new.split(".")[0] + "==="))["kid"] != \
        json.loads(__import__("base64").urlsafe_b64decode(old.split(".")[0] + "==="))["kid"]
    for url in cluster.urls:
        deadline = time.time() + 3  # a master fetches a new key at most once a second
        while cluster.request("GET", "/api/v1/jobs", token=new, url=url)[0] != 200 and time.time() < deadline:
            time.sleep(0.3)
        assert cluster.request("GET", "/api/v1/jobs", token=new, url=url)[0] == 200
        assert cluster.request("GET", "/api/v1/jobs", token=old, url=url)[0] == 200
    # bad input: one readable line, non-zero exit, no traceback
    bad = _cli(cluster, "token", "issue", "--role", "uploader", "--subject", "dave", "--ttl", "3h")
    assert bad.returncode != 0 and "Traceback" not in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
