"""Exhaustion without credentials or with one token, against the real cluster (issue 13, items 6-8):
connection caps and timeouts, the internal results endpoint judged by its headers, admission by cost
(decompression bombs, one pixel budget across masters), the event stream through the edge, and
malformed input answered 4xx with the JSON error body. Each attack is refused AND a legitimate user
is served meanwhile. Attackers use addresses NET.150-189 (no other test uses them)."""
from __future__ import annotations

import asyncio
import base64
import http.client
import json
import socket
import ssl
import struct
import time
import zlib
from concurrent.futures import ThreadPoolExecutor

from typing import Any

import aiohttp
import pytest

from histo.testing.cluster import Cluster, sample_image

from .test_edge import issue
from .cluster_fixture import NET

pytestmark = pytest.mark.long


def _hostport(url: str) -> tuple[str, int]:
    host, port = url.split("//")[1].split(":")
    return host, int(port)


def _legit_ok(cluster: Cluster) -> bool:
    status, doc = cluster.upload(sample_image(48, 32, "PNG"))
    return status == 202 and bool(cluster.wait_job(doc["id"])["state"] == "done")


# -- connections ----------------------------------------------------------------------------------------
def test_connection_cap_per_address_and_handshake_timeout(cluster: Cluster) -> None:
    host, port = _hostport(cluster.url)
    cap = cluster.config("master1").get("conn_per_address", 64)
    held = []
    try:
        for _ in range(cap + 10):  # plain TCP, no TLS: what costs an outsider nothing
            s = socket.create_connection((host, port), timeout=5, source_address=(f"{NET}.150", 0))
            held.append(s)
        time.sleep(0.3)
        closed = 0
        for s in held:
            s.settimeout(0.05)
            try:
                if s.recv(1) == b"":
                    closed += 1
            except (socket.timeout, BlockingIOError):
                pass
            except ConnectionResetError:
                closed += 1
        assert closed >= 10, f"only {closed} of the sockets over the cap were closed"
        # everyone else is served meanwhile, on both masters
        for url in cluster.urls:
            assert cluster.request("GET", "/api/v1/jobs", token=cluster.token("uploader"), url=url)[0] == 200
        assert _legit_ok(cluster)
        # the sockets that stay silent are closed by the handshake timeout
        timeout = cluster.config("master1").get("tls_handshake_timeout", 10.0)
        deadline = time.time() + timeout + 5
        open_left = [s for s in held]
        while open_left and time.time() < deadline:
            still = []
            for s in open_left:
                s.settimeout(0.05)
                try:
                    if s.recv(1) != b"":
                        still.append(s)
                except (socket.timeout, BlockingIOError):
                    still.append(s)
                except ConnectionResetError:
                    pass
            open_left = still
            time.sleep(0.2)
        assert not open_left, f"{len(open_left)} silent sockets still open after the handshake timeout"
        # and the address may connect again
        ctx = cluster.ssl_context()
        with socket.create_connection((host, port), timeout=5, source_address=(f"{NET}.150", 0)) as raw:
            with ctx.wrap_socket(raw, server_hostname=host) as tls:
                tls.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                assert tls.recv(64).startswith(b"HTTP/1.1 200")
    finally:
        for s in held:
            s.close()


def test_idle_keepalive_connection_is_closed(cluster: Cluster) -> None:
    host, port = _hostport(cluster.url)
    idle = cluster.config("master1").get("idle_timeout", 15.0)
    ctx = cluster.ssl_context()
    with socket.create_connection((host, port), timeout=5, source_address=(f"{NET}.151", 0)) as raw:
        with ctx.wrap_socket(raw, server_hostname=host) as tls:
            tls.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert tls.recv(4096).startswith(b"HTTP/1.1 200")
            t0 = time.time()
            tls.settimeout(idle + 10)
            while tls.recv(4096):
                pass
            assert time.time() - t0 < idle + 5


