"""The master's public HTTPS API (DESIGN.md, "Public API"). The same handlers are mounted on
the internal mTLS listener under /internal/v1/public, where a standby master forwards the
calls that only the leader (or the master running a job) can answer. Job lifecycle decisions are
master/runner.py's; these handlers translate requests and its RunnerError refusals."""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
from importlib import resources
from typing import TYPE_CHECKING, Awaitable, TypeVar

from aiohttp import BodyPartReader, web, WSMsgType

from ..compute import equalize
from ..compute.equalize import Result
from ..compute.imageio import Header, ImageError, probe, sniff_format
from ..edge.admission import Refused
from ..edge import receipts
from ..edge.middleware import client_addr, json_error, json_errors, security_headers
from ..edge import validation
from ..edge.openapi import DRILL_EVENT, REVOKE_REQUEST, SECOPS_EVENT, SECOPS_LAYERS, WAIT, spec as openapi_spec
from ..edge.tokens import AuthError, KeysUnavailable, Principal
from ..zk.jobs import EXPIRED, is_tombstone
from ..zk.membership import Member
from ..zk.revocations import RevocationStore
from .runner import RunnerError
from . import secopsfeed, signin

if TYPE_CHECKING:
    from .service import Master

log = logging.getLogger("histo.api")

UPLOADERS = ("uploader", "admin")
VIEWERS = ("viewer", "admin")
PUBLIC_JOB_FIELDS = ("id", "owner", "state", "mode", "format", "width", "height", "progress", "tiles",
                     "reason", "timings", "created", "finished")
CONTENT_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png"}
# POST /api/v1/events (admin): an attack drill's outcome on the SecOps dashboard. Fixed kind, bounded
# fields (edge/openapi.py DRILL_EVENT), a bounded body (POST /api/v1/tokens/revoke too).
DRILL_BODY_MAX = 4096
# What a forwarded call's answer keeps of the other master's headers (besides its Content-Type).
FORWARDED_REPLY_HEADERS = ("Retry-After", "WWW-Authenticate", "Location", "Content-Disposition")
PRINCIPAL_KEY = "principal"  # the request key of the authenticated caller (master/auth.py::require)
STREAM_TOKEN_CHECK = 0.5  # seconds between checks of an open event stream's token (revoked, expired)
DEFAULT_PAGE, MAX_PAGE = 50, 200  # GET /api/v1/jobs?limit=
T = TypeVar("T")


def build_app(master: "Master") -> web.Application:
    app = web.Application(client_max_size=master.cfg.max_upload_bytes,
                          middlewares=[security_headers, json_errors])
    add_routes(app, master, "")
    app.router.add_get("/", _index)
    app.router.add_static("/static", _static_dir(), show_index=False, follow_symlinks=False)
    return app


def _static_dir():
    return resources.files("histo") / "static"


