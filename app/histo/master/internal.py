"""The master's internal mTLS listener (port 8443): workers report task results here, and
other masters forward public calls here. Every caller is identified by its certificate."""
from __future__ import annotations

import asyncio
import base64
import logging
from typing import TYPE_CHECKING

from aiohttp import web

from ..edge.middleware import CLIENT_ADDR, Handler, json_error, json_errors, security_headers
from ..protocol import ProtocolError, TaskHeader
from ..rpc import PEER, peer_check
from .envelope import KINDS, BlobError, digest, parse, valid_job_id
from .replication import KEY_HEADER, STORE_PREFIX, TAG_HEADER
from .scheduler import FAILED_HEADER, RefusedResult
from ..zk import acl as zkacl
from ..tls.identity import IdentityError
from . import api, secopsfeed

if TYPE_CHECKING:
    from .service import Master

log = logging.getLogger("histo.internal")

PUBLIC_PREFIX = "/internal/v1/public"
RESULTS = "/internal/v1/results"
JOIN = "/internal/v1/join"
SECOPS_EVENTS = "/internal/v1/secops/events"  # the SecOps collector's relay pushes its record's refusals here


def build_app(master: "Master") -> web.Application:
    def allowed(request: web.Request) -> tuple[str, ...]:
        # Only workers report results; only the SecOps collector pushes its record; everything else
        # here is for other masters (so the secops identity reaches nothing but its one route).
        if request.path == SECOPS_EVENTS:
            return ("secops",)
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
    app.router.add_post(SECOPS_EVENTS, lambda r: secops_events(master, r))
    app.router.add_post(JOIN, lambda r: join(master, r))
    app.router.add_put(STORE_PREFIX + "/{job}/{kind}", lambda r: store_put(master, r))
    app.router.add_get(STORE_PREFIX + "/{job}/{kind}", lambda r: store_get(master, r))
    app.router.add_delete(STORE_PREFIX + "/{job}", lambda r: store_delete(master, r))
    api.add_routes(app, master, PUBLIC_PREFIX)
    return app


# -- replicas of sealed blobs (master/replication.py): master identities only (peer_check above) --------
def _blob_path(request: web.Request, with_kind: bool = True) -> tuple[str, str]:
    job, kind = request.match_info["job"], request.match_info.get("kind", "upload")
    if not valid_job_id(job) or (with_kind and kind not in KINDS):
        raise json_error(400, "bad_request", "a store path is /internal/v1/store/<job id>/<upload|result>")
    return job, kind


def _replica_refused(master: "Master", request: web.Request, job: str, kind: str, reason: str) -> web.HTTPException:
    master.emit("replica_refused", severity="warning", peer=request[PEER].host, job=job, blob=kind, reason=reason)
    master.audit.record(who=request[PEER].uri, role="master", what=f"internal:store {job}/{kind}",
                        where=request.remote or "-", decision="deny", why=reason)
    return json_error(400, "replica_refused", reason, headers={"Connection": "close"})


async def store_put(master: "Master", request: web.Request) -> web.Response:
    """A peer master's replica: stored only if its bytes are its integrity tag's and it is a sealed
    blob of the job and kind its path names."""
    job, kind = _blob_path(request)
    tag = request.headers.get(TAG_HEADER, "")
    if len(tag) != 64 or any(c not in "0123456789abcdef" for c in tag):
        raise _replica_refused(master, request, job, kind, f"no valid {TAG_HEADER} integrity tag")
    cap = master.cfg.max_blob_bytes
    if request.content_length is not None and request.content_length > cap:
        raise json_error(413, "too_large", f"a stored blob is at most {cap} bytes", headers={"Connection": "close"})
    chunks, size = [], 0  # joined once at the end: a blob of megabytes is copied once, not grown and copied
    while True:
        chunk = await request.content.read(1 << 20)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
        if size > cap:
            raise json_error(413, "too_large", f"a stored blob is at most {cap} bytes", headers={"Connection": "close"})
    data = b"".join(chunks)
    if digest(data) != tag:
        raise _replica_refused(master, request, job, kind, "replica does not match its integrity tag (altered)")
    try:
        header = parse(data)
    except BlobError as exc:
        raise _replica_refused(master, request, job, kind, f"not a sealed blob: {exc}") from None
    if header.job != job or header.kind != kind:
        raise _replica_refused(master, request, job, kind, "a sealed blob of another job or kind")
    handed = request.headers.get(KEY_HEADER)
    await asyncio.get_running_loop().run_in_executor(None, master.store.put, job, kind, data)
    if kind == "upload" and master.is_leader and master.runner is not None:
        # the leader starts this job next (the accepting master queued it): it reads these bytes
        # from memory, checked against their tag above, and takes the handed-over key, if any, which
        # it uses only once it opened this upload (runner.resume)
        master.runner.replicas.keep(job, kind, data, tag)
        if handed is not None:
            try:
                master.keys.offer(header.wrapped_key, base64.b64decode(handed, validate=True))
            except ValueError:
                pass  # not base64: the leader unwraps the key with Vault, as without one
    return web.json_response({"stored": tag}, status=201)