# -- the internal results endpoint -------------------------------------------------------------------------
def _worker_tls(cluster: Cluster, name: str) -> ssl.SSLContext:
    tls = cluster.service_dir(name) / "tls"
    ctx = ssl.create_default_context(cafile=str(tls / "ca.pem"))
    ctx.load_cert_chain(str(tls / "cert.pem"), str(tls / "key.pem"))
    return ctx


def test_results_endpoint_judges_headers_before_reading_a_body(cluster: Cluster) -> None:
    leader = cluster.leader() or "master1"
    cfg, wcfg = cluster.config(leader), cluster.config("worker1")
    hdr = {"X-Histo-Job": "nosuchjob", "X-Histo-Task": "0", "X-Histo-Attempt": "forged", "X-Histo-Phase": "equalize",
           "X-Histo-Image-Mode": "RGB", "X-Histo-Width": "8192", "X-Histo-Rows": "8192",
           "X-Histo-Reply-To": "https://x"}
    head = "POST /internal/v1/results HTTP/1.1\r\nHost: x\r\nContent-Length: 536870912\r\n" + "".join(
        f"{k}: {v}\r\n" for k, v in hdr.items()) + "\r\n"
    with socket.create_connection((cfg["address"], cfg["internal_port"]), timeout=10,
                                  source_address=(wcfg["address"], 0)) as raw:
        with _worker_tls(cluster, "worker1").wrap_socket(raw, server_hostname=cfg["address"]) as tls:
            t0 = time.time()
            tls.sendall(head.encode())  # 512 MiB announced, not one byte of it sent
            answer = tls.recv(4096)
            assert answer.startswith(b"HTTP/1.1 409"), answer[:200]
            assert time.time() - t0 < 2
            assert b"result_refused" in answer
    assert _legit_ok(cluster)


# -- admission by cost -------------------------------------------------------------------------------------
def _png_bomb(w: int, h: int) -> bytes:
    ihdr = b"IHDR" + struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    idat = b"IDAT" + zlib.compress(b"\0" * (1 << 16), 9)
    def chunk(c: bytes) -> bytes:
        return struct.pack(">I", len(c) - 4) + c + struct.pack(">I", zlib.crc32(c))
    return b"\x89PNG\r\n\x1a\n" + chunk(ihdr) + chunk(idat) + chunk(b"IEND")


def test_decompression_bombs_are_admitted_by_cost_once_across_masters(cluster: Cluster) -> None:
    cfg = cluster.config(cluster.leader() or "master1")
    budget = cfg.get("pixels_per_principal", 256_000_000)
    side = int((min(cfg.get("max_pixels", 64_000_000), budget)) ** 0.5)
    bomb = _png_bomb(side, side)
    assert len(bomb) < 200_000
    bomber = issue(cluster, "uploader", "bomber")
    allowed = budget // (side * side)
    n = allowed + 4
    with ThreadPoolExecutor(8) as pool:
        # half through each master: every master admits uploads and charges pixels x live masters,
        # so the cluster admits at most one budget
        futs = [pool.submit(cluster.upload, bomb, "luma", bomber, cluster.urls[i % 2]) for i in range(n)]
        legit = pool.submit(_legit_ok, cluster)
        replies = [f.result() for f in futs]
        assert legit.result()  # a legitimate user is served meanwhile
    statuses = [r[0] for r in replies]
    over = [s for s in statuses if s in (429, 503)]
    assert len(over) >= n - allowed, statuses
    assert all(s in (202, 400, 413, 429, 503) for s in statuses), statuses
    # An admitted bomb (its header is sound, its pixel data is not: a master never inflates it) fails on
    # the worker that decodes it, with the reason, at once; the worker keeps serving (the legit job above).
    for status, doc in replies:
        if status == 202:
            job = cluster.wait_job(doc["id"], token=bomber, long_poll=30)
            assert job["state"] == "failed" and "cannot be processed" in job["reason"], job
    status, headers, body = cluster.request(
        "POST", "/api/v1/jobs", token=bomber, body=_multipart(bomb),
        headers={"Content-Type": "multipart/form-data; boundary=b0undary"}, url=cluster.urls[1])
    assert status == 429 and int(headers["Retry-After"]) >= 1 and json.loads(body)["error"] == "over_budget"