async def _index(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(_static_dir() / "index.html", headers={"Content-Type": "text/html; charset=utf-8"})


def add_routes(app: web.Application, master: "Master", prefix: str) -> None:
    h = Handlers(master)
    r = app.router
    r.add_get(prefix + "/healthz", h.healthz)
    r.add_get(prefix + "/readyz", h.readyz)
    r.add_get(prefix + "/api/v1/openapi.json", h.openapi)
    r.add_post(prefix + "/api/v1/jobs", h.submit)
    r.add_get(prefix + "/api/v1/jobs", h.list_jobs)
    r.add_get(prefix + "/api/v1/jobs/{id}", h.get_job)
    r.add_delete(prefix + "/api/v1/jobs/{id}", h.delete_job)
    r.add_get(prefix + "/api/v1/jobs/{id}/receipt", h.receipt)
    r.add_get(prefix + "/api/v1/jobs/{id}/result", h.result)
    r.add_get(prefix + "/api/v1/jobs/{id}/histogram", h.histogram)
    r.add_get(prefix + "/api/v1/jobs/{id}/histogram.png", h.histogram_png)
    r.add_get(prefix + "/api/v1/cluster", h.cluster)
    r.add_get(prefix + "/api/v1/secops/events", h.secops_events)
    r.add_post(prefix + "/api/v1/tokens/revoke", h.revoke)
    r.add_post(prefix + "/api/v1/events", h.post_event)
    r.add_get(prefix + "/api/v1/events", h.events)
    signin.add_routes(app, master, prefix)


class Handlers:
    def __init__(self, master: "Master") -> None:
        self.m = master

    @property
    def signer(self) -> receipts.VaultReceiptSigner:
        return self.m.signer

    # -- health ------------------------------------------------------------------------------
    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "service": self.m.cfg.name})

    async def readyz(self, request: web.Request) -> web.Response:
        ready, checks = self.m.readiness()
        degraded = not all(c["ok"] for c in checks.values())
        status = "not_ready" if not ready else ("degraded" if degraded else "ok")
        reasons = [f"{k}: {v.get('error') or v.get('state') or 'not ok'}" for k, v in checks.items() if not v["ok"]]
        return web.json_response({"status": status, "service": self.m.cfg.name, "checks": checks,
                                  "reasons": reasons, "startup": self.m.startup_timings()},
                                 status=200 if ready else 503)

    async def openapi(self, request: web.Request) -> web.Response:
        return web.json_response(openapi_spec())

    # -- jobs --------------------------------------------------------------------------------
    async def submit(self, request: web.Request) -> web.StreamResponse:
        """Any master accepts an upload itself: stored on the quorum and recorded queued; the leader runs
        it (a standby's job reaches the leader through its watch on /histo/active, not through a relay)."""
        principal = await self.m.auth.require(request, UPLOADERS)
        auth = self.m.auth
        auth.limit_uploads(request, principal)
        admission = auth.admission
        mine = self.m.runner.owned_running(principal.sub)
        t0 = time.perf_counter()
        holding = contextlib.ExitStack()  # the body counts against uploads_in_flight until it is stored
        try:
            admission.check_jobs(await self.m.jobs_in_flight(), mine)
            holding.enter_context(admission.reading(principal.sub))
            data, mode = await self._read_upload(request)
        except Refused as exc:
            holding.close()
            raise auth.refused(request, principal, exc) from None
        except BaseException:
            holding.close()
            raise
        with holding:
            await self._runner_call(self.m.runner.check_quota(principal.sub, len(data)))
            header, upload_sha256, t_recv, t1 = await self._admit(request, principal, data, mode, t0)
            timings = {"receive": t_recv, "header": time.perf_counter() - t1}
            try:
                doc = await self.m.runner.submit(principal.sub, data, mode, header, upload_sha256, timings,
                                                 start=self.m.is_leader)
            except RunnerError as exc:
                self.m.audit_decision(principal, request, "POST /api/v1/jobs", False, exc.code)
                raise _refusal(exc) from None
        del data
        job_id = doc["id"]
        if doc.get("master") is None:  # queued for the leader: this master tells its own streams how it ends
            self.m.follow(job_id, principal.sub)
        self.m.audit_decision(principal, request, "POST /api/v1/jobs", True, f"job {job_id}")
        return web.json_response({"id": job_id, "state": "queued"}, status=202,
                                 headers={"Location": f"/api/v1/jobs/{job_id}"})

    @staticmethod
    async def _runner_call(coro: Awaitable[T]) -> T:
        try:
            return await coro
        except RunnerError as exc:
            raise _refusal(exc) from None

    async def _admit(self, request: web.Request, principal: Principal, data: bytes, mode: str,
                     t0: float) -> tuple[Header, str, float, float]:
        """Admission by cost of a received upload, from its header alone (the master never decodes):
        (header, sha256, receive s, t1)."""
        auth = self.m.auth
        t_recv = time.perf_counter() - t0
        if not self.m.schedulable_workers():
            raise json_error(503, "no_workers", "no workers are available; try again shortly")
        t1 = time.perf_counter()
        try:
            header = await asyncio.get_running_loop().run_in_executor(None, probe, data, self.m.cfg.max_pixels)
            # Every master admits uploads and keeps its own buckets: each charges pixels x live masters, so
            # the cluster admits at most one budget per principal however the uploads are spread.
            budget = auth.admission.budget.capacity
            auth.admission.charge(principal.sub, int(min(budget, header.pixels * self.m.live_masters())))
        except Refused as exc:
            raise auth.refused(request, principal, exc) from None
        except ImageError as exc:
            self.m.audit_decision(principal, request, "POST /api/v1/jobs", False, exc.code)
            raise json_error(exc.status, exc.code, exc.message) from None
        upload_sha256 = hashlib.sha256(data).hexdigest()  # named by the job's receipt
        return header, upload_sha256, t_recv, t1

    async def _read_upload(self, request: web.Request) -> tuple[bytes, str]:
        ctype = request.headers.get("Content-Type", "")
        if not ctype.startswith("multipart/form-data"):
            raise json_error(400, "bad_request", "send multipart/form-data with a field named 'image'")
        data, mode = None, equalize.DEFAULT_MODE
        try:
            reader = await request.multipart()
            async for part in reader:
                if not isinstance(part, BodyPartReader):
                    raise ValueError("nested multipart")
                name = part.name
                if name == "image" and data is None:
                    data = bytes(await part.read(decode=False))
                elif name == "mode":
                    # bytes, decoded here: a part's own charset (or encoding) is the client's claim
                    mode = bytes(await part.read(decode=False))[:64].decode("utf-8").strip()[:16]
        except web.HTTPException:
            raise  # the body is over the size limit (413)
        except Exception as exc:  # noqa: BLE001 - any failure to parse untrusted multipart is the client's
            log.debug("malformed multipart body: %s: %s", type(exc).__name__, exc)
            raise json_error(400, "bad_request", "malformed multipart body: send multipart/form-data with a "
                             "field named 'image'") from None
        if not data:
            raise json_error(400, "missing_image", "the multipart field 'image' is missing or empty")
        if mode not in equalize.MODES:
            raise json_error(400, "bad_mode", f"mode must be one of {', '.join(equalize.MODES)}")
        try:
            sniff_format(data)
        except ImageError as exc:
            raise json_error(exc.status, exc.code, exc.message) from None
        return data, mode

    async def list_jobs(self, request: web.Request) -> web.Response:
        """The caller's jobs (an admin: everyone's), newest first, `limit` (1-200, default 50) at a time;
        `cursor` is the `next_cursor` of the page before. Reads the caller's own index only."""
        principal = await self.m.auth.require(request, UPLOADERS)
        try:
            limit = int(request.query.get("limit", DEFAULT_PAGE))
            if not 1 <= limit <= MAX_PAGE:
                raise ValueError
        except ValueError:
            raise json_error(400, "bad_request", f"limit must be an integer from 1 to {MAX_PAGE}") from None
        cursor = request.query.get("cursor")  # absent: the first page; present, it must be a next_cursor
        if cursor is not None and not (0 < len(cursor) <= 64 and cursor.isalnum() and cursor.isascii()):
            raise json_error(400, "bad_request", "cursor must be the next_cursor of a previous page") from None
        owner = None if principal.role == "admin" else principal.sub
        docs, nxt = await asyncio.get_running_loop().run_in_executor(None, self.m.jobs.page, owner, limit, cursor)
        return web.json_response({"jobs": [self._public(d) for d in docs], "next_cursor": nxt})

    async def _job_for(self, request: web.Request, principal: Principal | None = None) -> tuple[dict, object]:
        """The job of the path's id, for its owner or an admin (`principal`: the caller, once authenticated)."""
        principal = principal or await self.m.auth.require(request, UPLOADERS)
        job_id = request.match_info["id"]
        doc = None
        if len(job_id) <= 64 and job_id.isalnum():
            doc = await asyncio.get_running_loop().run_in_executor(None, self.m.jobs.get_job, job_id)
        what = f"{request.method} job {job_id[:64]}"
        # Another user's job answers exactly like an unknown one: no existence leak.
        if doc is None or (principal.role != "admin" and doc.get("owner") != principal.sub):
            self.m.audit_decision(principal, request, what, False, "unknown or not owner")
            raise json_error(404, "not_found", "no such job")
        if is_tombstone(doc):  # only the owner (or an admin) learns that it existed
            self.m.audit_decision(principal, request, what, False, "job deleted")
            raise _gone(doc)
        return doc, principal

    @staticmethod
    def _public(doc: dict) -> dict:
        return {k: doc.get(k) for k in PUBLIC_JOB_FIELDS}

    async def get_job(self, request: web.Request) -> web.Response:
        """`?wait=S` (at most 60) long-polls: the answer comes when the job ends or S seconds pass."""
        principal = await self.m.auth.require(request, UPLOADERS)
        wait = validation.query_number(request, "wait", WAIT) or 0.0  # a bad request is one, whatever the job
        doc, _ = await self._job_for(request, principal)
        if wait and doc.get("state") in ("queued", "running"):
            task = self.m.running.get(doc["id"])
            if task is not None:  # it runs here
                await asyncio.wait({task}, timeout=wait)
                doc = await asyncio.get_running_loop().run_in_executor(None, self.m.jobs.get_job, doc["id"]) or doc
            else:  # any master waits on the job's znode (a ZooKeeper watch), nothing is relayed
                doc = await self.m.wait_job_end(doc["id"], wait) or doc
            if is_tombstone(doc):
                raise _gone(doc)
        return web.json_response(self._public(doc))

    async def delete_job(self, request: web.Request) -> web.Response:
        """Owner or admin: the job's record, task nodes, stored upload and result (on every master) and
        its wrapped data key go; a job still queued or running is cancelled first (by the master that
        runs it). A small tombstone stays so its owner is told 410, not 404."""
        doc, principal = await self._job_for(request)
        holder = doc.get("master")
        if (doc.get("state") in ("queued", "running") and holder != self.m.cfg.name and holder in self.m.masters
                and not request.get("forwarded")):
            return await self._forward(request, holder)  # the master running it cancels it
        deleted = await self.m.runner.delete(doc["id"], principal.sub)
        if deleted is None:
            raise json_error(404, "not_found", "no such job")
        before, stone, cancelled = deleted
        if before is stone:  # a concurrent DELETE won
            raise _gone(stone)
        why = f"job {doc['id']} of {before.get('owner')} deleted" + (" (cancelled while running)" if cancelled else "")
        self.m.audit_decision(principal, request, f"DELETE job {doc['id']}", True, why)
        self.m.emit("job_deleted", severity="info", job=doc["id"], owner=before.get("owner"), by=principal.sub,
                    state=before.get("state"), cancelled=cancelled)
        return web.json_response({"id": doc["id"], "state": "deleted", "cancelled": cancelled})

    # -- receipts ----------------------------------------------------------------------------
    async def receipt(self, request: web.Request) -> web.Response:
        doc, principal = await self._job_for(request)
        if doc.get("state") != "done":
            raise json_error(409, "not_ready", f"job is {doc.get('state')}; a receipt exists once it is done")
        jws = doc.get("receipt")
        if not jws:
            claims = doc.get("receipt_claims")
            if not claims:
                raise json_error(404, "no_receipt", "this job finished before receipts were signed")
            loop = asyncio.get_running_loop()
            try:
                jws = await loop.run_in_executor(None, self.signer.sign, claims)
            except receipts.SigningUnavailable:
                raise json_error(503, "vault_unavailable", "the receipt cannot be signed right now; try again "
                                 "shortly", headers={"Retry-After": "5"}) from None
            stored = await loop.run_in_executor(None, lambda: self.m.jobs.update_job(doc["id"], receipt=jws))
            if is_tombstone(stored):
                raise _gone(stored)
        self.m.audit_decision(principal, request, f"GET receipt {doc['id']}", True, "receipt served")
        return web.Response(text=jws, content_type=receipts.CONTENT_TYPE,
                            headers={"Content-Disposition": f'attachment; filename="{doc["id"]}.receipt.jws"'})

    async def _result(self, request: web.Request) -> tuple[dict, Result, bytes]:
        """Any master serves any result: its own copy, else a peer's (master/runner.py result)."""
        doc, _ = await self._job_for(request)
        if doc.get("state") != "done":
            raise json_error(409, "not_ready", f"job is {doc.get('state')}")
        result, plot = await self._runner_call(self.m.runner.result(doc))
        return doc, result, plot

    async def result(self, request: web.Request) -> web.StreamResponse:
        doc, result, _ = await self._result(request)
        return web.Response(body=result.image, content_type=CONTENT_TYPES[result.fmt],
                            headers={"Content-Disposition": f'inline; filename="{doc["id"]}.{result.fmt.lower()}"'})

    async def histogram(self, request: web.Request) -> web.StreamResponse:
        doc, result, _ = await self._result(request)
        return web.json_response({"id": doc["id"], "channels": result.channels, "before": result.hist_before,
                                  "after": result.hist_after})

    async def histogram_png(self, request: web.Request) -> web.StreamResponse:
        _, _, plot = await self._result(request)
        return web.Response(body=plot, content_type="image/png")

    # -- cluster and security -------------------------------------------------------------------
    async def cluster(self, request: web.Request) -> web.Response:
        await self.m.auth.require(request, VIEWERS)
        leader = self.m.leader

        def view(m: Member, **extra: object) -> dict:
            return {"name": m.name, "endpoint": m.endpoint, "spiffe_id": m.spiffe_id,
                    "cert_not_after": _iso(m.cert_not_after), "live": self.m.is_live(m.name), **extra}
        return web.json_response({
            "leader": leader,
            "masters": [view(d, leader=(n == leader)) for n, d in sorted(self.m.masters.items())],
            "workers": [view(d) for _, d in sorted(self.m.workers.items())],
            "self": {"name": self.m.cfg.name, "certificate": self.m.rt.certs.status.as_dict()},
            "incidents": self.m.incidents(),
        })

    async def secops_events(self, request: web.Request) -> web.Response:
        """The SecOps record's refusals this master received from the collector's relay (secopsfeed.py),
        oldest first after `since`; filtered by layer, refused host and minimum severity."""
        await self.m.auth.require(request, VIEWERS)
        q = request.query
        since = _query_int(q.get("since"), "since", 0, 2 ** 53 - 1, 0)
        limit = _query_int(q.get("limit"), "limit", 1, secopsfeed.MAX_PAGE, secopsfeed.DEFAULT_PAGE)
        layer, host, severity = q.get("layer"), q.get("host"), q.get("severity")
        if layer is not None and layer not in SECOPS_LAYERS:
            raise json_error(400, "bad_request", f"layer must be one of {', '.join(SECOPS_LAYERS)}")
        if host is not None and validation.problem(SECOPS_EVENT["properties"]["host"], host, "host"):
            raise json_error(400, "bad_request", "host must be a host name (letters, digits, . _ : -; at most 64)")
        if severity is not None and severity not in ("info", "warning", "critical"):
            raise json_error(400, "bad_request", "severity must be info, warning or critical")
        return web.json_response(self.m.secops.query(since, layer, host, severity, limit))

    async def revoke(self, request: web.Request) -> web.Response:
        principal = await self.m.auth.require(request, ("admin",))
        body = validation.json_body(await _read_small(request), REVOKE_REQUEST,
                                    "JSON {\"jti\": \"<token id>\", \"exp\": <unix time>}")
        jti, exp = body["jti"], float(body.get("exp", time.time() + 3600))
        if not RevocationStore.valid_jti(jti):  # the schema's pattern is the store's: never reached
            raise json_error(400, "bad_request", "not a token id")
        await asyncio.get_running_loop().run_in_executor(None, self.m.auth.revoke, jti, exp)
        self.m.audit_decision(principal, request, "revoke token", True, f"jti {jti}")
        self.m.emit("token_revoked", severity="info", jti=jti, by=principal.sub)
        return web.json_response({"revoked": jti})

    async def post_event(self, request: web.Request) -> web.Response:
        """An admin (the operator running `make attack`) records a drill's outcome as a SecOps event."""
        principal = await self.m.auth.require(request, ("admin",))
        if request.content_length is not None and request.content_length > DRILL_BODY_MAX:
            raise json_error(400, "bad_request", f"body larger than {DRILL_BODY_MAX} bytes")
        usage = "JSON {\"drill\": str (<= 80), \"held\": bool, \"tried\": str (<= 300), \"happened\": str (<= 500)}"
        body = validation.json_body(await _read_small(request), DRILL_EVENT, usage)
        held = body.pop("held")
        fields = body
        self.m.audit_decision(principal, request, "POST /api/v1/events", True, f"drill {fields['drill']}")
        outcome = "held" if held else "failed"
        self.m.emit("drill", severity="info" if held else "critical", outcome=outcome, by=principal.sub, **fields)
        return web.json_response({"kind": "drill", "drill": fields["drill"], "outcome": outcome}, status=201)

    async def events(self, request: web.Request) -> web.WebSocketResponse:
        """The event stream: the same per-address limit and failure throttle as every route (429
        before the upgrade), the token in the first message; the stream ends within a second or
        two of its token's expiry or revocation."""
        auth = self.m.auth
        auth.gate(request)
        ws = web.WebSocketResponse(heartbeat=20, max_msg_size=16 * 1024)
        await ws.prepare(request)
        try:
            try:
                msg = await asyncio.wait_for(ws.receive(), 10)
                token = json.loads(msg.data).get("token", "") if msg.type == WSMsgType.TEXT else ""
            except (asyncio.TimeoutError, ValueError, AttributeError, TypeError):
                token = ""
            principal = auth.verify_token(token if isinstance(token, str) else "", request)
        except KeysUnavailable:
            await ws.close(code=1013, message=b"tokens cannot be verified right now")
            return ws
        except AuthError:
            await ws.close(code=4401, message=b"authentication required")
            return ws
        await ws.send_json({"type": "ready", "role": principal.role, "sub": principal.sub})
        secops = principal.role in VIEWERS

        def visible(ev: dict) -> bool:
            aud = ev.get("audience")
            if aud not in (None, "secops"):
                return principal.role == "admin" or aud == principal.sub
            return secops

        async def pump() -> None:
            async for ev in self.m.events.subscribe():
                if visible(ev):
                    await ws.send_json({"type": "event", "event": ev})
        async def expire() -> None:
            while not ws.closed:
                if time.time() >= principal.exp or principal.jti in auth.revoked:
                    why = b"token revoked" if principal.jti in auth.revoked else b"token expired"
                    await ws.close(code=4401, message=why)
                    return
                await asyncio.sleep(STREAM_TOKEN_CHECK)
        loop = asyncio.get_running_loop()
        pumper, expirer = loop.create_task(pump()), loop.create_task(expire())
        try:
            async for _ in ws:  # the client says nothing more; this waits for it to close
                pass
        finally:
            pumper.cancel()
            expirer.cancel()
        return ws

    # -- forwarding to another master over the internal mTLS listener ---------------------------
    async def _forward(self, request: web.Request, target: str | None) -> web.Response:
        member = self.m.masters.get(target or "")
        if not target or not member or target == self.m.cfg.name:
            raise json_error(503, "no_leader", "no leader master is available; try again shortly")
        headers = {k: v for k, v in request.headers.items() if k in ("Authorization", "Content-Type")}
        headers["X-Histo-Client-Addr"] = client_addr(request)
        principal = request.get(PRINCIPAL_KEY)
        try:  # a body held in this master's memory: bounded per principal here too
            with self.m.auth.admission.reading(principal.sub if principal else client_addr(request)):
                body = await request.read()
        except Refused as exc:
            raise json_error(exc.status, exc.code, exc.message, headers={"Retry-After": str(exc.retry_after)}) from None
        try:
            reply = await self.m.client.request(request.method, member.endpoint + "/internal/v1/public"
                                                + request.rel_url.path_qs, ("master",), headers=headers, data=body,
                                                expect_host=target)
        except Exception as exc:
            log.warning("forwarding %s to %s failed: %s: %s", request.path, target, type(exc).__name__, exc)
            raise json_error(503, "leader_unreachable", "another master must answer this and cannot be reached "
                             "right now; try again shortly", headers={"Retry-After": "2"}) from None
        kept = {k: v for k, v in reply.headers.items() if k in FORWARDED_REPLY_HEADERS}
        return web.Response(status=reply.status, body=reply.body,
                            headers={**kept, "Content-Type": reply.content_type or "application/json"})


