"""The histo master: public HTTPS API, leader election, the scheduler (on the leader),
and the internal mTLS endpoint where workers report results and masters forward calls."""
from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from aiohttp import web

from ..config import ServiceConfig
from ..edge.audit import AuditLog
from ..edge.middleware import client_addr
from ..edge.events import EventBus, EventFile
from ..rpc import InternalClient, PeerRefused
from ..tls.revocation import REVOKED
from ..runtime import ServiceRuntime
from ..zk import acl as zkacl
from ..serve import Listener, run as run_service
from ..zk.election import LeaderElection
from ..zk.acl import ACTIVE, JOBS
from ..zk.client import call as zkcall
from ..zk.jobs import JobStore, is_tombstone
from ..zk.membership import Member, remove_stale, watch
from ..zk.revocations import RevocationStore
from . import api, internal, relay, secopsfeed
from .auth import Authenticator
from kazoo.recipe.watchers import ChildrenWatch

from ..compute.plot import plot_histograms
from ..edge import receipts
from ..tls.identity import spiffe_id
from .blobstore import BlobStore
from .datakeys import KeysUnavailable, VaultDataKeys
from .floating import StateFile, state_of
from .quarantine import QuarantineFollower, remove_member
from .replication import MtlsTransport, Replicator
from .runner import JobRunner, Settings
from .scheduler import Outcome, Scheduler

log = logging.getLogger("histo.master")

KEY_REFILL_PER_TICK = 32  # data keys made ahead per second at most (datakeys.py pool)
RECEIPT_SIGN_TIMEOUT = 5.0  # seconds; slower, and the receipt is signed on its first request instead