def test_garbage_uploads_through_a_standby_are_throttled_per_principal(cluster: Cluster) -> None:
    """A standby stores uploads itself (nothing is relayed to the leader), so it counts the uploads it
    receives too: one token's stream of garbage through a standby's own address ends in 429, after at
    most that master's share of the principal's rate, while another user is served there."""
    leader = cluster.leader()
    standby = next(n for n in ("master1", "master2") if n != leader)
    url = next(u for u in cluster.urls if f"//{cluster.config(standby)['address']}:" in u)
    cfg = cluster.config(standby)
    burst, rate = cfg["upload_burst"], cfg["uploads_per_principal"]
    flooder = issue(cluster, "uploader", "garbage-flooder")
    garbage = _multipart(b"not an image at all")
    statuses: list[int] = []
    # one kept-alive connection, as a flooder would: the bucket refills at rate / 2 uploads a second, and a
    # new TLS connection per upload (cluster.request) sends barely more than that on a busy machine
    # (measured: 69 a second there, 338 kept alive), so the stream would never reach the 429
    conn = http.client.HTTPSConnection(*_hostport(url), context=cluster.ssl_context(), timeout=60)
    t0 = time.monotonic()
    try:
        for _ in range(4 * burst):
            conn.request("POST", "/api/v1/jobs", body=garbage,
                         headers={"Content-Type": "multipart/form-data; boundary=b0undary",
                                  "Authorization": f"Bearer {flooder}"})
            resp = conn.getresponse()
            status, headers, body = resp.status, dict(resp.headers), resp.read()
            statuses.append(status)
            if status == 429:
                break
    finally:
        conn.close()
    elapsed = time.monotonic() - t0
    assert statuses[-1] == 429, statuses[-5:]
    assert json.loads(body)["error"] == "rate_limited" and int(headers["Retry-After"]) >= 1
    refused = statuses[:-1]
    assert refused and all(400 <= s < 500 and s != 429 for s in refused), sorted(set(refused))
    # two live masters: each upload costs two tokens of this master's bucket (plus what refilled meanwhile)
    assert len(refused) <= burst / 2 + rate * elapsed / 2 + 1, (len(refused), elapsed)
    status, doc = cluster.upload(sample_image(40, 30, "PNG"), url=url)  # another principal, same master
    assert status == 202 and cluster.wait_job(doc["id"], url=url)["state"] == "done"


def _multipart(data: bytes) -> bytes:
    return (b'--b0undary\r\nContent-Disposition: form-data; name="image"; filename="x.png"\r\n'
            b"Content-Type: image/png\r\n\r\n" + data + b"\r\n--b0undary--\r\n")


# -- the event stream through the edge ---------------------------------------------------------------------
async def _ws(cluster: Cluster, token: str, source: str,
              url: str | None = None) -> tuple[aiohttp.ClientSession, aiohttp.ClientWebSocketResponse]:
    ctx = ssl.create_default_context(cafile=cluster.ca)
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(source, 0), ssl=ctx))
    ws = await session.ws_connect((url or cluster.url).replace("https", "wss") + "/api/v1/events")
    await ws.send_json({"type": "auth", "token": token})
    return session, ws


