"""aiohttp middlewares of the public edge: security headers, JSON errors (never a traceback)."""
from __future__ import annotations

import json
import logging

from aiohttp import web

log = logging.getLogger("histo.http")

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
       "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
_REASONS = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
            409: "conflict", 413: "too_large", 415: "unsupported_type", 429: "rate_limited", 503: "unavailable"}


def json_error(status: int, code: str, message: str, headers: dict | None = None) -> web.HTTPException:
    cls = web.HTTPException
    for candidate in (web.HTTPBadRequest, web.HTTPUnauthorized, web.HTTPForbidden, web.HTTPNotFound,
                      web.HTTPMethodNotAllowed, web.HTTPConflict, web.HTTPRequestEntityTooLarge,
                      web.HTTPUnsupportedMediaType, web.HTTPTooManyRequests, web.HTTPServiceUnavailable,
                      web.HTTPGone, web.HTTPInternalServerError):
        if candidate.status_code == status:
            cls = candidate
            break
    body = json.dumps({"error": code, "message": message})
    if cls is web.HTTPMethodNotAllowed:
        return web.HTTPMethodNotAllowed("?", [], text=body, content_type="application/json", headers=headers)
    if cls is web.HTTPRequestEntityTooLarge:
        return web.HTTPRequestEntityTooLarge(0, 0, text=body, content_type="application/json", headers=headers)
    exc = cls(text=body, content_type="application/json", headers=headers)
    return exc


def bearer_token(request: web.Request) -> str | None:
    value = request.headers.get("Authorization", "")
    if value[:7].lower() == "bearer " and len(value) > 7:
        return value[7:].strip()
    return None


@web.middleware
async def security_headers(request: web.Request, handler):
    try:
        resp = await handler(request)
    except web.HTTPException as exc:
        _harden(request, exc)
        raise
    _harden(request, resp)
    return resp


def _harden(request: web.Request, resp) -> None:
    h = resp.headers
    h.setdefault("Strict-Transport-Security", "max-age=31536000; includeSubDomains")
    h.setdefault("Content-Security-Policy", CSP)
    h.setdefault("X-Content-Type-Options", "nosniff")
    h.setdefault("X-Frame-Options", "DENY")
    h.setdefault("Referrer-Policy", "no-referrer")
    if request.path.startswith("/api/") or request.path.startswith("/internal/"):
        h["Cache-Control"] = "no-store"


@web.middleware
async def json_errors(request: web.Request, handler):
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status >= 400 and exc.content_type != "application/json":
            code = _REASONS.get(exc.status, "error")
            message = exc.reason if exc.status != 413 else "the request body is too large"
            raise json_error(exc.status, code, message, headers=_keep(exc.headers)) from None
        raise
    except (ConnectionResetError, TimeoutError):
        raise
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        raise json_error(500, "internal", "internal error") from None


def _keep(headers) -> dict:
    return {k: v for k, v in headers.items() if k in ("Retry-After", "WWW-Authenticate", "Allow")}
