"""The scheduler names the workers that computed a job (for its receipt), drops the late results of a
cancelled job quietly — only from the worker each attempt went to —, passes over a worker whose memory
budget is full, fails a job whose image a worker cannot decode, and refuses a result whose equalized
histogram is not what the master's table makes of its histogram (fakes for the workers' transport; their
pixel work is the real one)."""
import asyncio
import io
from typing import cast

from PIL import Image

from histo.compute import equalize, frame
from histo.compute.imageio import ImageError, encode, probe
from histo.compute.work import equalize_upload
from histo.master.scheduler import JobFailed, Outcome, RefusedResult, Scheduler, Spec
from histo.protocol import TaskHeader
from histo.rpc import InternalClient, Reply
from histo.tls.identity import Identity
from histo.zk.membership import Member

def _members(*names: str) -> dict[str, Member]:
    return {n: Member(name=n, endpoint=f"https://w{n[-1]}", spiffe_id=f"spiffe://histo.internal/worker/{n}",
                      incarnation="i") for n in names}


WORKERS = _members("worker1", "worker2")
NO_PEER = cast(Identity, None)  # the fake's replies name no peer


class FakeWorkers:
    """POST /internal/v1/tasks: answers 202 and reports the computed result a moment later, or never;
    the workers named in `busy` answer 503 (budget full) that many times."""

    def __init__(self, report: bool = True, busy: dict[str, int] | None = None) -> None:
        self.sched: Scheduler | None
        self.sent: list[tuple[TaskHeader, str]]
        self.report, self.sched, self.sent = report, None, []
        self.busy = busy or {}
        self.tamper = False
        self.forgers: set[str] = set()  # return another image of the right format and size, right histograms
        self.refusals: list[RefusedResult | None] = []

    async def request(self, method: str, url: str, roles: tuple[str, ...], headers: dict[str, str] | None = None,
                      data: bytes | memoryview | None = None, expect_host: str | None = None) -> Reply:
        assert headers is not None and data is not None
        hdr = TaskHeader.from_headers(headers)
        worker = f"worker{url.removeprefix('https://w')[0]}"
        self.sent.append((hdr, worker))
        if self.busy.get(worker):
            self.busy[worker] -= 1
            return Reply(503, b'{"error": "busy"}', "application/json", NO_PEER)
        if self.report:
            failed = None
            try:
                payload = equalize_upload(bytes(data), hdr.mode, hdr.width, hdr.rows, hdr.image_mode, hdr.job)
                if self.tamper:  # the same pixel counts, equalized by another table than the histogram's
                    result, plot = frame.unpack_result(payload)
                    h = next(iter(result.hist_after.values()))
                    i = next(i for i, v in enumerate(h) if v)
                    h[i], h[(i + 1) % 256] = h[i] - 1, h[(i + 1) % 256] + 1  # one pixel moved to its neighbour
                    payload = frame.pack_result(result, plot)
                if worker in self.forgers:  # what no header or histogram shows: the upload's own pixels
                    result, plot = frame.unpack_result(payload)
                    img = Image.open(io.BytesIO(bytes(data)))
                    result.image = encode(img.convert("L") if result.channels == ["L"] else img, result.fmt)
                    payload = frame.pack_result(result, plot)
            except ImageError as exc:
                failed, payload = exc.code, exc.message.encode()
            assert self.sched is not None
            sched = self.sched
            asyncio.get_running_loop().call_soon(
                lambda: self.refusals.append(sched.accept_result(hdr, worker, payload, failed)))
        return Reply(202, b"", "application/json", NO_PEER)


def scheduler(fake: FakeWorkers) -> Scheduler:
    sched = Scheduler(cast(InternalClient, fake), "https://m", lambda: dict(WORKERS), lambda *a: None,
                      task_timeout=5)
    fake.sched = sched
    return sched


def upload(mode: str = "gray", fmt: str = "PNG") -> tuple[bytes, Spec]:
    buf = io.BytesIO()
    Image.linear_gradient("L").resize((64, 40)).convert("RGB").save(buf, format=fmt)
    data = buf.getvalue()
    h = probe(data, 10_000_000)
    return data, Spec(mode=mode, fmt=h.fmt, width=h.width, height=h.height, work_mode=h.work_mode(mode))


