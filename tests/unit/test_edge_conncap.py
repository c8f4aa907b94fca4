"""Connection caps, handshake and idle timeouts, and JSON parser errors (edge/conncap.py), on a real
loopback TLS listener; admission by cost (edge/admission.py)."""
from __future__ import annotations

import asyncio
import json
import math
import socket
import ssl
from pathlib import Path

import pytest
from aiohttp import web

from histo.edge.admission import Admission, PixelBudget, Refused
from histo.edge.conncap import CappedSite, ConnectionGate, ConnLimits, ensure_file_limit
from histo.tls.selfsigned import ensure_bootstrap_tls


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _serve(tmp_path: Path, limits: ConnLimits) -> tuple[web.AppRunner, CappedSite, int, ssl.SSLContext]:
    ca, cert, key = ensure_bootstrap_tls(tmp_path, ["localhost"], ["127.0.0.1"])
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(str(cert), str(key))
    client_ctx = ssl.create_default_context(cafile=str(ca))

    async def hello(request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "peer": request.transport.get_extra_info("peername")[0]
                                  if request.transport else None})

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(float(request.query.get("s", "1")))
        return web.json_response({"slept": True})
    app = web.Application()
    app.router.add_get("/", hello)
    app.router.add_get("/slow", slow)
    runner = web.AppRunner(app, access_log=None, keepalive_timeout=limits.idle_timeout)
    await runner.setup()
    port = _free_port()
    site = CappedSite(runner, "127.0.0.1", port, ssl_context=server_ctx, limits=limits)
    await site.start()
    return runner, site, port, client_ctx


async def _get(port: int, ctx: ssl.SSLContext, path: str = "/", source: str = "127.0.0.1",
               raw: bytes | None = None) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname="localhost",
                                                   local_addr=(source, 0))
    writer.write(raw or f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def test_caps_per_address_and_total_and_legitimate_clients_still_served(tmp_path: Path) -> None:
    async def run() -> None:
        refused: list[tuple[str, str]] = []
        runner, site, port, ctx = await _serve(tmp_path, ConnLimits(per_address=3, total=5, handshake_timeout=1.0,
                                                                     idle_timeout=30))
        site.gate.on_refused = lambda a, r: refused.append((a, r))
        try:
            # the attacker holds 3 idle sockets (no TLS at all) from 127.0.0.2: its 4th is closed unread
            held = [await asyncio.open_connection("127.0.0.1", port, local_addr=("127.0.0.2", 0)) for _ in range(4)]
            await asyncio.sleep(0.2)
            assert site.gate.per_address.get("127.0.0.2") == 3
            assert await asyncio.wait_for(held[3][0].read(), 2) == b""
            assert refused and refused[0] == ("127.0.0.2", "per-address connection cap")
            assert (await _get(port, ctx))[0] == 200  # someone else is served meanwhile
            # the handshake timeout frees the attacker's sockets
            for r, _w in held[:3]:
                assert await asyncio.wait_for(r.read(), 5) == b""
            await asyncio.sleep(0.1)
            assert site.gate.per_address.get("127.0.0.2") is None and site.gate.total == 0
            # the global cap: 5 in all, from several addresses
            more = [await asyncio.open_connection("127.0.0.1", port, local_addr=(f"127.0.0.{i}", 0))
                    for i in (3, 3, 4, 4, 5, 6)]
            await asyncio.sleep(0.2)
            assert site.gate.total == 5 and refused[-1][1] == "global connection cap"
            for _r, w in more:
                w.close()
            await asyncio.sleep(0.3)
            assert site.gate.total == 0
            assert (await _get(port, ctx))[0] == 200
        finally:
            await runner.cleanup()
    asyncio.run(run())


def test_idle_connection_after_tls_is_closed_and_count_released(tmp_path: Path) -> None:
    async def run() -> None:
        runner, site, port, ctx = await _serve(tmp_path, ConnLimits(per_address=4, total=8, handshake_timeout=5,
                                                                     idle_timeout=1.0))
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname="localhost")
            writer.write(b"GET / HTTP/1.1\r\nHo")  # a request that never ends (slowloris)
            await writer.drain()
            assert site.gate.total == 1
            assert await asyncio.wait_for(reader.read(), 5) == b""
            await asyncio.sleep(0.1)
            assert site.gate.total == 0
            # a request in progress (a long poll) is not idle
            assert (await _get(port, ctx, "/slow?s=1.5"))[0] == 200
        finally:
            await runner.cleanup()
    asyncio.run(run())


