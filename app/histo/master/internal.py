"""The master's internal mTLS listener (port 8443): workers report task results here, and
other masters forward public calls here. Every caller is identified by its certificate."""
from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from aiohttp import web

from ..edge.middleware import CLIENT_ADDR, Handler, json_error, json_errors, security_headers
from ..protocol import ProtocolError, TaskHeader
from ..rpc import PEER, peer_check
from .scheduler import RefusedResult
from ..zk import acl as zkacl
from ..tls.identity import IdentityError
from . import api

if TYPE_CHECKING:
    from .service import Master

log = logging.getLogger("histo.internal")

PUBLIC_PREFIX = "/internal/v1/public"
RESULTS = "/internal/v1/results"
JOIN = "/internal/v1/join"


def build_app(master: "Master") -> web.Application:
    def allowed(request: web.Request) -> tuple[str, ...]:
        # Only workers report results; everything else here is for other masters.
        return ("worker",) if request.path in (RESULTS, JOIN) else ("master",)

    def refused(request: web.Request, exc: IdentityError) -> None:
        master.emit("mtls_rejected", severity="warning", reason=str(exc), peer=request.remote, path=request.path)
        master.audit.record(who="-", role="-", what=f"internal {request.method} {request.path}",
                            where=request.remote or "-", decision="deny", why=str(exc))

    @web.middleware
    async def forwarded(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith(PUBLIC_PREFIX):
            request["forwarded"] = True
            request[CLIENT_ADDR] = request.headers.get("X-Histo-Client-Addr", "-")[:64]
        return await handler(request)

    app = web.Application(client_max_size=master.cfg.max_upload_bytes,  # forwarded uploads; results read capped
                          middlewares=[security_headers, json_errors,
                                       peer_check(master.cfg.trust_domain, allowed, refused), forwarded])
    app.router.add_post(RESULTS, lambda r: results(master, r))
    app.router.add_get("/internal/v1/ping", lambda r: ping(master, r))
    app.router.add_post(JOIN, lambda r: join(master, r))
    api.add_routes(app, master, PUBLIC_PREFIX)
    return app


async def join(master: "Master", request: web.Request) -> web.Response:
    """A worker asks for its membership slot: made for the host its certificate names, whatever
    the request says (it carries nothing)."""
    host = request[PEER].host
    created = await asyncio.get_running_loop().run_in_executor(
        None, zkacl.ensure_worker_slot, master.rt.zk, master.rt.acl_ids, host, master.cfg.trust_domain)
    if created:
        master.emit("worker_slot_created", severity="info", worker=host)
    return web.json_response({"slot": zkacl.worker_slot(host)})


async def ping(master: "Master", request: web.Request) -> web.Response:
    """Liveness as other masters check it: this process's incarnation and whether it leads."""
    return web.json_response({"name": master.cfg.name, "incarnation": master.rt.incarnation,
                              "is_leader": master.is_leader, "leader": master.leader})


async def results(master: "Master", request: web.Request) -> web.Response:
    """A worker reports one task attempt's result; it must be the worker that attempt was given to."""
    worker = request[PEER].host
    try:
        hdr = TaskHeader.from_headers(request.headers)
    except ProtocolError as exc:
        raise json_error(400, "bad_result", str(exc)) from None
    if master.scheduler is None:
        raise json_error(409, "result_refused", "this master runs no jobs")
    # Judged by its headers before its body is read: no pending attempt, no read at all; else the
    # body is capped at what that attempt can carry.
    admitted = master.scheduler.admit_result(hdr, worker)
    if isinstance(admitted, RefusedResult):
        _refused(master, request, worker, hdr, admitted.reason)
        raise json_error(409, "result_refused", admitted.reason, headers={"Connection": "close"})
    if request.content_length is not None and request.content_length > admitted:
        _refused(master, request, worker, hdr, "result larger than its task attempt can be")
        raise json_error(413, "too_large", f"a result of this task attempt is at most {admitted} bytes",
                         headers={"Connection": "close"})
    if admitted == 0:
        master.scheduler.accept_result(hdr, worker, b"")
        return web.json_response({"accepted": True}, headers={"Connection": "close"})
    payload = bytearray()
    while len(payload) <= admitted:
        chunk = await request.content.read(admitted + 1 - len(payload))
        if not chunk:
            break
        payload += chunk
    if len(payload) > admitted:
        _refused(master, request, worker, hdr, "result larger than its task attempt can be")
        raise json_error(413, "too_large", f"a result of this task attempt is at most {admitted} bytes",
                         headers={"Connection": "close"})
    refused = master.scheduler.accept_result(hdr, worker, bytes(payload))
    if refused is not None:
        _refused(master, request, worker, hdr, refused.reason)
        raise json_error(409, "result_refused", refused.reason)
    return web.json_response({"accepted": True})


def _refused(master: "Master", request: web.Request, worker: str, hdr: TaskHeader, reason: str) -> None:
    master.emit("result_refused", severity="warning", worker=worker, job=hdr.job, task=hdr.task, reason=reason)
    master.audit.record(who=request[PEER].uri, role="worker", what="internal:result",
                        where=request.remote or "-", decision="deny", why=reason)


