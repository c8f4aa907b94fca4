"""Connection caps and timeouts for every histo listener (public and internal).

aiohttp's own TCPSite hands each accepted socket straight to a TLS handshake and then to a request
handler with a keep-alive of an hour, counting nothing. `CappedSite` accepts plain TCP itself, so a
connection is judged by its peer address *before* any TLS work is spent on it:

- at most `per_address` open connections per client address, `total` in all (handshakes included);
  a connection over a cap is closed at once, unread;
- the TLS handshake must finish within `handshake_timeout` seconds;
- an idle connection (no request in progress) is closed after `idle_timeout` seconds — aiohttp's
  keep-alive timer, which also runs from the accept, so a socket that never sends a request goes too.

A handshake that a listener requiring client certificates (the internal mTLS one) refuses for the
client's certificate — none, expired or not yet valid, of another CA, otherwise unverifiable — never
reaches the peer check that reports `mtls_rejected`; `handshake_refusal` names it and the site's
`on_handshake_refused` reports it (`HandshakeReporter`: a `tls_handshake_refused` event, bounded per
address and in all). Every other failure (a reset, a timeout, plaintext or an old protocol, a scanner's
probe; anything on the public listener, which asks for no certificate) is noise, logged at debug.

Errors that aiohttp's HTTP parser raises itself (a bad request line, header abuse, huge headers)
never reach the application's middlewares; `JsonRequestHandler` answers them with the same JSON
error body `{"error", "message"}` as every other error, and names nothing internal."""
from __future__ import annotations

import asyncio
import json
import logging
import socket
import ssl
from dataclasses import dataclass, field
from typing import Any, Callable

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from .middleware import CODES, SECURITY_HEADERS
from .ratelimit import RateLimiter

IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)  # Linux <netinet/in.h>

log = logging.getLogger("histo.conncap")

OnRefused = Callable[[str, str], None]  # (address, reason)
OnHandshakeRefused = Callable[[str, str, str], None]  # (address, listener, reason)

# OpenSSL's reasons for a client certificate refused that carry no verify_message: a client that
# sent none (TLS 1.2 and 1.3 alike, on a context with CERT_REQUIRED)
_NO_CERT_REASONS = {"PEER_DID_NOT_RETURN_A_CERTIFICATE": "no client certificate"}


def handshake_refusal(exc: BaseException, tls: ssl.SSLContext | None) -> str | None:
    """Why a listener that requires client certificates refused this handshake for the client's
    certificate (OpenSSL's verify message: "certificate has expired", "unable to get local issuer
    certificate", ...), or None when the failure is no such refusal (see the module docstring). The
    reason is OpenSSL's text about the certificate, never the certificate or anything secret."""
    if tls is None or tls.verify_mode != ssl.CERT_REQUIRED:
        return None
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (str(exc.verify_message or "").strip() or "certificate verify failed")[:120]
    if isinstance(exc, ssl.SSLError):
        return _NO_CERT_REASONS.get(str(exc.reason or ""))
    return None


@dataclass(frozen=True)
class ConnLimits:
    per_address: int = 64
    total: int = 4096
    handshake_timeout: float = 10.0
    idle_timeout: float = 15.0

    def __post_init__(self) -> None:
        if self.per_address < 1 or self.total < self.per_address:
            raise ValueError("connection caps: need 1 <= per_address <= total")
        if self.handshake_timeout <= 0 or self.idle_timeout <= 0:
            raise ValueError("connection timeouts must be > 0")


@dataclass
class ConnectionGate:
    """Counts open connections per address and in all; thread-unsafe (one event loop)."""
    limits: ConnLimits
    on_refused: OnRefused | None = None
    per_address: dict[str, int] = field(default_factory=dict)
    total: int = 0
    refused: int = 0

    def admit(self, addr: str) -> str | None:
        """None (and the connection counted) or the reason it is refused."""
        if self.total >= self.limits.total:
            reason = "global connection cap"
        elif self.per_address.get(addr, 0) >= self.limits.per_address:
            reason = "per-address connection cap"
        else:
            self.per_address[addr] = self.per_address.get(addr, 0) + 1
            self.total += 1
            return None
        self.refused += 1
        if self.on_refused is not None:
            try:
                self.on_refused(addr, reason)
            except Exception:  # noqa: BLE001 - reporting must never break accepting
                log.debug("on_refused failed", exc_info=True)
        return reason

    def release(self, addr: str) -> None:
        n = self.per_address.get(addr, 0) - 1
        if n > 0:
            self.per_address[addr] = n
        else:
            self.per_address.pop(addr, None)
        self.total = max(0, self.total - 1)


# -- errors of aiohttp's own parser as JSON ------------------------------------------------------------
_PARSER_MESSAGES = {400: "malformed HTTP request", 413: "the request is too large",
                    414: "the request line is too long", 431: "the request headers are too large",
                    500: "internal error"}


