"""Rate limits, failure throttling, audit lines, middlewares: refusals beside the legitimate path."""
import asyncio
import json
import stat

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from histo.edge.audit import AuditLog, redact
from histo.edge.events import EventBus
from histo.edge.middleware import json_error, json_errors, security_headers
from histo.edge.ratelimit import AuthFailureTracker, RateLimiter


def test_token_bucket_refuses_past_burst_and_refills():
    now = [0.0]
    rl = RateLimiter(rate_per_s=2, burst=3, clock=lambda: now[0])
    assert [rl.check("a")[0] for _ in range(4)] == [True, True, True, False]
    ok, retry = rl.check("a")
    assert not ok and 0 < retry <= 0.5
    assert rl.check("b")[0]  # another key is unaffected
    now[0] += 0.5
    assert rl.check("a")[0]


def test_auth_failures_block_one_address_for_a_while():
    now = [0.0]
    t = AuthFailureTracker(threshold=3, window_s=10, block_s=30, clock=lambda: now[0])
    assert [t.failure("x") for _ in range(3)] == [False, False, True]  # True once: raise one SecOps event
    assert t.blocked("x") == 30 and t.blocked("y") == 0
    now[0] += 31
    assert t.blocked("x") == 0


def test_audit_lines_are_json_private_and_redacted(tmp_path):
    log = AuditLog(tmp_path / "audit.log")
    log.record(who="alice", role="uploader", what="POST /api/v1/jobs", where="1.2.3.4", decision="deny",
               why="bad Bearer eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl")
    line = json.loads((tmp_path / "audit.log").read_text().splitlines()[0])
    assert line["decision"] == "deny" and "eyJ" not in line["why"] and "[redacted]" in line["why"]
    assert stat.S_IMODE((tmp_path / "audit.log").stat().st_mode) == 0o600
    assert redact("plain words") == "plain words"


def test_event_bus_replays_history_and_drops_for_slow_subscribers():
    async def run():
        bus = EventBus(history=5, queue_size=2)
        bus.bind(asyncio.get_running_loop())
        for i in range(7):
            bus.publish("auth_failure", severity="warning", n=i)
        assert [e["n"] for e in bus.history] == [2, 3, 4, 5, 6]
        sub = bus.subscribe()
        first = await sub.__anext__()
        assert first["kind"] == "auth_failure"
        await sub.aclose()
    asyncio.run(run())


def test_middlewares_json_errors_and_headers():
    async def ok(request):
        await request.read()  # aiohttp enforces client_max_size when the body is read
        return web.json_response({"ok": True})

    async def boom(request):
        raise RuntimeError("secret internals")

    async def limited(request):
        raise json_error(429, "rate_limited", "slow down", headers={"Retry-After": "3"})

    async def run():
        app = web.Application(middlewares=[security_headers, json_errors], client_max_size=10)
        app.router.add_get("/api/ok", ok)
        app.router.add_get("/api/boom", boom)
        app.router.add_get("/api/limited", limited)
        app.router.add_post("/api/ok", ok)
        async with TestClient(TestServer(app)) as c:
            r = await c.get("/api/ok")
            assert r.status == 200 and r.headers["X-Content-Type-Options"] == "nosniff"
            assert "frame-ancestors 'none'" in r.headers["Content-Security-Policy"]
            assert r.headers["Cache-Control"] == "no-store"
            r = await c.get("/api/boom")
            body = await r.json()
            assert r.status == 500 and body == {"error": "internal", "message": "internal error"}
            r = await c.get("/api/limited")
            assert r.status == 429 and r.headers["Retry-After"] == "3" and (await r.json())["error"] == "rate_limited"
            r = await c.get("/api/nothing")
            assert r.status == 404 and (await r.json())["error"] == "not_found"
            r = await c.post("/api/ok", data=b"x" * 100)
            assert r.status == 413 and (await r.json())["error"] == "too_large"
    asyncio.run(run())
