"""The one serve skeleton of a histo service (master or worker), in aiohttp's cleanup_ctx style:
runtime start (Vault login, certificate, ZooKeeper session), the service's listeners, its
membership node, its background loops; on SIGTERM or SIGINT, everything in reverse, so a stopped
service's ZooKeeper session closes at once and its ephemeral nodes go with it (a restart does not
wait for a session to expire)."""
from __future__ import annotations

import asyncio
import logging
import signal
import ssl
from typing import Awaitable, NamedTuple, Protocol

from aiohttp import web

from .edge.conncap import (CappedSite, HandshakeReporter, ReportThrottle, ensure_file_limit, files_needed,
                           limits_for)
from .runtime import ServiceRuntime

log = logging.getLogger("histo.serve")


class Listener(NamedTuple):
    app: web.Application
    address: str
    port: int
    ssl_context: ssl.SSLContext
    public: bool = False  # the master's public listener (its own connection caps)
    # The same app on a second address: a master's floating public address (master/floating.py),
    # bound before this machine holds it (freebind) or shared with the other masters (reuse_port).
    also: str = ""
    also_shared: bool = False


class Service(Protocol):
    rt: ServiceRuntime

    async def setup(self) -> list[Listener]:
        """After the runtime started: build the apps (their cleanup_ctx owns their resources)."""

    async def started(self) -> None:
        """Listeners are up: join the cluster."""

    def background(self) -> list[Awaitable[None]]:
        """The service's own loops, run beside the runtime's upkeep until shutdown."""

    async def stopping(self) -> None:
        """Before the listeners close: leave the cluster."""


async def serve(service: Service) -> None:
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, main.cancel)  # type: ignore[union-attr]
        except (NotImplementedError, RuntimeError):  # not the main thread (tests): no handler
            pass
    rt = service.rt
    runners: list[web.AppRunner] = []
    try:
        ensure_file_limit(files_needed(rt.cfg))
        await loop.run_in_executor(None, rt.start)
        report = ReportThrottle(rt._emit)
        handshakes = HandshakeReporter(rt._emit)  # certificates the internal listener refused at the handshake
        for lst in await service.setup():
            public = lst.public or (rt.cfg.role == "master" and lst.port == rt.cfg.public_port)
            limits = limits_for(rt.cfg, public)
            runner = web.AppRunner(lst.app, access_log=None, keepalive_timeout=limits.idle_timeout)
            await runner.setup()
            runners.append(runner)
            listener = "public" if public else "internal"
            await CappedSite(runner, lst.address, lst.port, ssl_context=lst.ssl_context, limits=limits,
                             on_refused=report, backlog=512, listener=listener,
                             on_handshake_refused=handshakes).start()
            if lst.also:
                await CappedSite(runner, lst.also, lst.port, ssl_context=lst.ssl_context, limits=limits,
                                 on_refused=report, backlog=512, reuse_port=lst.also_shared,
                                 freebind=not lst.also_shared, listener=listener,
                                 on_handshake_refused=handshakes).start()
        await service.started()
        await asyncio.gather(rt.upkeep(), *service.background())
    except asyncio.CancelledError:
        log.info("%s stopping", rt.cfg.name)
    finally:
        try:
            await service.stopping()
        except Exception as exc:
            log.warning("while stopping: %s", exc)
        for runner in reversed(runners):
            await runner.cleanup()
        await loop.run_in_executor(None, rt.stop)


def run(service: Service) -> None:
    asyncio.run(serve(service))
