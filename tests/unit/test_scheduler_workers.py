"""The scheduler names the workers that computed a job (for its receipt), and drops the late results
of a cancelled job quietly — only from the worker each attempt went to (fakes for the workers)."""
import asyncio
import io
from typing import cast

from PIL import Image

from histo.compute import equalize
from histo.compute.imageio import decode
from histo.compute.tiles import tile_apply, tile_histogram
from histo.master.scheduler import Scheduler
from histo.protocol import TaskHeader
from histo.rpc import InternalClient, Reply
from histo.tls.identity import Identity
from histo.zk.membership import Member

WORKERS = {n: Member(name=n, endpoint=f"https://w{n[-1]}", spiffe_id=f"spiffe://histo.internal/worker/{n}",
                    incarnation="i") for n in ("worker1", "worker2")}
NO_PEER = cast(Identity, None)  # the fake's replies name no peer


class FakeWorkers:
    """POST /internal/v1/tasks: answers 202 and reports the computed result a moment later, or never."""

    def __init__(self, report: bool = True) -> None:
        self.sched: Scheduler | None
        self.sent: list[tuple[TaskHeader, str]]
        self.report, self.sched, self.sent = report, None, []

    async def request(self, method: str, url: str, roles: tuple[str, ...], headers: dict[str, str] | None = None,
                      data: bytes | memoryview | None = None, expect_host: str | None = None) -> Reply:
        assert headers is not None and data is not None
        hdr = TaskHeader.from_headers(headers)
        worker = "worker1" if url.startswith("https://w1") else "worker2"
        self.sent.append((hdr, worker))
        if hdr.cached:
            return Reply(409, b"", "application/json", NO_PEER)  # no cache here: the table and tile come again
        if self.report:
            body = bytes(data)
            if hdr.phase == "hist":
                payload = str(tile_histogram(body, hdr.image_mode, hdr.width, hdr.rows)).encode()
            else:
                payload = tile_apply(body[256:], hdr.image_mode, hdr.width, hdr.rows, list(body[:256]))
            assert self.sched is not None
            asyncio.get_running_loop().call_soon(self.sched.accept_result, hdr, worker, payload)
        return Reply(202, b"", "application/json", NO_PEER)


def scheduler(fake: FakeWorkers) -> Scheduler:
    sched = Scheduler(cast(InternalClient, fake), "https://m", lambda: dict(WORKERS), lambda *a: None, lambda *a: None,
                      task_timeout=5, tiles_per_worker=2)
    fake.sched = sched
    return sched


def prepared() -> tuple[equalize.Prepared, bytes]:
    buf = io.BytesIO()
    Image.linear_gradient("L").resize((64, 40)).save(buf, format="PNG")
    img, fmt = decode(buf.getvalue(), 10_000_000)
    return equalize.prepare(img, fmt, "gray"), buf.getvalue()


def test_outcome_names_the_workers_that_computed() -> None:
    fake = FakeWorkers()
    prep, data = prepared()
    outcome = asyncio.run(scheduler(fake).run("job1", prep, {}))
    assert outcome.workers == ["worker1", "worker2"] and outcome.tiles == 4
    assert outcome.result.image == equalize.equalize_single(data, "gray").image


def test_late_results_of_a_cancelled_job_are_dropped_only_from_their_worker() -> None:
    async def run() -> None:
        fake = FakeWorkers(report=False)
        sched = scheduler(fake)
        prep, _ = prepared()
        job = asyncio.get_running_loop().create_task(sched.run("job1", prep, {}))
        while len(fake.sent) < 4:  # noqa: ASYNC110 (polls the fake's list of calls)
            await asyncio.sleep(0.01)
        job.cancel()
        await asyncio.gather(job, return_exceptions=True)
        assert not sched.pending
        (hdr, worker), (hdr2, worker2) = fake.sent[0], fake.sent[1]
        other = "worker2" if worker == "worker1" else "worker1"
        forged = sched.accept_result(hdr, other, b"[]")  # not the worker it went to: refused as before
        assert forged is not None and "no such task attempt" in forged.reason
        assert sched.accept_result(hdr, worker, b"[]") is None  # its own worker, finishing late: dropped quietly
        replayed = sched.accept_result(hdr, worker, b"[]")
        assert replayed is not None and "replayed" in replayed.reason  # once
        assert sched.accept_result(hdr2, worker2, b"[]") is None
    asyncio.run(run())