class Master:
    def __init__(self, cfg: ServiceConfig) -> None:
        self.cfg = cfg
        self.loop: asyncio.AbstractEventLoop | None = None
        self.event_file = EventFile(cfg.secops_events_file) if cfg.secops_events_file else None
        self.events = EventBus(sink=self.event_file.write if self.event_file else None)
        self.secops = secopsfeed.SecopsFeed(self.emit)  # the collector's record, as its relay pushes it
        self.audit = AuditLog(Path(cfg.state_dir) / "audit.log")
        self.rt = ServiceRuntime(cfg, on_event=self.emit)
        self.store = BlobStore(cfg.store_path)
        self.keys = VaultDataKeys(lambda: self.rt.vault.client, cfg.key_cache_size, pool_size=cfg.key_pool_size,
                                  pool_max_age=cfg.key_pool_max_age)
        self.signer = receipts.VaultReceiptSigner(lambda: self.rt.vault.client)
        self.runner: JobRunner | None = None
        self.workers: dict[str, Member] = {}
        self.masters: dict[str, Member] = {}
        # name -> when its process last answered a liveness probe with the incarnation of its node
        self.live: dict[str, float] = {}
        self.leader_answered = False  # the leader we name answered, and says it leads
        self.leader: str | None = None
        self.is_leader = False
        self.jobs: JobStore | None = None
        self.scheduler: Scheduler | None = None
        self.client: InternalClient | None = None
        self.auth: Authenticator | None = None
        self.running: dict[str, asyncio.Task] = {}
        self.election: LeaderElection | None = None
        self._resume_lock = asyncio.Lock()
        self._resume_again = False
        self._task_batch: dict[tuple[str, int], dict] = {}
        self._tasks_created: set[tuple[str, int]] = set()
        # keepalived's view of this master (master/floating.py); none in local mode or without the address
        self.floating = (StateFile(cfg.public_state_file)
                         if cfg.public_address and cfg.public_address_mode == "keepalived" else None)
        self.quarantine = QuarantineFollower(lambda: self.rt.vault.client, self._quarantine_changed)
        self._contained: dict[str, dict] = {}  # host -> its quarantine record (master/quarantine.py)
        self.released: dict[str, dict] = {}  # host -> its last record, with when it was released

    # -- events (thread-safe: kazoo callbacks run in their own threads) -----------------------
    def emit(self, kind: str, **fields) -> None:
        fields.setdefault("service", self.cfg.name)
        self.events.publish(kind, **fields)

    def _outvoted(self, job: str, worker: str, reason: str) -> None:
        """A worker whose result two others contradicted (master/scheduler.py): a forged result."""
        self.emit("result_refused", severity="warning", worker=worker, job=job, task=0, reason=reason)
        self.audit.record(who=spiffe_id("worker", worker, self.cfg.trust_domain), role="worker",
                          what="internal:result", where="-", decision="deny", why=reason)

    def _disputed(self, job: str, workers: list[str], reason: str) -> None:
        """Workers whose results differ with no majority: one of them lied, which is not known."""
        for worker in workers:
            self.emit("result_disputed", severity="critical", worker=worker, job=job, reason=reason)

    # -- membership and leadership ------------------------------------------------------------
    def _workers_changed(self, members: dict[str, Member]) -> None:
        members = {n: m for n, m in members.items() if not REVOKED.is_denied(n)}  # quarantined: never scheduled
        gone = set(self.workers) - set(members)
        joined = set(members) - set(self.workers)
        self.workers = members
        if gone and self.scheduler is not None:
            self.scheduler.workers_lost(gone)
        for name in gone:
            self.emit("worker_left", severity="warning", worker=name)
        for name in joined:
            self.emit("worker_joined", severity="info", worker=name)

    def _quarantine_changed(self, hosts: frozenset[str], records: dict[str, dict]) -> None:
        """SecOps quarantined (or an operator released) hosts (master/quarantine.py): refuse them and
        hang up on them, move their tasks elsewhere now, remove their nodes from the tree."""
        before = REVOKED.denied()
        closed = REVOKED.deny_hosts(hosts)
        lost = {n for n in self.workers if n in hosts}
        if lost:
            self.workers = {n: m for n, m in self.workers.items() if n not in hosts}
            if self.scheduler is not None:
                self.scheduler.workers_lost(lost)
        for host in sorted(hosts - before):
            role = "master" if host in self.masters else "worker"
            self.live.pop(host, None)
            self.emit("host_quarantined", severity="warning", host=host, role=role, closed=closed,
                      incident=str(records.get(host, {}).get("incident", ""))[:64])
            self.loop.run_in_executor(None, self._remove_quarantined, role, host)
        self.masters = {n: m for n, m in self.masters.items() if n not in hosts}
        for host in sorted(before - hosts):
            self.emit("host_released", severity="info", host=host)
            self.released[host] = {**self._contained.get(host, {"host": host}), "released": time.time()}
            while len(self.released) > 20:  # the dashboard's recent releases, not a history (the record is)
                self.released.pop(next(iter(self.released)))
        for host in hosts:
            self.released.pop(host, None)
        self._contained = dict(records)

    def incidents(self) -> list[dict]:
        """The quarantined hosts (contained, or partly) and the recent releases, newest first, each with
        what the operator runs to give it back, and the open and alerted incidents the collector pushed
        (the SecOps dashboard's incidents panel)."""
        out = []
        for host, rec in self._contained.items():
            ok = all(a.get("ok") for a in rec.get("actions", []))
            out.append({**rec, "host": host, "state": "contained" if ok else "partly contained",
                        "release": f"make readmit HOST={host} (a root token, the machine rebuilt, make "
                                   f"provision, histo quarantine release {host}, site.yml on {host})"})
        out += [{**rec, "state": "released"} for rec in self.released.values()]
        # what the collector detected and did not contain (alert rules, dry runs, guard rails), as its
        # relay pushed it; a host Vault holds is listed once, as contained
        out += [i for i in self.secops.open_incidents() if i["host"] not in self._contained]
        return sorted(out, key=lambda r: float(r.get("released") or r.get("since") or 0), reverse=True)

    def _remove_quarantined(self, role: str, host: str) -> None:
        try:
            removed = zkcall(self.rt.zk, lambda: remove_member(self.rt.zk, role, host))
            if removed:
                log.warning("quarantined %s: removed %s", host, ", ".join(removed))
        except Exception as exc:  # the next change, or its session's end, removes them
            log.warning("quarantined %s: its nodes not removed yet: %s", host, exc)

    def _masters_changed(self, members: dict[str, Member]) -> None:
        self.masters = {n: m for n, m in members.items() if not REVOKED.is_denied(n)}
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
        self.loop.create_task(self._resume())

    def _stepped_down(self) -> None:
        was = self.is_leader
        self.is_leader = False
        if was:
            self.emit("leader_changed", severity="warning", leader=None, reason="session lost")
            for task in list(self.running.values()):
                task.cancel()

    async def _resume(self, listed: list[str] | None = None) -> list[str]:
        """Jobs a previous leader left queued or running, and jobs another master accepted, are started
        from their stored uploads. One pass at a time; a change seen during a pass runs another.
        `listed`: /histo/active as the watch that calls it just read it (its first pass reads no more)."""
        if self._resume_lock.locked():
            self._resume_again = True
            return []
        started: list[str] = []
        async with self._resume_lock:
            self._resume_again = True
            while self._resume_again and self.is_leader:
                self._resume_again = False
                try:
                    started += await self.runner.resume_all(listed)
                    listed = None  # a pass after a change seen meanwhile reads the list again
                except Exception as exc:
                    log.warning("resuming jobs: %s: %s", type(exc).__name__, exc)
                    break
        return started

    def _active_changed(self, children: list[str]) -> bool:
        """The watch on /histo/active (a kazoo thread): a job queued by another master starts at once."""
        if self.is_leader and self.loop is not None:
            listed = list(children)
            self.loop.call_soon_threadsafe(self._active_now, listed)
        return True  # keep watching

    def _active_now(self, children: list[str]) -> None:
        """A resume pass, unless every active job already runs (or is being accepted) here: the change
        was one of this master's own jobs coming or going (finished: its entry removed), and a pass
        would only read /histo/active again. Anything missed is caught by the upkeep's pass (10 s)."""
        runner = self.runner
        if runner is not None and all(runner.is_mine(job) for job in children):
            return
        self.loop.create_task(self._resume(children))

    async def jobs_in_flight(self) -> int:
        """Jobs queued or running in the cluster, as the job admission counts them: the leader's own,
        a standby's from /histo/active."""
        if self.is_leader:
            return len(self.running)
        return len(await self.loop.run_in_executor(None, self.jobs.active))

    async def wait_job_end(self, job_id: str, timeout: float) -> dict | None:
        """The job's document once it is no longer queued or running, or after `timeout` seconds: a
        ZooKeeper watch on its znode, so any master can long-poll any job."""
        changed = asyncio.Event()
        deadline = self.loop.time() + timeout
        path = f"{JOBS}/{job_id}"

        def fired(_event: object) -> None:
            self.loop.call_soon_threadsafe(changed.set)
        doc = None
        while True:
            changed.clear()
            try:
                raw, _ = await self.loop.run_in_executor(None, lambda: zkcall(self.rt.zk, self.rt.zk.get, path,
                                                                                 watch=fired))
                doc = json.loads(raw)
            except Exception:  # gone or unreadable: the caller answers from what it has
                return doc
            if is_tombstone(doc) or doc.get("state") not in ("queued", "running"):
                return doc
            left = deadline - self.loop.time()
            if left <= 0:
                return doc
            try:
                await asyncio.wait_for(changed.wait(), left)
            except asyncio.TimeoutError:
                return doc

    def follow(self, job_id: str, owner: str) -> None:
        """A job this standby accepted runs on the leader, whose events reach the leader's own streams
        only: tell this master's streams (the owner's UI, connected here through the public address)
        how it ended, from the same ZooKeeper watch a long poll uses."""
        async def watch() -> None:
            doc = await self.wait_job_end(job_id, self.cfg.job_timeout * self.cfg.max_job_runs + 60)
            if doc is None or is_tombstone(doc) or self.is_leader:  # gone, or this master ran it (and said so)
                return
            if doc.get("state") == "done":
                self.emit("job_progress", severity="info", job=job_id, progress=1.0, state="done", audience=owner)
            elif doc.get("state") == "failed":
                self.emit("job_failed", severity="warning", job=job_id, reason=doc.get("reason"), audience=owner)
        self.loop.create_task(watch())

    def _other_masters(self) -> dict[str, Member]:
        return {n: m for n, m in self.masters.items() if n != self.cfg.name}

    async def _receipt_at_finish(self, doc: dict, outcome: Outcome, finished: float) -> dict:
        """Signed once, when the job finishes, and kept with the job. Vault away: the claims are kept
        instead and signed on the first request for the receipt."""
        td = self.cfg.trust_domain
        claims = receipts.claims_for(doc, result_sha256=hashlib.sha256(outcome.result.image).hexdigest(),
                                     workers=[spiffe_id("worker", w, td) for w in outcome.workers],
                                     master=self.cfg.spiffe_id, finished=finished)
        try:  # bounded: a Vault that hangs must not hold the job back
            signing = asyncio.get_running_loop().run_in_executor(None, self.signer.sign, claims)
            return {"receipt": await asyncio.wait_for(signing, RECEIPT_SIGN_TIMEOUT)}
        except (receipts.SigningUnavailable, asyncio.TimeoutError) as exc:
            log.warning("receipt of job %s not signed yet: %s", doc["id"], exc or "Vault too slow")
            return {"receipt_claims": claims}

    # -- the service skeleton's hooks (histo.serve) ------------------------------------------
    async def setup(self) -> list[Listener]:
        self.loop = asyncio.get_running_loop()
        # kazoo, Vault and blob calls share the default executor; its default size (cores + 4) is
        # small enough for a few calls waiting out a ZooKeeper outage to starve every request
        self.loop.set_default_executor(ThreadPoolExecutor(max_workers=32, thread_name_prefix="master-io"))
        self.events.bind(self.loop)
        zk = self.rt.zk
        await self.loop.run_in_executor(None, zkacl.bootstrap_tree, zk, self.rt.acl_ids)
        self.jobs = JobStore(zk)
        self.client = InternalClient(self.rt.certs.contexts.internal_client, self.cfg.trust_domain,
                                     source_address=self.cfg.address)
        self.scheduler = Scheduler(self.client, self.cfg.internal_url, self.schedulable_workers,
                                   self._task_state, self.cfg.task_timeout, verify_fraction=self.cfg.verify_fraction,
                                   on_refused=self._outvoted, on_disputed=self._disputed)
        replicas = Replicator(self.cfg.name, self.store, MtlsTransport(lambda: self.client, self._other_masters,
                                                              max_blob=self.cfg.max_blob_bytes),
                              self.cfg.store_quorum, on_event=self.emit)
        self.runner = JobRunner(
            self.cfg.name, self.jobs, replicas, self.keys, self.scheduler.run,
            lambda r, title: plot_histograms(r.hist_before, r.hist_after, title=title), self._receipt_at_finish,
            Settings(retention=self.cfg.job_retention, quota=self.cfg.store_quota_bytes,
                     job_timeout=self.cfg.job_timeout, max_runs=self.cfg.max_job_runs),
            emit=self.emit, leader=lambda: self.leader)
        self.running = self.runner.running
        self.auth = Authenticator(self, RevocationStore(zk))
        await self.loop.run_in_executor(None, self.auth.start)
        ctxs = self.rt.certs.contexts
        return [Listener(api.build_app(self), self.cfg.address, self.cfg.public_port, ctxs.public_server,
                         public=True, also=self.cfg.public_address,
                         also_shared=self.cfg.public_address_mode == "shared"),
                Listener(internal.build_app(self), self.cfg.address, self.cfg.internal_port,
                         ctxs.internal_server)]

    async def started(self) -> None:
        zk = self.rt.zk
        watch(zk, "workers", lambda m: self.loop.call_soon_threadsafe(self._workers_changed, m))
        watch(zk, "masters", lambda m: self.loop.call_soon_threadsafe(self._masters_changed, m))
        self.rt.join("masters", public=self.cfg.public_url, take_over=True)
        ChildrenWatch(zk, ACTIVE, self._active_changed)
        self.election = LeaderElection(zk, self.cfg.name, on_elected=self._elected, on_lost=self._lost)
        await self.loop.run_in_executor(None, self.election.start)
        log.info("master %s ready: public %s internal %s (start %.2fs)", self.cfg.name, self.cfg.public_url,
                 self.cfg.internal_url, self.rt.timings["total"])

    def background(self) -> list:
        return [self._watch_loop(), self._jobs_loop(), self.quarantine.follow()]

    async def stopping(self) -> None:
        if self.floating is not None:  # keepalived moves the public address away at its next check
            self.floating.withdraw()
        if self.election is not None:
            self.election.stop()
        if self.client is not None:
            await self.client.close()

    async def _collect_worker_events(self) -> None:
        """Workers report their own security events (an mTLS rejection at a worker, its certificate
        rotations) in their status; the leader relays a fixed set of kinds, attributed to the
        certificate that answered (master/relay.py)."""
        for name, member in list(self.workers.items()):
            try:
                reply = await self.client.request("GET", member.endpoint + "/internal/v1/status", ("worker",),
                                                  expect_host=name, timeout=5, max_body=64 * 1024)
                if reply.status != 200:
                    continue
                doc = json.loads(reply.body)
                events, refused = relay.accept(doc.get("events") if isinstance(doc, dict) else None,
                                               reply.peer.host)
                for ev in events:
                    self.emit(ev.pop("kind"), **ev)
                if refused:
                    self.emit("relay_refused", severity="warning", service=self.cfg.name, worker=reply.peer.host,
                              count=refused, reason="events of kinds a worker may not report, or too many")
            except Exception as exc:
                log.debug("status of %s unavailable: %s", name, exc)

    async def _watch_loop(self) -> None:
        """Once a second: who leads (the election's contenders change without a membership event
        when a leader steps down), and which members are live processes — each is asked over mTLS
        for its incarnation, which must be the one in its node. The leader also relays the workers'
        security events and prunes expired revocations."""
        ticks = 0
        while True:
            ticks += 1
            try:
                self.leader = await self.loop.run_in_executor(None, zkcall, self.rt.zk, self.election.leader)
            except Exception:
                self.leader = None
            await self._probe_members()
            if self.floating is not None:
                try:
                    self.floating.publish(state_of(self.readiness()[0], self.is_leader))
                except OSError as exc:
                    log.warning("cannot publish the public address state: %s", exc)
            if self.is_leader and ticks % 3 == 0:
                await self._collect_worker_events()
            if self.is_leader and ticks % 60 == 0:
                try:
                    await self.loop.run_in_executor(None, self.auth.store.prune)
                except Exception as exc:
                    log.debug("revocation prune: %s", exc)
            await asyncio.sleep(1.0)

    async def _jobs_loop(self) -> None:
        """Job upkeep, apart from the watch loop (a long repair pass must not delay liveness probes)."""
        ticks = 0
        while True:
            ticks += 1
            await asyncio.sleep(1.0)
            await self._upkeep_jobs(ticks)

    async def _upkeep_jobs(self, ticks: int) -> None:
        """The leader resumes what waits (an upload a peer held, a key while Vault was away) and applies
        retention; every master catches up with the blobs it misses (soon after start, then regularly)."""
        # handed-over keys and kept uploads live only as long as their jobs may need them (60 s, 30 s)
        self.keys.handoffs.expire()
        self.runner.replicas.expire_recent()
        steps = [("key pool", self._refill_keys)]
        if self.is_leader and ticks % 10 == 0:
            steps.append(("resume", self._resume))
        if self.is_leader and ticks % self.cfg.gc_interval == 0:
            steps.append(("retention", self.runner.retain))
        if ticks == 3 or ticks % self.cfg.repair_interval == 0:
            steps.append(("repair", self.runner.repair))
        for what, step in steps:
            try:
                done = await step()
                if done:
                    log.info("%s: %s", what, done)
            except Exception as exc:
                log.warning("%s: %s: %s", what, type(exc).__name__, exc)

    async def _refill_keys(self) -> str:
        """Data keys made ahead while Vault answers (datakeys.py); quiet while it is away (the pool
        is what carries uploads then, and an upload that finds it empty says why)."""
        try:
            # a few dozen a second: a fresh master fills its pool over seconds, never in one burst at Vault
            await self.loop.run_in_executor(None, self.keys.refill, KEY_REFILL_PER_TICK)
        except KeysUnavailable:
            pass
        return ""

    async def _probe_members(self) -> None:
        members = [("workers", "worker", m) for m in list(self.workers.values())]
        members += [("masters", "master", m) for m in list(self.masters.values()) if m.name != self.cfg.name]
        replies = await asyncio.gather(*(self._probe(kind, role, m) for kind, role, m in members))
        leader_ok = self.is_leader and self.leader == self.cfg.name
        for (_kind, _role, member), says_leader in zip(members, replies):
            if member.name == self.leader and says_leader:
                leader_ok = True
        self.leader_answered = leader_ok

    async def _probe(self, kind: str, role: str, member: Member) -> bool:
        """True if `member` answered as a live leader; records liveness in self.live."""
        try:
            reply = await self.client.request("GET", member.endpoint + "/internal/v1/ping", (role,),
                                              expect_host=member.name, timeout=2.0, max_body=4096)
            doc = json.loads(reply.body) if reply.status == 200 else {}
        except PeerRefused as exc:
            # The node names an endpoint served by another identity: not this member, whatever it says.
            self.live.pop(member.name, None)
            self.emit("member_endpoint_refused", severity="warning", member=member.name, reason=str(exc))
            return False
        except Exception:
            self.live.pop(member.name, None)  # not answering (yet): not live; its session decides
            return False
        if isinstance(doc, dict) and member.incarnation and doc.get("incarnation") == member.incarnation:
            self.live[member.name] = time.time()
            return bool(doc.get("is_leader"))
        self.live.pop(member.name, None)
        if isinstance(doc, dict) and doc.get("incarnation"):
            # Another process of that host answers: the node is a previous incarnation's, alive in
            # ZooKeeper only until its session expires. Masters administer the tree: remove it now.
            if await self.loop.run_in_executor(None, remove_stale, self.rt.zk, kind, member):
                log.info("removed %s's node left by a previous process", member.name)
        return False

    def live_masters(self) -> int:
        """Masters whose process answered lately, this one included (at least 1)."""
        return max(1, sum(1 for n in self.masters if self.is_live(n)))

    def is_live(self, name: str, within: float = 5.0) -> bool:
        return name == self.cfg.name or time.time() - self.live.get(name, 0.0) <= within

    def schedulable_workers(self) -> dict[str, Member]:
        """Workers whose process answered lately; all registered ones if none did (a probe hiccup
        must not fail jobs that the workers could run)."""
        live = {n: m for n, m in self.workers.items() if self.is_live(n)}
        return live or dict(self.workers)

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

    def audit_decision(self, principal, request: web.Request, what: str, allowed: bool, why: str) -> None:
        self.audit.record(who=principal.sub, role=principal.role, what=what,
                          where=client_addr(request),
                          decision="allow" if allowed else "deny", why=why)

    def readiness(self) -> tuple[bool, dict]:
        """Only live participants count: a worker or master whose process answered with its node's
        incarnation, a leader that answered and says it leads."""
        checks = self.rt.checks()
        own = self.masters.get(self.cfg.name)
        registered = own is not None and own.incarnation == self.rt.incarnation
        live_workers = sorted(n for n in self.workers if self.is_live(n))
        live_masters = sorted(n for n in self.masters if self.is_live(n) and (n != self.cfg.name or registered))
        leader_why = None
        if self.leader is None:
            leader_why = "no leader elected"
        elif not self.leader_answered:
            leader_why = f"leader {self.leader} has not answered as leader"
        checks["leader"] = {"ok": leader_why is None, "leader": self.leader, "self": self.is_leader,
                            "error": leader_why}
        checks["workers"] = {"ok": bool(live_workers), "count": len(live_workers), "live": live_workers,
                             "registered": len(self.workers)}
        checks["masters"] = {"ok": registered, "count": len(live_masters), "live": live_masters,
                             "registered": len(self.masters),
                             "error": None if registered else "this master's membership node is not published yet"}
        # uploads need store_quorum masters able to store them (degraded, not unready: results are served)
        quorum = self.cfg.store_quorum
        checks["store"] = {"ok": len(live_masters) >= quorum, "quorum": quorum, "masters": len(live_masters),
                           "error": None if len(live_masters) >= quorum else
                           f"{len(live_masters)} live master(s), {quorum} must store each upload: new uploads are "
                           "refused (503 not_durable)"}
        # how many uploads are accepted if Vault goes away now (master/datakeys.py)
        checks["vault"]["keys_ahead"] = self.keys.pooled()
        ready = all(checks[k]["ok"] for k in ("zookeeper", "certificate", "leader"))
        return ready, checks

    def startup_timings(self) -> dict:
        return {k: round(v, 4) for k, v in self.rt.timings.items()}


def run(cfg: ServiceConfig) -> None:
    run_service(Master(cfg))
