"""The histo worker: receives a job's upload from the leader master over mTLS, decodes it, counts its
histogram, applies the table it derives, encodes the result and draws the plot (compute/work.py), and
reports the framed result to the master that asked; it admits work by its memory budget.

Only master identities may call it; it reports only to master identities."""
from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor

from aiohttp import web
from PIL import _imaging as pil_core  # Image.core: Pillow's C module (its block cache)

from ..compute.imageio import ImageError
from ..compute.work import PEAK_BYTES_PER_PIXEL, equalize_upload
from ..config import ServiceConfig
from ..edge.events import EventBus, EventFile, shipped
from ..edge.middleware import json_errors, security_headers
from ..protocol import ProtocolError, TaskHeader
from ..rpc import InternalClient, PeerRefused, peer_check
from ..runtime import ServiceRuntime
from ..serve import Listener, run
from ..tls.identity import IdentityError
from ..zk.acl import WORKERS, worker_slot
from ..zk.membership import list_members
from .admission import Busy, MemoryBudget

log = logging.getLogger("histo.worker")

FAILED_HEADER = "X-Histo-Failed"  # a task the image itself made fail: the reason, in a short body


class Worker:
    def __init__(self, cfg: ServiceConfig) -> None:
        self.cfg = cfg
        self.rt = ServiceRuntime(cfg, on_event=self._security_event)
        self.budget = MemoryBudget(cfg.worker_memory_bytes)
        self.pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="compute")
        # one large job alone on this worker is split over these threads (compute/work.py)
        self.strip_pool = (ThreadPoolExecutor(max_workers=cfg.worker_strip_threads, thread_name_prefix="strips")
                           if cfg.worker_strip_threads > 1 else None)
        pil_core.set_blocks_max(cfg.worker_pixel_cache_bytes // pil_core.get_block_size())
        self.seen: OrderedDict[str, None] = OrderedDict()  # (task, attempt, phase) already taken
        self.client: InternalClient | None = None
        self.pending_events: list[dict] = []
        self.tasks_done = 0
        # the worker's own record of its refusals, for this machine's shipper (the leader relays them
        # to the dashboard too, but a compromised leader must not be able to hide them from SecOps)
        self.event_file = EventFile(cfg.secops_events_file) if cfg.secops_events_file else None
        self._events = EventBus(history=1)

    # -- security events go to the leader's dashboard through the master that calls next
    def _security_event(self, kind: str, **fields) -> None:
        # the runtime names the service itself (its Vault loop's vault_unavailable): one `service` only
        fields["service"] = self.cfg.name
        if self.event_file is not None:
            event = self._events.make_event(kind, **fields)
            if shipped(event):
                self.event_file.write(event)
        fields.update(kind=kind, ts=time.time())
        log.warning("security event %s", json.dumps(fields))
        self.pending_events.append(fields)
        del self.pending_events[:-50]

    def app(self) -> web.Application:
        app = web.Application(client_max_size=max(1, self.cfg.max_upload_bytes), middlewares=[
            security_headers, json_errors, peer_check(self.cfg.trust_domain, lambda _r: ("master",), self._refused)])
        app.router.add_post("/internal/v1/tasks", self.handle_task)
        app.router.add_get("/internal/v1/status", self.handle_status)
        app.router.add_get("/internal/v1/ping", self.handle_ping)
        app.cleanup_ctx.append(self._client_ctx)
        return app

    async def _client_ctx(self, _app: web.Application):  # type: ignore[no-untyped-def]
        self.client = InternalClient(self.rt.certs.contexts.internal_client, self.cfg.trust_domain,
                                     source_address=self.cfg.address)
        yield
        await self.client.close()

    def _refused(self, request: web.Request, exc: IdentityError) -> None:
        self._security_event("mtls_rejected", severity="warning", reason=str(exc), peer=request.remote,
                             path=request.path)

    async def handle_ping(self, request: web.Request) -> web.Response:
        """Liveness as masters check it: this process's incarnation, nothing else."""
        return web.json_response({"name": self.cfg.name, "incarnation": self.rt.incarnation})

    async def handle_status(self, request: web.Request) -> web.Response:
        events, self.pending_events = self.pending_events, []
        return web.json_response({"name": self.cfg.name, "tasks_done": self.tasks_done,
                                  "certificate": self.rt.certs.status.as_dict(),
                                  "checks": self.rt.checks(), "events": events,
                                  "incarnation": self.rt.incarnation})

    async def handle_task(self, request: web.Request) -> web.Response:
        try:
            hdr = TaskHeader.from_headers(request.headers)
        except ProtocolError as exc:
            return web.json_response({"error": "bad_task", "message": str(exc)}, status=400)
        key = f"{hdr.job}/{hdr.task}/{hdr.phase}/{hdr.attempt}"
        if key in self.seen:  # a task attempt runs once, even if delivered twice
            return web.json_response({"error": "duplicate", "message": "task attempt already taken"}, status=409)
        pixels = hdr.width * hdr.rows
        if pixels > self.cfg.max_pixels:
            return web.json_response({"error": "bad_task", "message": "more pixels than a job may have"}, status=400)
        if request.content_length is not None and request.content_length > self.cfg.max_upload_bytes:
            return web.json_response({"error": "bad_task", "message": "body larger than an upload"}, status=413)
        cost = PEAK_BYTES_PER_PIXEL * pixels
        try:
            self.budget.reserve(cost)
        except Busy as exc:  # the scheduler places it on another worker
            return web.json_response({"error": "busy", "message": str(exc)}, status=503)
        try:
            data = await request.read()
        except BaseException:
            self.budget.release(cost)
            raise
        if not data:
            self.budget.release(cost)
            return web.json_response({"error": "bad_task", "message": "a task carries its upload"}, status=400)
        self.seen[key] = None
        while len(self.seen) > 10000:
            self.seen.popitem(last=False)
        asyncio.get_running_loop().create_task(self._run(hdr, data, cost))
        return web.json_response({"accepted": key}, status=202)

    async def _run(self, hdr: TaskHeader, data: bytes, cost: int) -> None:
        loop = asyncio.get_running_loop()
        headers = hdr.to_headers()
        try:
            pool, parts = self._split(hdr.width * hdr.rows, cost)
            try:
                payload = await loop.run_in_executor(self.pool, equalize_upload, data, hdr.mode, hdr.width, hdr.rows,
                                                     hdr.image_mode, hdr.job, pool, parts)
            except ImageError as exc:  # the image itself: the job fails with this reason, no retry elsewhere
                headers[FAILED_HEADER] = exc.code
                payload = exc.message.encode()[:300]
            del data
            status, body, *_ = await self.client.request(
                "POST", hdr.reply_to + "/internal/v1/results", ("master",), headers=headers, data=payload)
            if status != 200:
                log.warning("master refused result %s/%s: %s %s", hdr.job, hdr.task, status, body[:200])
            self.tasks_done += 1
        except PeerRefused as exc:
            self._security_event("mtls_rejected", severity="warning", reason=str(exc), peer=hdr.reply_to)
        except Exception as exc:  # the master re-assigns the task after its timeout
            log.warning("task %s/%s failed: %s", hdr.job, hdr.task, exc)
        finally:  # the result is held until the master has it: counted until then
            self.budget.release(cost)

    def _split(self, pixels: int, cost: int) -> tuple[ThreadPoolExecutor | None, int]:
        """Row strips for a large job that runs alone here (its cost is all the budget holds): eight per
        thread, so the strips in flight stay within the peak the budget charges (compute/work.py)."""
        if self.strip_pool is None or pixels < self.cfg.worker_strip_min_pixels or self.budget.reserved != cost:
            return None, 1
        return self.strip_pool, 8 * self.cfg.worker_strip_threads

    # -- the service skeleton's hooks (histo.serve) ------------------------------------------
    async def setup(self) -> list[Listener]:
        return [Listener(self.app(), self.cfg.address, self.cfg.internal_port,
                         self.rt.certs.contexts.internal_server)]

    async def started(self) -> None:
        await self._wait_for_tree()
        await self._claim_slot()
        self.rt.join("workers")
        log.info("worker %s ready on %s in %.2fs", self.cfg.name, self.cfg.internal_url, self.rt.timings["total"])

    def background(self) -> list:
        return []

    async def stopping(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)

    async def _claim_slot(self, timeout: float = 120.0) -> None:
        """Our membership slot is made by a master for the identity of our certificate (we cannot
        create anything under /histo/workers ourselves): ask one over mTLS until it exists."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        slot = worker_slot(self.cfg.name)
        while not await loop.run_in_executor(None, self.rt.zk.exists, slot):
            if loop.time() > deadline:
                raise RuntimeError(f"no master made {slot}: is a master running?")
            masters = await loop.run_in_executor(None, list_members, self.rt.zk, "masters")
            for m in masters.values():
                try:
                    reply = await self.client.request("POST", m.endpoint + "/internal/v1/join", ("master",),
                                                      expect_host=m.name, timeout=5, max_body=4096)
                    if reply.status == 200:
                        break
                except Exception as exc:
                    log.info("join via %s: %s", m.name, exc)
            else:
                await asyncio.sleep(0.5)

    async def _wait_for_tree(self, timeout: float = 120.0) -> None:
        """Masters create the znode tree; a worker that starts first waits for it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not await loop.run_in_executor(None, self.rt.zk.exists, WORKERS):
            if loop.time() > deadline:
                raise RuntimeError(f"{WORKERS} does not exist: is a master running?")
            await asyncio.sleep(0.5)


def run_worker(cfg: ServiceConfig) -> None:
    run(Worker(cfg))