def test_event_stream_is_throttled_like_http(cluster: Cluster) -> None:
    src = f"{NET}.160"

    async def run() -> list[Any]:
        out: list[Any] = []
        for _ in range(12):
            try:
                session, ws = await _ws(cluster, "forged.token.value", src)
                msg = await ws.receive(timeout=5)
                out.append(ws.close_code if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
                           else msg.type)
                await session.close()
            except aiohttp.WSServerHandshakeError as exc:
                out.append(exc.status)
                await session.close() if "session" in dir() else None
        return out
    codes = asyncio.run(run())
    assert codes[0] == 4401 and codes[-1] == 429, codes
    # the address is throttled for HTTP too; everyone else is served
    from histo.testing.attacker import get_from
    assert get_from(cluster, src, "/api/v1/jobs", cluster.token("uploader"))[0] == 429
    assert get_from(cluster, f"{NET}.161", "/api/v1/jobs", cluster.token("uploader"))[0] == 200


def test_event_stream_ends_on_revocation_and_on_expiry(cluster: Cluster) -> None:
    erin = issue(cluster, "viewer", "erin")
    brief = issue(cluster, "viewer", "brief", ttl=4)
    jti = json.loads(base64.urlsafe_b64decode(erin.split(".")[1] + "==="))["jti"]

    async def run() -> tuple[float, float, bool]:
        s1, revoked = await _ws(cluster, erin, f"{NET}.162")
        s2, expiring = await _ws(cluster, brief, f"{NET}.162", cluster.urls[1])
        s3, legit = await _ws(cluster, cluster.token("viewer"), f"{NET}.163")
        for ws in (revoked, expiring, legit):
            assert (await ws.receive_json(timeout=5))["type"] == "ready"
        t0 = time.time()
        status, _, _ = await asyncio.get_running_loop().run_in_executor(None, lambda: cluster.request(
            "POST", "/api/v1/tokens/revoke", token=cluster.token("admin"), body=json.dumps({"jti": jti}).encode(),
            headers={"Content-Type": "application/json"}))
        assert status == 200

        async def until_closed(ws: aiohttp.ClientWebSocketResponse) -> float:
            while True:
                msg = await ws.receive(timeout=15)
                if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING):
                    assert msg.data == 4401 or ws.close_code == 4401, (msg, ws.close_code)
                    return time.time() - t0
        t_rev, t_exp = await asyncio.gather(until_closed(revoked), until_closed(expiring))
        await asyncio.sleep(0.5)
        still = not legit.closed
        for s in (s1, s2, s3):
            await s.close()
        return t_rev, t_exp, still
    t_rev, t_exp, legit_open = asyncio.run(run())
    assert t_rev < 5 and t_exp < 8 and legit_open, (t_rev, t_exp, legit_open)


