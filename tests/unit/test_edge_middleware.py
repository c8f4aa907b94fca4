"""The middlewares on a real aiohttp app (aiohttp.test_utils; no pytest plugin): every error is
JSON with the right status, no traceback leaks, security headers everywhere."""
import asyncio
import json
import logging

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer, make_mocked_request

from histo.edge.middleware import CSP, bearer_token, json_error, json_errors, security_headers


async def ok(request):
    await request.read()  # aiohttp enforces client_max_size when the body is read
    return web.json_response({"ok": True})


async def boom(request):
    raise RuntimeError("secret internals /etc/histo")


async def raise_status(request):
    status = int(request.match_info["status"])
    headers = {"Retry-After": "3"} if status in (429, 503) else None
    raise json_error(status, f"code{status}", "said so", headers=headers)


async def plain_forbidden(request):
    raise web.HTTPForbidden(text="plain text")


async def page(request):
    return web.Response(text="<p>hi</p>", content_type="text/html")


async def redirect(request):
    raise web.HTTPFound("/ui")


def make_app():
    app = web.Application(middlewares=[security_headers, json_errors], client_max_size=10)
    app.router.add_get("/api/ok", ok)
    app.router.add_post("/api/ok", ok)
    app.router.add_get("/api/boom", boom)
    app.router.add_get("/api/status/{status}", raise_status)
    app.router.add_get("/api/plain", plain_forbidden)
    app.router.add_get("/api/redirect", redirect)
    app.router.add_get("/", page)
    return app


def run(coro_fn):
    async def main():
        async with TestClient(TestServer(make_app())) as c:
            await coro_fn(c)
    asyncio.run(main())


def test_security_headers_on_pages_api_and_errors():
    async def go(c):
        for path, status in (("/", 200), ("/api/ok", 200), ("/api/boom", 500), ("/nope", 404)):
            r = await c.get(path)
            assert r.status == status
            h = r.headers
            assert h["Content-Security-Policy"] == CSP and "unsafe-inline" not in CSP
            assert h["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains"
            assert h["X-Content-Type-Options"] == "nosniff" and h["X-Frame-Options"] == "DENY"
            assert h["Referrer-Policy"] == "no-referrer"
            assert (h.get("Cache-Control") == "no-store") == path.startswith("/api/")
    run(go)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 405, 409, 413, 415, 429, 503])
def test_json_error_gives_status_code_and_message(status):
    async def go(c):
        r = await c.get(f"/api/status/{status}")
        assert r.status == status and r.content_type == "application/json"
        assert await r.json() == {"error": f"code{status}", "message": "said so"}
        if status in (429, 503):
            assert r.headers["Retry-After"] == "3"
    run(go)


def test_json_error_is_the_matching_aiohttp_class():
    assert isinstance(json_error(404, "not_found", "x"), web.HTTPNotFound)
    assert isinstance(json_error(413, "too_large", "x"), web.HTTPRequestEntityTooLarge)
    e = json_error(405, "method_not_allowed", "x", headers={"Allow": "GET"})
    assert isinstance(e, web.HTTPMethodNotAllowed) and e.headers["Allow"] == "GET"
    with pytest.raises(ValueError):
        json_error(200, "ok", "not an error")


def test_unexpected_exception_is_a_bare_500_logged_server_side(caplog):
    async def go(c):
        with caplog.at_level(logging.ERROR, logger="histo.http"):
            r = await c.get("/api/boom")
        body = await r.text()
        assert r.status == 500 and json.loads(body) == {"error": "internal", "message": "internal error"}
        assert "Traceback" not in body and "secret internals" not in body
    run(go)
    assert "secret internals" in caplog.text  # the operator still sees it


def test_aiohttp_own_errors_become_json():
    async def go(c):
        r = await c.get("/api/nothing")
        assert r.status == 404 and (await r.json())["error"] == "not_found"
        r = await c.delete("/api/ok")
        assert r.status == 405 and (await r.json())["error"] == "method_not_allowed"
        assert set(r.headers["Allow"].split(",")) >= {"GET", "POST"}
        r = await c.post("/api/ok", data=b"x" * 100)  # past client_max_size
        assert r.status == 413 and (await r.json())["error"] == "too_large"
        r = await c.get("/api/plain")
        assert r.status == 403 and (await r.json()) == {"error": "forbidden", "message": "Forbidden"}
        r = await c.get("/api/redirect", allow_redirects=False)
        assert r.status == 302 and r.headers["Location"] == "/ui"  # not an error: untouched
    run(go)


@pytest.mark.parametrize("value,expected", [
    ("Bearer abc.def.ghi", "abc.def.ghi"), ("bearer abc", "abc"), ("BEARER   abc  ", "abc"),
    ("Basic dXNlcjpwdw==", None), ("Bearer", None), ("Bearer ", None), ("abc", None), ("", None),
    ("Bearer a b", None),
])
def test_bearer_token(value, expected):
    headers = {"Authorization": value} if value else {}
    assert bearer_token(make_mocked_request("GET", "/", headers=headers)) == expected
