"""Internal calls between services: mutual TLS, and the peer's SPIFFE identity checked on both ends."""
from __future__ import annotations

import asyncio
import ssl
from contextvars import ContextVar
from typing import Callable, Mapping, NamedTuple

import aiohttp
from aiohttp import web
from aiohttp.typedefs import Middleware
from yarl import URL

from .edge.middleware import Handler, json_error

from .tls.identity import Identity, IdentityError, check_address, identity_from_peercert, require_role
from .tls.revocation import REVOKED, peer_serial


PEER = "peer"  # the request key holding the caller's verified Identity


class RevokedIdentity(IdentityError):
    """The peer's certificate serial is on Vault's CRL."""


def peer_identity(request: web.Request, allowed_roles: tuple[str, ...], trust_domain: str) -> Identity:
    """The verified identity of the client of an internal (mTLS) request, or IdentityError."""
    peercert = request.transport.get_extra_info("peercert") if request.transport else None
    ident = require_role(peercert, allowed_roles, trust_domain, peer_address=request.remote)
    serial = peer_serial(peercert)
    if REVOKED.is_revoked(serial):
        raise RevokedIdentity(f"certificate {serial:x} of {ident.uri} is revoked")
    if REVOKED.is_denied(ident.host):
        raise RevokedIdentity(f"{ident.uri} is quarantined by SecOps")
    REVOKED.track(request.transport, serial, ident.uri)
    return ident


def peer_check(trust_domain: str, allowed: Callable[[web.Request], tuple[str, ...]],
               on_refused: Callable[[web.Request, IdentityError], None]) -> Middleware:
    """The one check of who may call an internal listener (the master's and the worker's): the
    client certificate's SPIFFE identity must have a role that `allowed(request)` names, and its
    IP SAN must be the address it calls from. Refused callers get a JSON 403 and `on_refused`
    records them; allowed ones find their Identity at request[PEER]."""
    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            request[PEER] = peer_identity(request, allowed(request), trust_domain)
        except IdentityError as exc:
            on_refused(request, exc)
            err = json_error(403, "forbidden", "this peer identity may not call this endpoint")
            if isinstance(exc, RevokedIdentity):  # answer, then hang up: no keep-alive for it
                err.force_close()
                if request.transport is not None:
                    asyncio.get_running_loop().call_later(1.0, request.transport.close)
            raise err from None
        return await handler(request)
    return check


class Reply(NamedTuple):
    status: int
    body: bytes
    content_type: str
    peer: Identity
    headers: Mapping[str, str] = {}


class PeerRefused(Exception):
    """The server we called is not who it must be, or refused us."""


# (roles, host) the server of the current call must have: checked at the handshake, before a byte is sent
_expected: ContextVar[tuple[tuple[str, ...], str | None]] = ContextVar("histo_expected", default=((), None))


class IdentityConnector(aiohttp.TCPConnector):
    """Checks the server's SPIFFE identity right after each TLS handshake, before any byte of the
    request is sent (aiohttp releases a connection as soon as a short body is read, so a
    per-response check alone would not see the certificate)."""

    def __init__(self, trust_domain: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.trust_domain = trust_domain
        self.identities: dict[tuple[str, int], Identity] = {}

    async def _create_direct_connection(self, req, traces, timeout, **kwargs):
        transport, proto = await super()._create_direct_connection(req, traces, timeout, **kwargs)
        try:
            peercert = transport.get_extra_info("peercert")
            ident = identity_from_peercert(peercert, self.trust_domain)
            roles, host = _expected.get()
            if roles and ident.role not in roles:
                raise IdentityError(f"{ident.uri} is not a {'/'.join(roles)}")
            if host is not None and ident.host != host:
                raise IdentityError(f"{ident.uri} is not {host}")
            peername = transport.get_extra_info("peername")
            check_address(peercert, ident, str(peername[0]) if peername else "")
            serial = peer_serial(peercert)
            if REVOKED.is_revoked(serial):
                raise IdentityError(f"certificate of {ident.uri} is revoked")
            if REVOKED.is_denied(ident.host):
                raise IdentityError(f"{ident.uri} is quarantined by SecOps")
        except IdentityError as exc:
            transport.close()
            raise PeerRefused(f"server identity refused: {exc}") from None
        REVOKED.track(transport, serial, ident.uri)
        self.identities[(req.host, req.port)] = ident
        return transport, proto


class InternalClient:
    """A keep-alive pool of mTLS connections to other services of the cluster."""

    def __init__(self, client_ctx: ssl.SSLContext, trust_domain: str, source_address: str | None = None,
                 timeout: float = 30.0) -> None:
        self.trust_domain = trust_domain
        self._ctx = client_ctx
        self._source = source_address
        self._timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=5)
        self._session: aiohttp.ClientSession | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = IdentityConnector(
                self.trust_domain, ssl=self._ctx, limit=64, limit_per_host=16, keepalive_timeout=30,
                local_addr=(self._source, 0) if self._source else None)
            self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout)
        return self._session

    async def request(self, method: str, url: str, expect_roles: tuple[str, ...], *,
                      headers: dict | None = None, data: bytes | memoryview | None = None,
                      json: object = None, expect_host: str | None = None,
                      timeout: float | None = None, max_body: int | None = None) -> "Reply":
        """`expect_host`: the server must also be that host (the member the caller looked up), not
        merely some service of the right role. `max_body`: a longer answer is refused unread."""
        session = self._get_session()
        # A pooled connection was checked when it was made, maybe for another call: check what it is
        # known to be against this call's expectations before its body goes out.
        target = URL(url)
        known = session.connector.identities.get((target.host, target.port))  # type: ignore[union-attr]
        if known is not None and (known.role not in expect_roles
                                  or (expect_host is not None and known.host != expect_host)):
            raise PeerRefused(f"server identity refused: {known.uri} is not "
                              f"{expect_host or '/'.join(expect_roles)}")
        token = _expected.set((expect_roles, expect_host))
        kw = {"timeout": aiohttp.ClientTimeout(total=timeout, sock_connect=min(timeout, 5))} if timeout else {}
        try:
            async with session.request(method, url, headers=headers, data=data, json=json, **kw) as resp:
                if max_body is None:
                    body = await resp.read()
                else:
                    body = await resp.content.read(max_body + 1)
                    if len(body) > max_body:
                        raise PeerRefused(f"answer from {url.split('/internal')[0]} larger than {max_body} bytes")
                ident = session.connector.identities.get((resp.url.host, resp.url.port))
        finally:
            _expected.reset(token)
        # A pooled connection was checked when it was made; check it against this call's roles too.
        if ident is None or ident.role not in expect_roles:
            raise PeerRefused(f"server identity refused: {ident.uri if ident else 'unknown'} is not a "
                              f"{'/'.join(expect_roles)}")
        if expect_host is not None and ident.host != expect_host:
            raise PeerRefused(f"server identity refused: {ident.uri} is not {expect_host}")
        return Reply(resp.status, body, resp.headers.get("Content-Type", ""), ident, dict(resp.headers))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            await asyncio.sleep(0)