async def store_get(master: "Master", request: web.Request) -> web.Response:
    job, kind = _blob_path(request)
    blob = await asyncio.get_running_loop().run_in_executor(None, master.store.get, job, kind)
    if blob is None:
        raise json_error(404, "not_found", "no such blob here")
    return web.Response(body=blob, content_type="application/octet-stream", headers={TAG_HEADER: digest(blob)})


async def store_delete(master: "Master", request: web.Request) -> web.Response:
    job, _ = _blob_path(request, with_kind=False)
    loop = asyncio.get_running_loop()
    held = await loop.run_in_executor(None, master.store.get, job, "upload")
    if held is not None:  # its data key goes from this master's memory too
        try:
            master.keys.forget(parse(held).wrapped_key)
        except BlobError:
            pass
    if master.runner is not None:
        master.runner.replicas.drop_recent(job)
    freed = await loop.run_in_executor(None, master.store.delete, job)
    return web.json_response({"deleted": job, "bytes": freed})


async def secops_events(master: "Master", request: web.Request) -> web.Response:
    """The collector's relay pushes a batch of its record's refusals (master/secopsfeed.py judges it)."""
    collector = request[PEER].host
    try:
        if request.content_length is not None and request.content_length > secopsfeed.MAX_BODY:
            raise secopsfeed.FeedRefused(413, "too_large", f"a push is at most {secopsfeed.MAX_BODY} bytes")
        body = bytearray()  # a chunked body is capped the same way, chunk by chunk
        async for chunk in request.content.iter_chunked(16 * 1024):
            body += chunk
            if len(body) > secopsfeed.MAX_BODY:
                raise secopsfeed.FeedRefused(413, "too_large", f"a push is at most {secopsfeed.MAX_BODY} bytes")
        raw = bytes(body)
        pushed = master.secops.push(collector, *secopsfeed.parse_batch(raw))
    except secopsfeed.FeedRefused as exc:
        if exc.status != 429:  # a malformed push from the collector's identity is itself worth seeing
            master.emit("secops_push_refused", severity="warning", collector=collector, reason=exc.message[:200])
            master.audit.record(who=request[PEER].uri, role="secops", what=f"internal {request.path}",
                                where=request.remote or "-", decision="deny", why=exc.message[:200])
        headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after else {}
        if exc.status == 413:
            headers["Connection"] = "close"  # the rest of an oversized body is not read
        raise json_error(exc.status, exc.code, exc.message, headers=headers) from None
    return web.json_response({"accepted": pushed.accepted, "duplicates": pushed.duplicates, "high": pushed.high})


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
    if admitted == 0:  # an attempt this master gave up on (job cancelled, timed out): dropped unread
        master.scheduler.accept_result(hdr, worker, b"")
        return web.json_response({"accepted": True}, headers={"Connection": "close"})
    failed = request.headers.get(FAILED_HEADER)
    if failed is not None:
        failed, admitted = failed[:64], 512  # the image cannot be processed: a short reason, not a result
    if request.content_length is not None and request.content_length > admitted:
        _refused(master, request, worker, hdr, "result larger than its task attempt can be")
        raise json_error(413, "too_large", f"a result of this task attempt is at most {admitted} bytes",
                         headers={"Connection": "close"})
    chunks, size = [], 0  # joined once at the end (a result of megabytes is copied once)
    while size <= admitted:
        chunk = await request.content.read(admitted + 1 - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    if size > admitted:
        _refused(master, request, worker, hdr, "result larger than its task attempt can be")
        raise json_error(413, "too_large", f"a result of this task attempt is at most {admitted} bytes",
                         headers={"Connection": "close"})
    payload = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    refused = master.scheduler.accept_result(hdr, worker, payload, failed)
    if refused is not None:
        _refused(master, request, worker, hdr, refused.reason)
        raise json_error(409, "result_refused", refused.reason)
    return web.json_response({"accepted": True})


def _refused(master: "Master", request: web.Request, worker: str, hdr: TaskHeader, reason: str) -> None:
    master.emit("result_refused", severity="warning", worker=worker, job=hdr.job, task=hdr.task, reason=reason)
    master.audit.record(who=request[PEER].uri, role="worker", what="internal:result",
                        where=request.remote or "-", decision="deny", why=reason)


