"""The histo master: public HTTPS API, leader election, the scheduler (on the leader),
and the internal mTLS endpoint where workers report results and masters forward calls."""
from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path

from aiohttp import web

from ..config import ServiceConfig
from ..edge.audit import AuditLog
from ..edge.middleware import client_addr
from ..edge.events import EventBus
from ..rpc import InternalClient
from ..runtime import ServiceRuntime
from ..zk import acl as zkacl
from ..zk.election import LeaderElection
from ..zk.jobs import JobStore
from ..zk.membership import register, update as update_member, watch
from . import api, internal
from .auth import Authenticator
from .results import ResultStore
from .scheduler import Scheduler

log = logging.getLogger("histo.master")


class Master:
    def __init__(self, cfg: ServiceConfig) -> None:
        self.cfg = cfg
        self.loop: asyncio.AbstractEventLoop | None = None
        self.events = EventBus()
        self.audit = AuditLog(Path(cfg.state_dir) / "audit.log")
        self.rt = ServiceRuntime(cfg, on_event=self.emit)
        self.results = ResultStore(cfg.job_retention)
        self.workers: dict[str, dict] = {}
        self.masters: dict[str, dict] = {}
        self.leader: str | None = None
        self.is_leader = False
        self.jobs: JobStore | None = None
        self.scheduler: Scheduler | None = None
        self.client: InternalClient | None = None
        self.auth: Authenticator | None = None
        self.running: dict[str, asyncio.Task] = {}
        self.election: LeaderElection | None = None
        self._task_batch: dict[tuple[str, int], dict] = {}
        self._tasks_created: set[tuple[str, int]] = set()

    # -- events (thread-safe: kazoo callbacks run in their own threads) -----------------------
    def emit(self, kind: str, **fields) -> None:
        fields.setdefault("service", self.cfg.name)
        self.events.publish(kind, **fields)

    # -- membership and leadership ------------------------------------------------------------
    def _workers_changed(self, members: dict[str, dict]) -> None:
        gone = set(self.workers) - set(members)
        joined = set(members) - set(self.workers)
        self.workers = members
        if gone and self.scheduler is not None:
            self.scheduler.workers_lost(gone)
        for name in gone:
            self.emit("worker_left", severity="warning", worker=name)
        for name in joined:
            self.emit("worker_joined", severity="info", worker=name)

    def _masters_changed(self, members: dict[str, dict]) -> None:
        self.masters = members
        if self.election is not None:
            self.leader = self.election.leader()

    def _elected(self) -> None:
        self.loop.call_soon_threadsafe(self._became_leader)

    def _lost(self) -> None:
        self.loop.call_soon_threadsafe(self._stepped_down)

    def _became_leader(self) -> None:
        self.is_leader, self.leader = True, self.cfg.name
        log.info("%s is now the leader", self.cfg.name)
        self.emit("leader_changed", severity="info", leader=self.cfg.name)
        self.loop.create_task(self._adopt_orphans())

    def _stepped_down(self) -> None:
        was = self.is_leader
        self.is_leader = False
        if was:
            self.emit("leader_changed", severity="warning", leader=None, reason="session lost")
            for task in list(self.running.values()):
                task.cancel()

    async def _adopt_orphans(self) -> None:
        """Jobs a previous leader left queued or running cannot finish (their pixels died with it)."""
        loop = asyncio.get_running_loop()
        docs = await loop.run_in_executor(None, self.jobs.list_jobs)
        for doc in docs:
            if doc.get("state") in ("queued", "running") and doc.get("master") != self.cfg.name:
                await loop.run_in_executor(None, lambda d=doc: self.jobs.update_job(
                    d["id"], state="failed", finished=time.time(),
                    reason=f"leader {d.get('master')} was lost before the job finished; please resubmit"))
                self.emit("job_failed", severity="warning", job=doc["id"], audience=doc.get("owner"),
                          reason="leader lost")

    # -- start ---------------------------------------------------------------------------------
    async def serve(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.events.bind(self.loop)
        await self.loop.run_in_executor(None, self.rt.start)
        zk = self.rt.zk
        await self.loop.run_in_executor(None, zkacl.bootstrap_tree, zk, self.rt.acl_ids)
        self.jobs = JobStore(zk)
        self.client = InternalClient(self.rt.certs.contexts.internal_client, self.cfg.trust_domain,
                                     source_address=self.cfg.address)
        self.scheduler = Scheduler(self.client, self.cfg.internal_url, lambda: dict(self.workers),
                                   self._task_state, self._progress, self.cfg.task_timeout,
                                   self.cfg.tiles_per_worker, self.cfg.min_tile_pixels)
        self.auth = Authenticator(self)
        await self.loop.run_in_executor(None, self.auth.start)

        public = web.AppRunner(api.build_app(self), access_log=None)
        inner = web.AppRunner(internal.build_app(self), access_log=None)
        await public.setup()
        await inner.setup()
        ctxs = self.rt.certs.contexts
        await web.TCPSite(public, self.cfg.address, self.cfg.public_port, ssl_context=ctxs.public_server,
                          backlog=512).start()
        await web.TCPSite(inner, self.cfg.address, self.cfg.internal_port, ssl_context=ctxs.internal_server,
                          backlog=512).start()

        watch(zk, "workers", lambda m: self.loop.call_soon_threadsafe(self._workers_changed, m))
        watch(zk, "masters", lambda m: self.loop.call_soon_threadsafe(self._masters_changed, m))
        register(zk, "masters", self.cfg.name, self._member_info())
        self.election = LeaderElection(zk, self.cfg.name, on_elected=self._elected, on_lost=self._lost)
        self.election.start()
        log.info("master %s ready: public %s internal %s (start %.2fs)", self.cfg.name, self.cfg.public_url,
                 self.cfg.internal_url, self.rt.timings["total"])
        try:
            await asyncio.gather(self.rt.upkeep(), self._leader_poll())
        finally:
            self.election.stop()
            await public.cleanup()
            await inner.cleanup()
            await self.client.close()
            self.rt.stop()

    async def _collect_worker_events(self) -> None:
        """Workers report their own security events (an mTLS rejection at a worker, its certificate
        rotations) in their status; the leader relays them to the SecOps stream."""
        for name, info in list(self.workers.items()):
            try:
                reply = await self.client.request("GET", info["endpoint"] + "/internal/v1/status", ("worker",))
                if reply.status == 200:
                    for ev in json.loads(reply.body).get("events", []):
                        kind = str(ev.pop("kind", "worker_event"))
                        ev.pop("ts", None)
                        ev.setdefault("severity", "warning")
                        self.emit(kind, **{k: v for k, v in ev.items() if isinstance(v, (str, int, float))})
            except Exception as exc:
                log.debug("status of %s unavailable: %s", name, exc)

    async def _leader_poll(self) -> None:
        # The election's contenders change without a masters-membership event when a leader
        # steps down; a cheap periodic look keeps `leader` right for forwarding and /readyz.
        ticks = 0
        while True:
            await asyncio.sleep(1.0)
            ticks += 1
            if self.is_leader and ticks % 3 == 0:
                await self._collect_worker_events()
            try:
                self.leader = await self.loop.run_in_executor(None, self.election.leader)
            except Exception:
                self.leader = None
            if self.rt.certs.status.rotations != getattr(self, "_announced_rotations", 0):
                self._announced_rotations = self.rt.certs.status.rotations
                await self.loop.run_in_executor(None, update_member, self.rt.zk, "masters", self.cfg.name,
                                                self._member_info())

    def _member_info(self) -> dict:
        return {"name": self.cfg.name, "endpoint": self.cfg.internal_url, "public": self.cfg.public_url,
                "spiffe_id": self.cfg.spiffe_id, "cert_not_after": self.rt.certs.status.not_after,
                "started": self.rt.started}

    # -- job state hooks used by the scheduler -------------------------------------------------
    def _task_state(self, job: str, n: int, doc: dict) -> None:
        # Recorded without blocking dispatch, and coalesced: all task states that change within a
        # few milliseconds go to ZooKeeper in one transaction (one write, one fsync).
        first = not self._task_batch
        self._task_batch[(job, n)] = doc
        if first:
            self.loop.call_later(0.005, self._flush_tasks)

    def _flush_tasks(self) -> None:
        batch, self._task_batch = self._task_batch, {}
        if batch:
            self.loop.run_in_executor(None, self.jobs.put_tasks, batch, self._tasks_created)
            if len(self._tasks_created) > 100_000:
                self._tasks_created.clear()

    def _progress(self, job: str, progress: float) -> None:
        self.loop.run_in_executor(None, lambda: self.jobs.update_job(job, progress=progress))
        self.emit("job_progress", severity="info", job=job, progress=progress, audience=self._owner(job))

    def audit_decision(self, principal, request: web.Request, what: str, allowed: bool, why: str) -> None:
        self.audit.record(who=principal.sub, role=principal.role, what=what,
                          where=client_addr(request),
                          decision="allow" if allowed else "deny", why=why)

    def _owner(self, job: str) -> str | None:
        task = self.running.get(job)
        return getattr(task, "histo_owner", None)

    def readiness(self) -> tuple[bool, dict]:
        checks = self.rt.checks()
        checks["leader"] = {"ok": self.leader is not None, "leader": self.leader, "self": self.is_leader}
        checks["workers"] = {"ok": bool(self.workers), "count": len(self.workers)}
        checks["masters"] = {"ok": self.cfg.name in self.masters, "count": len(self.masters)}
        ready = all(checks[k]["ok"] for k in ("zookeeper", "certificate", "leader"))
        return ready, checks

    def startup_timings(self) -> dict:
        return {k: round(v, 4) for k, v in self.rt.timings.items()}


def run(cfg: ServiceConfig) -> None:
    asyncio.run(Master(cfg).serve())