# -- malformed input ---------------------------------------------------------------------------------------
MALFORMED = {
    "nested multipart": ((b'--o\r\nContent-Disposition: form-data; name="image"\r\n'
                         b'Content-Type: multipart/mixed; boundary=i\r\n\r\n--i\r\nContent-Type: image/png\r\n\r\n'
                         b"\x89PNG\r\n\x1a\n\r\n--i--\r\n\r\n--o--\r\n"), "multipart/form-data; boundary=o"),
    "nested multipart first": ((b"--o\r\nContent-Type: multipart/mixed; boundary=i\r\n\r\n--i\r\n\r\nx\r\n--i--\r\n"
                               b"\r\n--o--\r\n"), "multipart/form-data; boundary=o"),
    "unknown charset": ((b'--o\r\nContent-Disposition: form-data; name="mode"\r\n'
                        b"Content-Type: text/plain; charset=x-no-such-charset\r\n\r\nluma\r\n--o--\r\n"),
                        "multipart/form-data; boundary=o"),
    "bad transfer encoding": ((b'--o\r\nContent-Disposition: form-data; name="mode"\r\n'
                              b"Content-Transfer-Encoding: x-rot13\r\n\r\nluma\r\n--o--\r\n"),
                              "multipart/form-data; boundary=o"),
    "mode not utf-8": (b'--o\r\nContent-Disposition: form-data; name="mode"\r\n\r\n\xff\xfe\r\n--o--\r\n',
                       "multipart/form-data; boundary=o"),
    "part without a name": (b"--o\r\nContent-Disposition: form-data\r\n\r\nxx\r\n--o--\r\n",
                            "multipart/form-data; boundary=o"),
    "no disposition": (b"--o\r\nContent-Type: image/png\r\n\r\nxx\r\n--o--\r\n", "multipart/form-data; boundary=o"),
    "boundary missing": (b"--o\r\n\r\n--o--\r\n", "multipart/form-data"),
    "boundary mismatch": (b"--zzz\r\nContent-Disposition: form-data; name=image\r\n\r\nx\r\n--zzz--\r\n",
                          "multipart/form-data; boundary=o"),
    "boundary too long": (b"--" + b"o" * 200 + b"\r\n\r\n", "multipart/form-data; boundary=" + "o" * 200),
    "unterminated": (b'--o\r\nContent-Disposition: form-data; name="image"\r\n\r\n\x89PNG', ("multipart/form-data; "
                     "boundary=o")),
    "header abuse": (b"--o\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(300))
                     + b'Content-Disposition: form-data; name="image"\r\n\r\nx\r\n--o--\r\n',
                     "multipart/form-data; boundary=o"),
    "huge part header": (b"--o\r\nContent-Disposition: form-data; name=\"image\"; filename=\"" + b"a" * 100_000
                         + b"\"\r\n\r\nx\r\n--o--\r\n", "multipart/form-data; boundary=o"),
    "disposition garbage": (b"--o\r\nContent-Disposition: ;;;=\"\r\n\r\nx\r\n--o--\r\n",
                            "multipart/form-data; boundary=o"),
    "base64 garbage": ((b'--o\r\nContent-Disposition: form-data; name="mode"\r\nContent-Transfer-Encoding: base64\r\n'
                       b"\r\n!!!!\r\n--o--\r\n"), "multipart/form-data; boundary=o"),
    "gzip garbage": ((b'--o\r\nContent-Disposition: form-data; name="mode"\r\nContent-Encoding: gzip\r\n'
                     b"\r\nnotgzip\r\n--o--\r\n"), "multipart/form-data; boundary=o"),
}


def test_malformed_multipart_is_4xx_json_and_names_nothing_internal(cluster: Cluster) -> None:
    bad: list[tuple[str, str, int | str, bytes]] = []
    for name, (body, ctype) in MALFORMED.items():
        for url in cluster.urls:  # the standby forwards: its answer must be as clean
            status, _, raw = cluster.request("POST", "/api/v1/jobs", token=cluster.token("uploader"), body=body,
                                             headers={"Content-Type": ctype}, url=url)
            try:
                doc = json.loads(raw)
            except ValueError:
                doc = None
            if not (400 <= status < 500 and isinstance(doc, dict) and set(doc) == {"error", "message"}):
                bad.append((name, url, status, raw[:120]))
            elif any(w in raw for w in (b"worker", b"master1", b"master2", b"127.", b"Error", b"Exception")):
                bad.append((name, url, "leak", raw[:200]))
    assert not bad, bad
    assert _legit_ok(cluster)


def test_what_aiohttp_parser_refuses_is_json_too(cluster: Cluster) -> None:
    host, port = _hostport(cluster.url)
    ctx = cluster.ssl_context()
    cases = [b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n",
             b"\x16\x03garbage\r\n\r\n",
             b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n",
             b"POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
             b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
             b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(500)) + b"\r\n"]
    for raw in cases:
        with socket.create_connection((host, port), timeout=5, source_address=(f"{NET}.170", 0)) as s:
            with ctx.wrap_socket(s, server_hostname=host) as tls:
                tls.sendall(raw)
                data = b""
                while chunk := tls.recv(65536):
                    data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        status = int(head.split()[1])
        assert 400 <= status < 500 and set(json.loads(body)) == {"error", "message"}, (raw[:40], data[:300])
        assert b"application/json" in head
    assert cluster.request("GET", "/api/v1/jobs", token=cluster.token("uploader"))[0] == 200