def test_one_worker_decodes_counts_applies_and_encodes_bit_identical_to_one_process() -> None:
    for mode in equalize.MODES:
        for fmt in ("PNG", "JPEG"):
            fake = FakeWorkers()
            data, spec = upload(mode, fmt)
            outcome = asyncio.run(scheduler(fake).run("job1", data, spec, {}))
            single = equalize.equalize_single(data, mode)
            assert outcome.tiles == 1 and len(outcome.workers) == 1
            assert outcome.result.image == single.image and outcome.result.hist_after == single.hist_after
            assert outcome.framed is not None and frame.unpack_result(outcome.framed)[0].image == single.image
            assert [h.phase for h, _ in fake.sent] == ["equalize"]  # one exchange with one worker


def test_a_busy_worker_is_passed_over_without_counting_an_attempt() -> None:
    fake = FakeWorkers(busy={"worker1": 6, "worker2": 6})  # both full for a while (more than MAX_ATTEMPTS)
    data, spec = upload()
    outcome = asyncio.run(scheduler(fake).run("job1", data, spec, {}))
    assert outcome.result.image == equalize.equalize_single(data, "gray").image
    assert len(fake.sent) == 13  # 12 refusals, then the one that ran


def test_an_image_a_worker_cannot_decode_fails_the_job_with_that_reason_at_once() -> None:
    fake = FakeWorkers()
    data, spec = upload()
    bad = bytearray(data)
    bad[bad.index(b"IDAT") + 8:bad.index(b"IDAT") + 40] = b"\x00" * 32  # CRC kept out of it: only a decode tells
    try:
        asyncio.run(scheduler(fake).run("job1", bytes(bad), spec, {}))
    except JobFailed as exc:
        assert "cannot be processed" in str(exc)
    else:
        raise AssertionError("a corrupt image must fail the job")
    assert len(fake.sent) == 1  # not retried elsewhere: the image, not the worker, is at fault


def test_a_result_equalized_by_another_table_than_its_histograms_is_refused() -> None:
    async def run() -> None:
        fake = FakeWorkers()
        sched = scheduler(fake)
        fake.tamper = True  # the result's after-histogram does not follow from its before-histogram
        data, spec = upload()
        job = asyncio.get_running_loop().create_task(sched.run("job1", data, spec, {}))
        for _ in range(2000):  # polls the fake's calls, at most 2 s
            if [r for r in fake.refusals if r is not None] or job.done():
                break
            await asyncio.sleep(0.001)
        refused = [r for r in fake.refusals if r is not None][0]
        assert "not what its table makes of its histogram" in refused.reason
        assert not job.done() and sched.pending  # still waiting for a right answer
        job.cancel()
        await asyncio.gather(job, return_exceptions=True)
    asyncio.run(run())


def test_late_results_of_a_cancelled_job_are_dropped_only_from_their_worker() -> None:
    async def run() -> None:
        fake = FakeWorkers(report=False)
        sched = scheduler(fake)
        data, spec = upload()
        job = asyncio.get_running_loop().create_task(sched.run("job1", data, spec, {}))
        while len(fake.sent) < 1:  # noqa: ASYNC110 (polls the fake's list of calls)
            await asyncio.sleep(0.01)
        job.cancel()
        await asyncio.gather(job, return_exceptions=True)
        assert not sched.pending
        hdr, worker = fake.sent[0]
        other = "worker2" if worker == "worker1" else "worker1"
        forged = sched.accept_result(hdr, other, b"[]")  # not the worker it went to: refused as before
        assert forged is not None and "no such task attempt" in forged.reason
        assert sched.accept_result(hdr, worker, b"[]") is None  # its own worker, finishing late: dropped quietly
        replayed = sched.accept_result(hdr, worker, b"[]")
        assert replayed is not None and "replayed" in replayed.reason  # once
    asyncio.run(run())


def test_an_attempt_that_timed_out_is_retried_and_its_late_result_dropped_quietly() -> None:
    class SlowFirst(FakeWorkers):
        """The first worker asked never answers in time; the others compute at once."""

        async def request(self, method: str, url: str, roles: tuple[str, ...], headers: dict[str, str] | None = None,
                          data: bytes | memoryview | None = None, expect_host: str | None = None) -> Reply:
            self.report = bool(self.sent)
            return await super().request(method, url, roles, headers, data, expect_host)

    async def run() -> None:
        fake = SlowFirst()
        sched = Scheduler(cast(InternalClient, fake), "https://m", lambda: dict(WORKERS), lambda *a: None,
                          task_timeout=0.2)
        fake.sched = sched
        data, spec = upload()
        outcome = await sched.run("job1", data, spec, {})
        assert outcome.result.image == equalize.equalize_single(data, "gray").image
        (late_hdr, late_worker), (_, other) = fake.sent
        assert late_worker != other and outcome.workers == [other]
        late = equalize_upload(data, "gray", spec.width, spec.height, spec.work_mode, "job1")
        assert sched.admit_result(late_hdr, late_worker) == 0  # judged unread: a slow worker, not a forger
        assert sched.accept_result(late_hdr, late_worker, late) is None
        replayed = sched.accept_result(late_hdr, late_worker, late)
        assert replayed is not None and "replayed" in replayed.reason  # once
    asyncio.run(run())