@pytest.mark.parametrize("raw, status", [
    (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n", 431),
    (b"\x00\x01garbage\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", 400),
    (b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
])
def test_parser_errors_are_json(tmp_path: Path, raw: bytes, status: int) -> None:
    async def run() -> None:
        runner, _site, port, ctx = await _serve(tmp_path, ConnLimits())
        try:
            got, body = await _get(port, ctx, raw=raw)
            assert 400 <= got < 500, body
            doc = json.loads(body)
            assert set(doc) == {"error", "message"}
            assert got == status or status in (414, 431)  # aiohttp may fold these into 400
            assert b"Traceback" not in body and b"aiohttp" not in body
        finally:
            await runner.cleanup()
    asyncio.run(run())


def test_gate_counts() -> None:
    g = ConnectionGate(ConnLimits(per_address=1, total=2))
    assert g.admit("a") is None and g.admit("a") == "per-address connection cap"
    assert g.admit("b") is None and g.admit("c") == "global connection cap"
    g.release("a")
    assert g.admit("c") is None and g.refused == 2
    with pytest.raises(ValueError):
        ConnLimits(per_address=5, total=2)


def test_file_limit_is_raised_or_refused() -> None:
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert ensure_file_limit(min(soft, 256)) >= min(soft, 256)
    if hard != resource.RLIM_INFINITY:
        with pytest.raises(RuntimeError):
            ensure_file_limit(hard + 1)


def test_pixel_budget_per_principal() -> None:
    now = [0.0]
    b = PixelBudget(100, 10.0, clock=lambda: now[0])
    assert b.charge("alice", 60) == 0.0 and b.charge("alice", 60) == pytest.approx(2.0)
    assert b.charge("bob", 60) == 0.0  # another principal has its own budget
    now[0] = 2.0
    assert b.charge("alice", 60) == 0.0
    assert b.charge("alice", 101) == math.inf
    b.refund("alice", 60)
    assert b.charge("alice", 60) == 0.0


def test_decode_slots_bound_and_one_principal_never_takes_all() -> None:
    async def run() -> None:
        adm = Admission(pixels=10**9, window=60, decodes=2, jobs=3, wait=0.3)
        release = asyncio.Event()
        inside: list[str] = []

        async def decode(who: str) -> str:
            try:
                async with adm.decode_slot(who):
                    inside.append(who)
                    await release.wait()
                    return "ok"
            except Refused as exc:
                return f"{exc.status} {exc.code}"
        bomber = [asyncio.create_task(decode("mallory")) for _ in range(3)]
        await asyncio.sleep(0.05)
        legit = asyncio.create_task(decode("alice"))
        await asyncio.sleep(0.05)
        assert inside == ["mallory", "alice"] and adm.decoding == 2
        late = await asyncio.wait_for(asyncio.gather(*bomber[1:]), 2)
        assert late == ["503 busy", "503 busy"]
        release.set()
        assert await bomber[0] == "ok" and await legit == "ok" and adm.decoding == 0
        with pytest.raises(Refused) as exc:
            adm.check_jobs(3)
        assert exc.value.status == 503 and exc.value.retry_after >= 1
    asyncio.run(run())


def test_reads_and_jobs_per_principal() -> None:
    adm = Admission(pixels=10**9, window=60, decodes=2, jobs=4, reads=2)
    with adm.reading("mallory"), adm.reading("mallory"):
        with pytest.raises(Refused) as exc:
            with adm.reading("mallory"):
                pass
        assert exc.value.status == 429 and exc.value.code == "too_many_uploads"
        with adm.reading("alice"):
            pass
    with adm.reading("mallory"):
        pass
    adm.check_jobs(3, 1)
    with pytest.raises(Refused) as exc:
        adm.check_jobs(3, 2)
    assert exc.value.status == 429 and exc.value.code == "too_many_jobs"