def parser_error_response(status: int) -> web.Response:
    """The JSON answer to a request aiohttp's parser refused (or a failure before any handler ran)."""
    if status not in CODES:
        status = 400 if status < 500 else 500
    body = json.dumps({"error": CODES[status], "message": _PARSER_MESSAGES.get(status, "malformed HTTP request")})
    resp = web.Response(status=status, text=body, content_type="application/json",
                        headers={**SECURITY_HEADERS, "Cache-Control": "no-store"})
    resp.force_close()
    return resp


class JsonRequestHandler(RequestHandler):
    """aiohttp's request handler with JSON error bodies, and a hook when the connection ends."""

    on_lost: Callable[[], None] | None = None

    def handle_error(self, request: BaseRequest, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if status >= 500:
            log.error("error before any handler on a request from %s", request.remote, exc_info=exc)
        else:
            log.debug("malformed request from %s: %s", request.remote, message)
        if request.writer.output_size > 0:
            raise ConnectionError("response already started; cannot send an error")
        return parser_error_response(status)

    def connection_lost(self, exc: BaseException | None) -> None:
        try:
            super().connection_lost(exc)
        finally:
            hook, self.on_lost = self.on_lost, None
            if hook is not None:
                hook()


class _Early(asyncio.Protocol):
    """Holds what TLS delivers between the handshake's end and the request handler taking over."""

    def __init__(self) -> None:
        self.data: list[bytes] = []
        self.eof = False
        self.lost = False

    def data_received(self, data: bytes) -> None:
        self.data.append(data)

    def eof_received(self) -> bool | None:
        self.eof = True
        return True

    def connection_lost(self, exc: BaseException | None) -> None:
        self.lost = True


class _Gate(asyncio.Protocol):
    """The first protocol of an accepted socket: admit by address, then TLS, then aiohttp's handler."""

    def __init__(self, site: "CappedSite") -> None:
        self.site = site
        self.addr = "-"
        self.counted = False
        self.task: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.pause_reading()  # nothing is read before the address is judged and TLS starts
        peer = transport.get_extra_info("peername")
        self.addr = str(peer[0]) if isinstance(peer, tuple) and peer else "-"
        if self.site.gate.admit(self.addr) is not None:
            transport.abort()
            return
        self.counted = True
        self.task = asyncio.get_running_loop().create_task(self._start(transport))

    def _release(self) -> None:
        if self.counted:
            self.counted = False
            self.site.gate.release(self.addr)

    async def _start(self, transport: asyncio.Transport) -> None:
        loop = asyncio.get_running_loop()
        early = _Early()
        try:
            if self.site.tls is None:
                tls: asyncio.Transport = transport
            else:
                started = await loop.start_tls(transport, early, self.site.tls, server_side=True,
                                               ssl_handshake_timeout=self.site.gate.limits.handshake_timeout)
                if started is None:
                    raise ConnectionError("TLS did not start")
                tls = started
        except (OSError, ssl.SSLError, ConnectionError, asyncio.TimeoutError, RuntimeError) as exc:
            reason = handshake_refusal(exc, self.site.tls)
            report = self.site.on_handshake_refused
            if reason is not None and report is not None:
                try:
                    report(self.addr, self.site.listener, reason)
                except Exception:  # noqa: BLE001 - reporting must never break accepting
                    log.debug("on_handshake_refused failed", exc_info=True)
            else:
                log.debug("handshake with %s failed: %s", self.addr, exc)
            transport.abort()
            self._release()
            return
        except asyncio.CancelledError:
            transport.abort()
            self._release()
            raise
        if early.lost:
            self._release()
            return
        handler = self.site.make_handler()
        handler.on_lost = self._release
        tls.set_protocol(handler)
        handler.connection_made(tls)
        for chunk in early.data:  # application data that came with the end of the handshake
            handler.data_received(chunk)
        if early.eof:
            handler.eof_received()
        if self.site.tls is None:
            transport.resume_reading()

    def data_received(self, data: bytes) -> None:  # reading is paused; nothing arrives here
        pass

    def connection_lost(self, exc: BaseException | None) -> None:
        # Only before TLS started (afterwards the handler gets it): the handshake task cleans up.
        if self.task is None:
            self._release()


class CappedSite(web.TCPSite):
    """A TCPSite whose connections go through a ConnectionGate (see the module docstring)."""

    def __init__(self, runner: web.AppRunner, host: str, port: int, *, ssl_context: ssl.SSLContext | None,
                 limits: ConnLimits, on_refused: OnRefused | None = None, backlog: int = 512,
                 reuse_port: bool = False, freebind: bool = False, listener: str = "internal",
                 on_handshake_refused: OnHandshakeRefused | None = None) -> None:
        super().__init__(runner, host, port, ssl_context=ssl_context, backlog=backlog, reuse_port=reuse_port)
        self.tls = ssl_context
        self.gate = ConnectionGate(limits, on_refused)
        self.listener = listener  # "internal" | "public": named in tls_handshake_refused events
        self.on_handshake_refused = on_handshake_refused
        # Bind an address this machine does not hold yet (a floating address keepalived moves here
        # later), per socket, rather than net.ipv4.ip_nonlocal_bind for the whole machine.
        self.freebind = freebind

    def make_handler(self) -> JsonRequestHandler:
        server = self._runner.server
        assert server is not None
        kwargs: dict[str, Any] = dict(server._kwargs)
        kwargs["keepalive_timeout"] = self.gate.limits.idle_timeout
        return JsonRequestHandler(server, loop=asyncio.get_running_loop(), **kwargs)

    async def start(self) -> None:
        await web.BaseSite.start(self)
        loop = asyncio.get_running_loop()
        if self.freebind:
            sock = socket.socket(socket.AF_INET6 if ":" in str(self._host) else socket.AF_INET, socket.SOCK_STREAM)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.setsockopt(socket.IPPROTO_IP, IP_FREEBIND, 1)
                sock.bind((str(self._host), self._port))
            except OSError:
                sock.close()
                raise
            self._server = await loop.create_server(lambda: _Gate(self), sock=sock, ssl=None, backlog=self._backlog)
        else:
            self._server = await loop.create_server(lambda: _Gate(self), self._host, self._port, ssl=None,
                                                    backlog=self._backlog, reuse_address=self._reuse_address,
                                                    reuse_port=self._reuse_port)
        self._bound_port = self._server.sockets[0].getsockname()[1] if self._server.sockets else self._port


# -- what a service needs ------------------------------------------------------------------------------
def limits_for(cfg: Any, public: bool) -> ConnLimits:
    """The caps of a service's public (master) or internal listener, from its ServiceConfig."""
    return ConnLimits(per_address=cfg.conn_per_address if public else cfg.internal_conn_per_address,
                      total=cfg.conn_total if public else cfg.internal_conn_total,
                      handshake_timeout=cfg.tls_handshake_timeout,
                      idle_timeout=cfg.idle_timeout if public else cfg.internal_idle_timeout)


def files_needed(cfg: Any) -> int:
    """Open files the caps allow at once, plus the margin for everything else."""
    listeners = cfg.internal_conn_total + (cfg.conn_total if cfg.role == "master" else 0)
    return int(listeners + cfg.fd_margin)


def ensure_file_limit(needed: int) -> int:
    """Raise the soft RLIMIT_NOFILE to `needed` if the hard limit allows; the soft limit in force.
    RuntimeError if it cannot cover `needed`: the caps would otherwise fail as EMFILE at random."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-file limit to %d: %s", target, exc)
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft != resource.RLIM_INFINITY and soft < needed:
        raise RuntimeError(f"the open-file limit is {soft}, below the {needed} the connection caps need: "
                           "raise LimitNOFILE or lower conn_total/internal_conn_total")
    return int(soft)


class ReportThrottle:
    """One report per address per `every` seconds (a flood of refusals is one SecOps event, not a flood)."""

    def __init__(self, report: Callable[..., None], every: float = 10.0, max_keys: int = 1024) -> None:
        self.report, self.every, self.max_keys = report, every, max_keys
        self._last: dict[str, float] = {}

    def __call__(self, addr: str, reason: str) -> None:
        import time
        now = time.monotonic()
        if now - self._last.get(addr, -1e9) < self.every:
            return
        if len(self._last) >= self.max_keys:
            self._last.clear()
        self._last[addr] = now
        self.report("connection_refused", severity="warning", where=addr, reason=reason)


class HandshakeReporter:
    """Refused TLS handshakes (`handshake_refusal`) as `tls_handshake_refused` SecOps events, bounded
    so that a scanner, a flood or a worker whose certificate lapsed cannot fill the record or the log:
    per address `burst` at once, then one per `every` seconds (edge/ratelimit.py RateLimiter), and at
    most `overall_burst` at once and `overall_rate` a second across all addresses (many forged source
    addresses). A refusal not reported is counted at debug level, and the count (`suppressed`) goes with
    that address's next report."""

    def __init__(self, report: Callable[..., None], burst: int = 3, every: float = 10.0,
                 overall_rate: float = 1.0, overall_burst: int = 20, max_keys: int = 1024,
                 clock: Callable[[], float] | None = None) -> None:
        import time
        tick = clock or time.monotonic
        self.report = report
        self.per_address = RateLimiter(1.0 / every, burst, clock=tick, max_keys=max_keys)
        self.overall = RateLimiter(overall_rate, overall_burst, clock=tick)
        self.max_keys = max_keys
        self.suppressed: dict[str, int] = {}  # address -> refusals not reported since its last report
        self.reported = 0

    def __call__(self, addr: str, listener: str, reason: str) -> None:
        if not (self.per_address.check(addr)[0] and self.overall.check("*")[0]):
            self.suppressed[addr] = self.suppressed.pop(addr, 0) + 1
            while len(self.suppressed) > self.max_keys:  # the oldest address's count goes first
                self.suppressed.pop(next(iter(self.suppressed)))
            log.debug("TLS handshake from %s refused on the %s listener (%s): not reported, rate-limited",
                      addr, listener, reason)
            return
        self.reported += 1
        self.report("tls_handshake_refused", severity="warning", peer=addr, listener=listener, reason=reason,
                    suppressed=self.suppressed.pop(addr, 0))