def _verified(workers: dict[str, Member], forgers: set[str], fraction: float = 1.0,
              mode: str = "gray") -> tuple[object, list[tuple[str, str, str]], list[tuple[str, list[str], str]],
                                          FakeWorkers, bytes]:
    fake = FakeWorkers()
    fake.forgers = forgers
    refused: list[tuple[str, str, str]] = []
    disputed: list[tuple[str, list[str], str]] = []
    sched = Scheduler(cast(InternalClient, fake), "https://m", lambda: dict(workers), lambda *a: None,
                      task_timeout=5, verify_fraction=fraction, on_refused=lambda *a: refused.append(a),
                      on_disputed=lambda *a: disputed.append(a))
    fake.sched = sched
    data, spec = upload(mode)
    try:
        outcome: object = asyncio.run(sched.run("job1", data, spec, {}))
    except JobFailed as exc:
        outcome = exc
    return outcome, refused, disputed, fake, data


def test_a_forged_result_passes_every_check_on_its_own() -> None:
    """The attack verification exists for: a result whose image is another image of the job's format and
    size, with the right histograms, is accepted when nobody computes the job again (fraction 0)."""
    outcome, refused, disputed, fake, data = _verified(_members("worker1", "worker2"), {"worker1", "worker2"}, 0.0)
    assert isinstance(outcome, Outcome) and len(fake.sent) == 1 and not refused and not disputed
    assert outcome.result.image != equalize.equalize_single(data, "gray").image  # delivered, forged


def test_a_verified_job_is_computed_twice_and_names_both_workers() -> None:
    for mode in equalize.MODES:
        outcome, refused, disputed, fake, data = _verified(_members("worker1", "worker2"), set(), mode=mode)
        assert isinstance(outcome, Outcome) and not refused and not disputed
        assert outcome.result.image == equalize.equalize_single(data, mode).image
        assert outcome.workers == ["worker1", "worker2"] and len(fake.sent) == 2
        first, second = fake.sent
        assert first[1] != second[1] and first[0].attempt != second[0].attempt
        assert (first[0].job, first[0].task, first[0].phase) == (second[0].job, second[0].task, second[0].phase)


def test_a_forging_worker_is_outvoted_and_reported_and_the_majority_result_delivered() -> None:
    for forger in ("worker1", "worker2", "worker3"):  # whichever computed first, verified or decided
        outcome, refused, disputed, fake, data = _verified(_members("worker1", "worker2", "worker3"), {forger})
        sent = [w for _, w in fake.sent]
        if forger not in sent[:2]:  # the first two agreed: nothing to decide
            assert isinstance(outcome, Outcome) and not refused and len(sent) == 2
            continue
        assert isinstance(outcome, Outcome), outcome
        assert outcome.result.image == equalize.equalize_single(data, "gray").image
        assert forger not in outcome.workers and len(outcome.workers) == 2 and len(sent) == 3
        assert [(job, worker) for job, worker, _ in refused] == [("job1", forger)] and not disputed
        assert "outvoted" in refused[0][2]


def test_two_workers_that_disagree_deliver_nothing_and_are_both_named() -> None:
    outcome, refused, disputed, fake, _ = _verified(_members("worker1", "worker2"), {"worker2"})
    assert isinstance(outcome, JobFailed) and "different results" in str(outcome)
    assert not refused and [(job, workers) for job, workers, _ in disputed] == [("job1", ["worker1", "worker2"])]
    assert "no third worker" in disputed[0][2]


def test_with_one_worker_a_sampled_job_is_delivered_unverified() -> None:
    outcome, refused, disputed, fake, data = _verified(_members("worker1"), set())
    assert isinstance(outcome, Outcome) and outcome.workers == ["worker1"] and len(fake.sent) == 1
    assert not refused and not disputed