async def _read_small(request: web.Request) -> bytes:
    """A small JSON body, whole (chunk by chunk: one read() may return only what has arrived), at most
    DRILL_BODY_MAX bytes, else a 400 (it is a bad request for these routes, not an upload)."""
    chunks, size = [], 0
    async for chunk in request.content.iter_chunked(4096):
        size += len(chunk)
        if size > DRILL_BODY_MAX:
            raise json_error(400, "bad_request", f"body larger than {DRILL_BODY_MAX} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _query_int(raw: str | None, name: str, low: int, high: int, default: int) -> int:
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 16) or not low <= int(raw) <= high:
        raise json_error(400, "bad_request", f"{name} must be an integer from {low} to {high}")
    return int(raw)


def _gone(stone: dict) -> web.HTTPException:
    when = _iso(stone.get("deleted")) or "request"
    if stone.get("reason") == EXPIRED:
        return json_error(410, "gone", f"job {stone.get('id')} was removed on {when}, when its retention ended")
    return json_error(410, "gone", f"job {stone.get('id')} was deleted on {when}")


def _refusal(exc: RunnerError) -> web.HTTPException:
    headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after else None
    return json_error(exc.status, exc.code, exc.message, headers=headers)


def _iso(ts) -> str | None:
    if not ts:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(float(ts)))
