"""aiohttp pieces of the public edge: security headers, JSON errors (never a traceback in a body),
the json_error helper every handler raises, and the bearer-token reader."""
from __future__ import annotations

import json
import logging
from typing import Awaitable, Callable, Mapping

from aiohttp import web

from ..zk.client import COORDINATION_LOST

log = logging.getLogger("histo.http")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
       "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
SECURITY_HEADERS = {
    "Strict-Transport-Security": "max-age=31536000; includeSubDomains",
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=(), usb=()",
}
# The error code of a status when the raiser did not choose one (e.g. aiohttp's own 404/405/413).
CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
         408: "timeout", 409: "conflict", 410: "gone", 411: "length_required", 413: "too_large",
         414: "uri_too_long", 415: "unsupported_type", 416: "bad_range", 422: "unprocessable",
         429: "rate_limited", 431: "headers_too_large", 500: "internal", 501: "not_implemented",
         502: "bad_gateway", 503: "unavailable", 504: "timeout"}
_MESSAGES = {404: "no such resource", 405: "method not allowed here", 413: "the request body is too large",
             500: "internal error"}
_KEEP = ("Retry-After", "WWW-Authenticate", "Allow")


def _exception_classes() -> dict[int, type[web.HTTPException]]:
    classes: dict[int, type[web.HTTPException]] = {}
    for name in dir(web):
        cls = getattr(web, name)
        if isinstance(cls, type) and issubclass(cls, web.HTTPError) and cls.status_code >= 400:
            classes.setdefault(cls.status_code, cls)
    return classes


_CLASSES = _exception_classes()


def json_error(status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> web.HTTPException:
    """An HTTPException of the right class for `status` (so `except web.HTTPNotFound` still works)
    whose body is {"error": code, "message": message}. Raise it."""
    cls = _CLASSES.get(status)
    if cls is None:
        raise ValueError(f"not an HTTP error status: {status}")
    body = json.dumps({"error": code, "message": message})
    hdrs = dict(headers or {})
    kw = {"text": body, "content_type": "application/json"}
    if cls is web.HTTPMethodNotAllowed:
        allowed = [m.strip() for m in hdrs.pop("Allow", "").split(",") if m.strip()]
        exc: web.HTTPException = cls("-", allowed, headers=hdrs, **kw)
    elif cls is web.HTTPRequestEntityTooLarge:
        exc = cls(0, 0, headers=hdrs, **kw)
    else:
        exc = cls(headers=hdrs, **kw)
    return exc


# The request key under which the internal listener records the original client's address of a
# call forwarded by an authenticated master (never taken from a header on the public listener).
CLIENT_ADDR = "client_addr"


def client_addr(request: web.Request) -> str:
    """Who the request is from, for limits, audit and events: the forwarded client's address on a
    master-to-master call, else the TCP peer."""
    return request.get(CLIENT_ADDR) or request.remote or "-"


def bearer_token(request: web.Request) -> str | None:
    """The token of `Authorization: Bearer <token>` (scheme case-insensitive), else None."""
    value = request.headers.get("Authorization", "")
    scheme, _, token = value.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or any(c.isspace() for c in token):
        return None
    return token


# -- middlewares -----------------------------------------------------------------------------------

@web.middleware
async def security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Outermost: hardens every response, errors included."""
    try:
        resp = await handler(request)
    except web.HTTPException as exc:
        _harden(request, exc)
        raise
    if not resp.prepared:  # a prepared response (WebSocket, streamed) has sent its headers already
        _harden(request, resp)
    return resp


def _harden(request: web.Request, resp: web.StreamResponse | web.HTTPException) -> None:
    h = resp.headers
    for name, value in SECURITY_HEADERS.items():
        h.setdefault(name, value)
    if request.path.startswith(("/api/", "/internal/")):
        h["Cache-Control"] = "no-store"  # tokens, job data and images never sit in a cache


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error leaves as JSON with its status; an unexpected exception becomes a bare 500."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status >= 400 and exc.content_type != "application/json":
            raise _as_json(exc) from None
        raise
    except (ConnectionResetError, TimeoutError):
        raise  # the client went away; nothing to answer
    except COORDINATION_LOST as exc:  # the cluster's state, not the request, is the problem: come back later
        log.warning("%s %s: ZooKeeper unavailable (%s)", request.method, request.rel_url.path[:200],
                    type(exc).__name__)
        raise json_error(503, "coordination_unavailable", "the cluster's coordination service cannot be reached "
                         "right now; nothing was changed by this request unless its answer said so; try again "
                         "shortly", headers={"Retry-After": "2"}) from None
    except Exception:
        # the traceback goes to the server log only; the client learns nothing of the internals
        log.exception("unhandled error on %s %s", request.method, request.rel_url.path[:200])
        raise json_error(500, "internal", "internal error") from None


def _as_json(exc: web.HTTPException) -> web.HTTPException:
    status = exc.status if exc.status in _CLASSES else 500
    message = _MESSAGES.get(status) or exc.reason or "error"
    return json_error(status, CODES.get(status, "error"), message,
                      headers={k: v for k, v in exc.headers.items() if k in _KEEP})
