"""The job runner (master/runner.py) driven with fakes: ZooKeeper's job records as a dict, the peers'
stores as BlobStores in a temporary folder reached through a fake transport, Vault's data keys as a
fake key service, and the workers as the one-process reference computation."""
from __future__ import annotations

import asyncio
import base64
import copy
import os
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from histo.compute import equalize
from histo.compute.imageio import decode, probe
from histo.compute.plot import plot_histograms
from histo.master.blobstore import BlobStore
from histo.master.datakeys import HANDOFF_MAX_AGE, Handoffs, KeysUnavailable, VaultDataKeys
from histo.master.envelope import BlobError, DataKey, digest, open_blob, parse, seal
from histo.master.replication import Replicator
from histo.master.runner import JobRunner, RunnerError, Settings
from histo.master.scheduler import Outcome, Spec
from histo.testing.cluster import PIXEL_RUN, clear_probes, png_with_pixel_run
from histo.zk.jobs import DELETED, EXPIRED, created_of, is_tombstone, new_job_id

Doc = dict[str, Any]


class FakeJobs:
    """The JobRecords of zk/jobs.py over a dict (one ZooKeeper shared by every master)."""

    def __init__(self) -> None:
        self.docs: dict[str, Doc] = {}
        self.active_ids: set[str] = set()
        self.used: dict[str, int] = {}
        self.tasks_dropped: set[str] = set()
        self.writes: list[tuple[str, str]] = []  # (call, job) of every write of a job's document

    def create_job(self, job_id: str, doc: Doc) -> None:
        assert job_id not in self.docs
        self.docs[job_id] = copy.deepcopy(doc)
        self.active_ids.add(job_id)

    def get_job(self, job_id: str) -> Doc | None:
        doc = self.docs.get(job_id)
        return copy.deepcopy(doc) if doc is not None else None

    def update_job(self, job_id: str, when: Any = None, **fields: Any) -> Doc:
        self.writes.append(("update_job", job_id))
        return self._merge(job_id, when, fields)[0]

    def _merge(self, job_id: str, when: Any, fields: dict[str, Any]) -> tuple[Doc, bool]:
        doc = self.docs[job_id]
        if is_tombstone(doc) or (when is not None and not when(copy.deepcopy(doc))):
            return copy.deepcopy(doc), False
        doc.update(copy.deepcopy(fields))
        return copy.deepcopy(doc), True

    def finish(self, job_id: str, when: Any = None, usage: tuple[str, int] | None = None, **fields: Any) -> Doc:
        self.writes.append(("finish", job_id))
        doc, written = self._merge(job_id, when, fields)
        if written:
            self.active_ids.discard(job_id)
            if usage is not None:
                self.add_usage(*usage)
        return doc

    def tombstone(self, job_id: str, by: str, reason: str = "deleted") -> tuple[Doc, Doc] | None:
        doc = self.docs.get(job_id)
        if doc is None:
            return None
        if is_tombstone(doc):
            return doc, doc
        stone = {"id": job_id, "owner": doc["owner"], "state": DELETED, "deleted": time.time() if by != "retention"
                 else CLOCK[0], "deleted_by": by, "reason": reason}
        self.docs[job_id] = stone
        self.active_ids.discard(job_id)
        return copy.deepcopy(doc), stone

    def drop_tasks(self, job_id: str, attempts: int = 20) -> None:
        self.tasks_dropped.add(job_id)

    def remove(self, job_id: str, owner: str | None) -> None:
        self.docs.pop(job_id, None)

    def active(self) -> list[str]:
        return sorted(self.active_ids)

    def deactivate(self, job_id: str) -> None:
        self.active_ids.discard(job_id)

    def job_names(self) -> list[str]:
        return sorted(self.docs)

    def usage(self, owner: str) -> int:
        return self.used.get(owner, 0)

    def add_usage(self, owner: str, delta: int) -> int:
        self.used[owner] = max(0, self.used.get(owner, 0) + delta)
        return self.used[owner]


class Net:
    """The masters' stores, each reachable unless it is down."""

    def __init__(self, root: Path, names: list[str]) -> None:
        self.stores = {n: BlobStore(root / n) for n in names}
        self.down: set[str] = set()
        self.keys: dict[str, FakeKeys] = {}  # each master's key service (a handed-over key reaches it)


class FakeTransport:
    def __init__(self, net: Net, me: str) -> None:
        self.net, self.me = net, me

    def peers(self) -> list[str]:
        return [n for n in sorted(self.net.stores) if n != self.me]

    async def put(self, peer: str, job: str, kind: str, blob: bytes, tag: str, key: bytes | None = None) -> bool:
        if peer in self.net.down or digest(blob) != tag:
            return False
        self.net.stores[peer].put(job, kind, blob)
        if key is not None and peer in self.net.keys:  # internal.py store_put, on the leader
            self.net.keys[peer].offer(parse(blob).wrapped_key, key)
        return True

    async def get(self, peer: str, job: str, kind: str) -> bytes | None:
        return None if peer in self.net.down else self.net.stores[peer].get(job, kind)

    async def delete(self, peer: str, job: str) -> bool:
        if peer in self.net.down:
            return False
        self.net.stores[peer].delete(job)
        return True


class FakeKeys:
    """Vault's transit datakey/decrypt: `down` makes every call fail; a cache as VaultDataKeys keeps."""

    def __init__(self) -> None:
        self.vault: dict[str, bytes] = {}  # what only Vault can unwrap
        self.cache: dict[str, bytes] = {}
        self.down = False
        self.forgotten: list[str] = []
        self.unwraps = 0  # calls that reached Vault
        self.handed: dict[str, bytes] = {}

    def new_key(self) -> DataKey:
        if self.down:
            raise KeysUnavailable("Vault is unreachable, so data keys cannot be created (ConnectionError)")
        key = DataKey(os.urandom(32), f"vault:v1:{os.urandom(12).hex()}")
        self.vault[key.wrapped] = key.plaintext
        self.cache[key.wrapped] = key.plaintext
        return key

    def unwrap(self, wrapped: str) -> bytes:
        if wrapped in self.cache:
            return self.cache[wrapped]
        if self.down:
            raise KeysUnavailable("Vault is unreachable, so data keys cannot be unwrapped (ConnectionError)")
        self.unwraps += 1
        self.cache[wrapped] = self.vault[wrapped]
        return self.cache[wrapped]

    def forget(self, wrapped: str) -> None:
        self.cache.pop(wrapped, None)
        self.handed.pop(wrapped, None)
        self.forgotten.append(wrapped)

    def offer(self, wrapped: str, plaintext: bytes) -> None:
        self.handed[wrapped] = plaintext

    def offered(self, wrapped: str) -> bytes | None:
        return self.handed.pop(wrapped, None)



CLOCK = [time.time()]


class Gate:
    """Holds the computation of every job until released (a leader killed mid-job)."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.hold = False


def reference_compute(gate: Gate | None = None) -> Any:
    async def compute(job_id: str, upload: bytes, spec: Spec, timings: dict[str, float]) -> Outcome:
        if gate is not None and gate.hold:
            gate.started.set()
            await gate.release.wait()
        img, fmt = decode(upload, 10**8)  # the worker's part, done here (compute/work.py has its own tests)
        prepared = equalize.prepare(img, fmt, spec.mode)
        assert (prepared.work.size, prepared.work.mode) == ((spec.width, spec.height), spec.work_mode)
        hist = prepared.work.histogram()
        out = prepared.work.point(equalize.lut_from_histogram(hist))
        return Outcome(result=equalize.finish_result(prepared, out, hist), timings={"compute": 0.0}, tiles=1,
                       workers=["worker1"])
    return compute


async def no_receipt(doc: Doc, outcome: Outcome, finished: float) -> Doc:
    return {"receipt_claims": {"job": doc["id"]}}


def make(tmp: Path, names: list[str], quorum: int = 2, **settings: Any) -> tuple[dict[str, JobRunner], FakeJobs, Net,
                                                                                  dict[str, FakeKeys], Gate]:
    jobs, net, gate = FakeJobs(), Net(tmp, names), Gate()
    keys = {n: FakeKeys() for n in names}
    for k in keys.values():  # one Vault behind every master's key service
        k.vault = keys[names[0]].vault
    net.keys = keys
    runners = {n: JobRunner(n, jobs, Replicator(n, net.stores[n], FakeTransport(net, n), quorum), keys[n],
                            reference_compute(gate),
                            lambda r, title: plot_histograms(r.hist_before, r.hist_after, title=title),
                            no_receipt, Settings(**settings), clock=lambda: CLOCK[0], leader=lambda: names[0])
               for n in names}
    return runners, jobs, net, keys, gate


RUN = PIXEL_RUN
image_with_run = png_with_pixel_run


def probes(data: bytes) -> list[bytes]:
    return clear_probes(data, b"")[:2]


async def submit(runner: JobRunner, data: bytes, owner: str = "alice", mode: str = "gray") -> Doc:
    return await runner.submit(owner, data, mode, probe(data, 10**8), "sha", {"receive": 0.0, "header": 0.0})


async def settle(runner: JobRunner) -> None:
    while runner.running:
        await asyncio.gather(*runner.running.values(), return_exceptions=True)


def files_of(root: Path) -> list[bytes]:
    return [p.read_bytes() for p in root.rglob("*") if p.is_file()]


# -- submit, store, run, read back -----------------------------------------------------------------------
def test_accepted_job_is_stored_sealed_on_the_quorum_and_done_only_with_its_result_there(tmp_path: Path) -> None:
    async def go() -> None:
        runners, jobs, net, _, _ = make(tmp_path, ["master1", "master2"])
        data = image_with_run()
        assert probes(data)[1] in data and RUN[:48] in decode(data, 10**8)[0].tobytes()  # the probes work
        doc = await submit(runners["master1"], data)
        for name in ("master1", "master2"):  # held by both before submit() returned
            blob = net.stores[name].get(doc["id"], "upload")
            assert blob is not None and digest(blob) == doc["blobs"]["upload"]
        await settle(runners["master1"])
        done = jobs.docs[doc["id"]]
        assert done["state"] == "done" and set(done["blobs"]) == {"upload", "result"}
        assert doc["id"] not in jobs.active_ids
        want = equalize_single(data)
        for name in ("master1", "master2"):  # any master serves it, bit-identical to one process
            result, plot = await runners[name].result(done)
            assert result.image == want.image and result.hist_after == want.hist_after
            assert plot.startswith(b"\x89PNG")
        for name in ("master1", "master2"):  # nothing in clear on disk: not the upload, not the result
            for raw in files_of(net.stores[name].root):
                assert not any(p in raw for p in probes(data)) and want.image[200:264] not in raw
        assert jobs.used["alice"] == done["bytes"]
    asyncio.run(go())


def test_a_standby_stores_and_queues_an_upload_and_the_leader_runs_it(tmp_path: Path) -> None:
    async def go() -> None:
        runners, jobs, net, keys, _ = make(tmp_path, ["master1", "master2"])
        data = image_with_run()
        doc = await runners["master2"].submit(
            "alice", data, "gray", probe(data, 10**8), "sha", {"receive": 0.0}, start=False)
        assert not runners["master2"].running  # the standby runs nothing
        queued = jobs.docs[doc["id"]]
        assert (queued["state"], queued["master"], queued["runs"], queued["received_by"]) == ("queued", None, 0,
                                                                                             "master2")
        assert doc["id"] in jobs.active_ids and net.stores["master1"].get(doc["id"], "upload") is not None
        used, upload_bytes = jobs.usage("alice"), int(queued["bytes"])
        assert await runners["master1"].resume_all() == [doc["id"]]  # the leader's watch on the active jobs
        assert jobs.docs[doc["id"]]["state"] == "running"  # the run's own write marked it running
        await settle(runners["master1"])
        done = jobs.docs[doc["id"]]
        assert (done["state"], done["master"], done["runs"]) == ("done", "master1", 1)
        # two writes of its document on the leader: started (run, master, running), then finished (with
        # its result's bytes charged to its owner in the same write)
        assert [w for w in jobs.writes if w[1] == doc["id"]] == [("update_job", doc["id"]), ("finish", doc["id"])]
        assert jobs.usage("alice") == used + done["bytes"] - upload_bytes > used
        result, _ = await runners["master2"].result(done)  # served by the standby from its own replica
        assert result.image == equalize_single(data).image
        # the standby handed the job's key to the leader with the upload: the leader did not ask Vault,
        # and nothing handed over is left waiting
        assert keys["master1"].unwraps == 0 and not keys["master1"].handed and not keys["master2"].handed
    asyncio.run(go())


def test_a_handed_over_key_that_does_not_open_the_upload_is_not_used(tmp_path: Path) -> None:
    """A key handed over with an upload is used only once it has opened that upload; another one
    (a faulty or hostile peer) changes nothing: the leader asks Vault, and the result is the same."""
    async def go() -> None:
        runners, jobs, net, keys, _ = make(tmp_path, ["master1", "master2"])
        net.keys = {}  # the standby's handover does not arrive: a wrong key does instead
        data = image_with_run()
        doc = await runners["master2"].submit(
            "alice", data, "gray", probe(data, 10**8), "sha", {"receive": 0.0}, start=False)
        wrapped = parse(net.stores["master1"].get(doc["id"], "upload") or b"").wrapped_key
        keys["master1"].offer(wrapped, os.urandom(32))
        keys["master1"].cache.pop(wrapped, None)
        assert await runners["master1"].resume_all() == [doc["id"]]
        await settle(runners["master1"])
        done = jobs.docs[doc["id"]]
        assert done["state"] == "done" and keys["master1"].unwraps == 1
        result, _ = await runners["master1"].result(done)
        assert result.image == equalize_single(data).image
    asyncio.run(go())


def equalize_single(data: bytes) -> equalize.Result:
    return equalize.equalize_single(data, "gray")


def test_upload_not_on_the_quorum_is_refused_and_nothing_is_kept(tmp_path: Path) -> None:
    async def go() -> None:
        runners, jobs, net, _, _ = make(tmp_path, ["master1", "master2"])
        net.down.add("master2")
        with pytest.raises(RunnerError) as err:
            await submit(runners["master1"], image_with_run())
        assert err.value.status == 503 and err.value.code == "not_durable" and "master2" in err.value.message
        assert not jobs.docs and not files_of(net.stores["master1"].root)
    asyncio.run(go())


def test_vault_away_new_uploads_503_cached_keys_still_serve(tmp_path: Path) -> None:
    async def go() -> None:
        runners, jobs, _, keys, _ = make(tmp_path, ["master1", "master2"])
        doc = await submit(runners["master1"], image_with_run())
        await settle(runners["master1"])
        done = jobs.docs[doc["id"]]
        for k in keys.values():
            k.down = True
        with pytest.raises(RunnerError) as err:
            await submit(runners["master1"], image_with_run())
        assert err.value.status == 503 and err.value.code == "vault_unavailable" and "Vault" in err.value.message
        result, _ = await runners["master1"].result(done)  # its key is cached on master1
        assert result.image == equalize_single(image_with_run()).image
        with pytest.raises(RunnerError) as err2:  # master2 never unwrapped it
            await runners["master2"].result(done)
        assert err2.value.status == 503 and err2.value.code == "vault_unavailable"
        for k in keys.values():
            k.down = False
        assert (await runners["master2"].result(done))[0].image == result.image
    asyncio.run(go())


def test_quota_refused_before_anything_is_stored(tmp_path: Path) -> None:
    async def go() -> None:
        data = image_with_run()
        runners, jobs, net, _, _ = make(tmp_path, ["master1", "master2"], quota=3 * len(data))
        await submit(runners["master1"], data)
        await settle(runners["master1"])
        held = files_of(net.stores["master1"].root)
        with pytest.raises(RunnerError) as err:
            await submit(runners["master1"], data)
        assert err.value.status == 413 and err.value.code == "quota_exceeded" and "quota" in err.value.message
        assert files_of(net.stores["master1"].root) == held and len(jobs.docs) == 1
        await submit(runners["master1"], data, owner="bob")  # another user's quota is their own
    asyncio.run(go())


# -- resume -------------------------------------------------------------------------------------------
def test_a_new_leader_resumes_an_interrupted_job_bit_identical(tmp_path: Path) -> None:
    async def go() -> None:
        runners, jobs, _, _, gate = make(tmp_path, ["master1", "master2"])
        data = image_with_run()
        gate.hold = True
        doc = await submit(runners["master1"], data)
        await gate.started.wait()
        for task in runners["master1"].running.values():  # master1 loses its leadership mid-job
            task.cancel()
        await settle(runners["master1"])
        assert jobs.docs[doc["id"]]["state"] == "running" and doc["id"] in jobs.active_ids  # not failed
        gate.hold = False
        assert await runners["master2"].resume_all() == [doc["id"]]
        await settle(runners["master2"])
        done = jobs.docs[doc["id"]]
        assert done["state"] == "done" and done["master"] == "master2" and done["runs"] == 2
        assert "resubmit" not in str(done.get("reason"))
        assert (await runners["master2"].result(done))[0].image == equalize_single(data).image
        assert await runners["master2"].resume_all() == []  # nothing left to resume
    asyncio.run(go())


def test_a_run_cancelled_by_a_lost_leadership_cannot_undo_the_run_that_took_over(tmp_path: Path) -> None:
    """Cancelling a task does not stop a ZooKeeper write already in its executor thread: master1's run
    may reach ZooKeeper after master2 resumed the job, or after master2 finished it. The run number
    fences it: the stale run neither reopens a finished job nor finishes one another run holds."""
    async def go() -> None:
        runners, jobs, _, _, gate = make(tmp_path, ["master1", "master2"])
        data = image_with_run()
        gate.hold = True
        doc = await submit(runners["master1"], data)
        await gate.started.wait()
        stale = runners["master1"].running[doc["id"]]  # master1 stalls mid-job; its task is not cancelled
        gate.hold = False
        assert await runners["master2"].resume_all() == [doc["id"]]  # run 2 takes the job over
        await settle(runners["master2"])
        done = copy.deepcopy(jobs.docs[doc["id"]])
        assert done["state"] == "done" and done["runs"] == 2 and doc["id"] not in jobs.active_ids
        gate.release.set()  # run 1 completes late: it writes nothing
        await asyncio.gather(stale, return_exceptions=True)
        assert jobs.docs[doc["id"]] == done
        assert (await runners["master1"].result(done))[0].image == equalize_single(data).image
        # a run that starts late (its "running" write after the job finished) stands down at once
        CLOCK[0] += 1
        await runners["master1"]._run(doc["id"], "alice", data, {}, {**doc, "runs": 1}, keys_of(runners, done))
        assert jobs.docs[doc["id"]] == done
        # and a second resume of the same run number starts nothing
        jobs.docs[doc["id"]].update(state="running", runs=3, master="master2")
        jobs.active_ids.add(doc["id"])
        first = runners["master1"].resume(copy.deepcopy(jobs.docs[doc["id"]]))
        jobs.docs[doc["id"]].update(runs=4)  # master2 resumed it meanwhile
        assert await first is False
        assert jobs.docs[doc["id"]]["runs"] == 4 and not runners["master1"].running
    asyncio.run(go())


def keys_of(runners: dict[str, JobRunner], doc: Doc) -> DataKey:
    """The data key of the job's stored upload, as its runner unwraps it."""
    runner = runners["master2"]
    blob = runner.replicas.store.get(str(doc["id"]), "upload")
    assert blob is not None
    wrapped = parse(blob).wrapped_key
    return DataKey(plaintext=runner.keys.unwrap(wrapped), wrapped=wrapped)


def test_a_job_interrupted_max_runs_times_fails_with_that_reason(tmp_path: Path) -> None:
    async def go() -> None:
        runners, jobs, _, _, gate = make(tmp_path, ["master1", "master2"], max_runs=2)
        gate.hold = True
        doc = await submit(runners["master1"], image_with_run())
        await gate.started.wait()
        for task in runners["master1"].running.values():
            task.cancel()
        await settle(runners["master1"])
        jobs.docs[doc["id"]]["runs"] = 2
        assert await runners["master2"].resume_all() == []
        failed = jobs.docs[doc["id"]]
        assert failed["state"] == "failed" and "interrupted 2 times" in failed["reason"]
    asyncio.run(go())


# -- delete, retention ----------------------------------------------------------------------------------
def test_delete_removes_every_copy_and_the_wrapped_key(tmp_path: Path) -> None:
    async def go() -> None:
        runners, jobs, net, keys, _ = make(tmp_path, ["master1", "master2"])
        doc = await submit(runners["master1"], image_with_run())
        await settle(runners["master1"])
        wrapped = parse(net.stores["master1"].get(doc["id"], "upload") or b"").wrapped_key
        deleted = await runners["master2"].delete(doc["id"], "alice")
        assert deleted is not None and deleted[1]["state"] == DELETED
        assert not files_of(net.stores["master1"].root) and not files_of(net.stores["master2"].root)
        assert wrapped in keys["master2"].forgotten and jobs.used["alice"] == 0
        again = await runners["master1"].delete(doc["id"], "alice")
        assert again is not None and again[0] is again[1]  # a second DELETE: the tombstone (410)
        assert await runners["master1"].delete(new_job_id(), "alice") is None
    asyncio.run(go())


def test_retention_expires_jobs_then_their_tombstones(tmp_path: Path) -> None:
    async def go() -> None:
        CLOCK[0] = time.time()
        runners, jobs, net, _, _ = make(tmp_path, ["master1", "master2"], retention=100.0)
        doc = await submit(runners["master1"], image_with_run())
        await settle(runners["master1"])
        assert await runners["master1"].retain() == {"expired": 0, "removed": 0}
        CLOCK[0] += 101
        assert await runners["master1"].retain() == {"expired": 1, "removed": 0}
        stone = jobs.docs[doc["id"]]
        assert stone["state"] == DELETED and stone["reason"] == EXPIRED
        assert not files_of(net.stores["master1"].root) and not files_of(net.stores["master2"].root)
        CLOCK[0] += 101
        assert await runners["master1"].retain() == {"expired": 0, "removed": 1}
        assert not jobs.docs
    asyncio.run(go())


def test_job_ids_carry_their_creation_time_and_sort_by_it() -> None:
    a, b = new_job_id(1_000_000.0), new_job_id(1_000_001.0)
    assert a < b and created_of(a) == 1_000_000.0 and len(a) == 32 and a.isalnum()
    assert created_of("0" * 24) is None


# -- catch-up and repair -----------------------------------------------------------------------------------
def test_a_master_that_was_down_catches_up_and_a_corrupted_copy_is_replaced(tmp_path: Path) -> None:
    async def go() -> None:
        CLOCK[0] = time.time()
        runners, jobs, net, _, _ = make(tmp_path, ["master1", "master2", "master3"], quorum=2)
        net.down.add("master3")
        doc = await submit(runners["master1"], image_with_run())
        await settle(runners["master1"])
        done = jobs.docs[doc["id"]]
        assert net.stores["master3"].get(doc["id"], "result") is None
        net.down.discard("master3")
        assert (await runners["master3"].repair())["fetched"] == 2
        assert digest(net.stores["master3"].get(doc["id"], "result") or b"") == done["blobs"]["result"]
        # a corrupted copy on master2 (one byte of its ciphertext flipped) is detected and replaced
        path = net.stores["master2"].path(doc["id"], "result")
        raw = bytearray(path.read_bytes())
        raw[-5] ^= 0x01
        path.write_bytes(bytes(raw))
        result, _ = await runners["master2"].result(done)
        assert result.image == equalize_single(image_with_run()).image
        assert path.read_bytes() == net.stores["master1"].get(doc["id"], "result")
        # blobs of a job that no longer exists go (after the grace of an upload in progress)
        jobs.docs.pop(doc["id"])
        CLOCK[0] += 3600
        assert (await runners["master3"].repair())["dropped"] == 1
        assert not files_of(net.stores["master3"].root)
    asyncio.run(go())


# -- the envelope -----------------------------------------------------------------------------------------------
def test_a_sealed_blob_opens_only_for_its_job_owner_and_kind() -> None:
    key = DataKey(os.urandom(32), "vault:v1:x")
    job = new_job_id()
    blob = seal(key, job, "alice", "upload", b"pixels")
    assert open_blob(key.plaintext, blob, job, "alice", "upload") == b"pixels"
    for j, owner, kind in ((new_job_id(), "alice", "upload"), (job, "bob", "upload"), (job, "alice", "result")):
        with pytest.raises(BlobError):
            open_blob(key.plaintext, blob, j, owner, kind)
    tampered = bytearray(blob)
    tampered[-1] ^= 1
    with pytest.raises(BlobError):
        open_blob(key.plaintext, bytes(tampered), job, "alice", "upload")
    with pytest.raises(BlobError):
        parse(b"not a blob at all")
    assert key.plaintext.hex() not in repr(key)  # the repr never shows the plaintext


class _Transit:
    def __init__(self) -> None:
        self.down = False
        self.calls = 0

    def generate_data_key(self, name: str, key_type: str, bits: int, mount_point: str) -> Doc:
        self.calls += 1
        if self.down:
            raise requests.ConnectionError("down")
        plaintext = base64.b64encode(os.urandom(32)).decode()
        return {"data": {"plaintext": plaintext, "ciphertext": f"vault:v1:{self.calls}"}}

    def decrypt_data(self, name: str, ciphertext: str, mount_point: str) -> Doc:
        self.calls += 1
        raise AssertionError("cached keys are not unwrapped again")


def test_vault_data_keys_are_cached_bounded() -> None:
    transit = _Transit()

    class Client:
        secrets = type("S", (), {"transit": transit})()

    keys = VaultDataKeys(lambda: Client(), cache_size=2)
    k1, k2, k3 = keys.new_key(), keys.new_key(), keys.new_key()
    assert len(keys.cache) == 2 and keys.unwrap(k3.wrapped) == k3.plaintext and keys.unwrap(k2.wrapped) == k2.plaintext
    assert keys.cache.get(k1.wrapped) is None  # the least recently used went
    transit.down = True
    with pytest.raises(KeysUnavailable, match="unreachable"):
        keys.new_key()
    assert keys.unwrap(k3.wrapped) == k3.plaintext  # Vault away: a cached key still serves


def test_pooled_data_keys_carry_uploads_through_a_vault_outage() -> None:
    transit = _Transit()
    now = [1000.0]

    class Client:
        secrets = type("S", (), {"transit": transit})()

    keys = VaultDataKeys(lambda: Client(), cache_size=8, pool_size=3, pool_max_age=60, clock=lambda: now[0])
    assert keys.refill(limit=2) == 2 and keys.refill() == 1  # a limit spreads a fill over calls
    assert keys.pooled() == 3 and len(keys.cache) == 0  # made ahead, not yet used
    assert keys.refill() == 0 and transit.calls == 3  # a full pool asks Vault for nothing
    transit.down = True
    taken = [keys.new_key() for _ in range(3)]  # Vault away: the pool still serves every upload
    assert len({k.wrapped for k in taken}) == 3 and keys.pooled() == 0
    assert all(keys.unwrap(k.wrapped) == k.plaintext for k in taken)  # a taken key is cached for its job
    with pytest.raises(KeysUnavailable, match="unreachable"):
        keys.new_key()  # ... until it is empty: then the refusal says why
    with pytest.raises(KeysUnavailable):
        keys.refill()
    transit.down = False
    assert keys.refill() == 3
    now[0] += 61  # unused keys age out, so a rotated transit key reaches new uploads
    assert keys.pooled() == 0
    fresh = keys.new_key()
    assert fresh.wrapped not in {k.wrapped for k in taken} and transit.calls == 9  # 3 + 2 refused + 3 + 1


def test_handed_over_keys_wait_for_their_job_only_so_long() -> None:
    """A handed-over key is taken once; unused, it goes after its maximum age, and the oldest go
    first beyond the bound; forgetting a job's key (its deletion) drops a handed one too."""
    now = [0.0]
    keys = VaultDataKeys(lambda: None, clock=lambda: now[0])
    keys.offer("vault:v1:a", b"a" * 32)
    keys.offer("vault:v1:short", b"s" * 5)  # not a data key: ignored
    assert keys.offered("vault:v1:short") is None
    assert keys.offered("vault:v1:a") == b"a" * 32 and keys.offered("vault:v1:a") is None
    keys.offer("vault:v1:b", b"b" * 32)
    now[0] += HANDOFF_MAX_AGE + 1
    assert keys.offered("vault:v1:b") is None and len(keys.handoffs) == 0
    keys.offer("vault:v1:c", b"c" * 32)
    keys.forget("vault:v1:c")
    assert keys.offered("vault:v1:c") is None
    small = Handoffs(size=2)
    for name in "xyz":
        small.offer(name, name.encode() * 32)
    assert small.take("x") is None and small.take("z") == b"z" * 32
    assert keys.offered("vault:v1:never") is None and not keys.cache.get("vault:v1:a")  # taken is not cached
    keys.offer("vault:v1:d", b"d" * 32)
    now[0] += HANDOFF_MAX_AGE + 1
    keys.handoffs.expire()  # the upkeep's call: gone from memory without anyone asking for it
    assert not keys.handoffs._items


def test_a_blob_a_peer_just_put_is_read_from_memory_once_and_only_with_its_tag(tmp_path: Path) -> None:
    async def go() -> None:
        net = Net(tmp_path, ["master1", "master2"])
        rep = Replicator("master1", net.stores["master1"], FakeTransport(net, "master1"), 2)
        blob = seal(DataKey(os.urandom(32), "vault:v1:k"), "ab" * 16, "alice", "upload", b"pixels")
        net.stores["master1"].put("ab" * 16, "upload", blob)
        rep.keep("ab" * 16, "upload", blob, digest(blob))
        net.stores["master1"].delete("ab" * 16)  # read from memory: the disk is not touched
        assert await rep.read("ab" * 16, "upload", digest(blob)) == blob
        assert await rep.read("ab" * 16, "upload", digest(blob)) is None  # once; nothing on disk nor on peers
        rep.keep("cd" * 16, "upload", blob, digest(blob))
        assert await rep.read("cd" * 16, "upload", "0" * 64) is None  # another tag than the znode's: not used
        rep.keep("ef" * 16, "upload", blob, digest(blob))
        await rep.delete("ef" * 16)
        assert await rep.read("ef" * 16, "upload", digest(blob)) is None
        rep.keep("gh" * 16, "upload", blob, digest(blob))
        rep._recent[("gh" * 16, "upload")] = (0.0, blob, digest(blob))  # kept long ago
        rep.expire_recent()  # the upkeep's call: let go without another keep()
        assert not rep._recent
    asyncio.run(go())


def test_the_leaders_watch_runs_a_pass_only_for_a_job_it_does_not_run() -> None:
    """/histo/active changes when this leader's own job finishes (or is being accepted here): no
    resume pass then; a job another master queued starts a pass with the list the watch read."""
    from types import SimpleNamespace

    from histo.master.service import Master

    master = Master.__new__(Master)
    passes: list[list[str] | None] = []

    async def resume(listed: list[str] | None = None) -> list[str]:
        passes.append(listed)
        return []

    def create_task(coro: Any) -> None:
        try:
            coro.send(None)
        except StopIteration:
            pass
    master.loop = SimpleNamespace(create_task=create_task)  # type: ignore[assignment]
    master.runner = SimpleNamespace(is_mine=lambda job: job in ("mine1", "mine2"))  # type: ignore[assignment]
    master._resume = resume  # type: ignore[method-assign]
    master._active_now(["mine1"])
    master._active_now([])
    assert passes == []
    master._active_now(["mine1", "theirs"])
    assert passes == [["mine1", "theirs"]]


def test_a_handed_key_under_another_jobs_wrapped_key_changes_nothing_for_that_job(tmp_path: Path) -> None:
    """Found by review: a hostile master sealed its own job's upload with a key of its choosing under a
    victim job's wrapped key and handed that key over. It opened the blob it came with (AES-GCM), so the
    leader cached it for the victim's wrapped key, and the victim's result stopped opening there. A handed
    key now serves its own run only; the victim's result is still read on the leader."""
    async def go() -> None:
        runners, jobs, net, keys, _ = make(tmp_path, ["master1", "master2"])
        data = image_with_run()
        victim = await submit(runners["master1"], data, owner="alice")
        await settle(runners["master1"])
        vdoc = jobs.docs[victim["id"]]
        assert vdoc["state"] == "done"
        stored = net.stores["master1"].get(victim["id"], "upload")
        assert stored is not None
        wrapped = parse(stored).wrapped_key
        mine = await runners["master2"].submit("mallory", data, "gray", probe(data, 10**8), "sha",
                                               {"receive": 0.0}, start=False)
        evil = os.urandom(32)
        blob = seal(DataKey(evil, wrapped), mine["id"], "mallory", "upload", data)
        for name in ("master1", "master2"):
            net.stores[name].put(mine["id"], "upload", blob)
        jobs.docs[mine["id"]]["blobs"] = {**jobs.docs[mine["id"]]["blobs"], "upload": digest(blob)}
        keys["master1"].handed.clear()
        keys["master1"].offer(wrapped, evil)
        assert await runners["master1"].resume_all() == [mine["id"]]
        await settle(runners["master1"])
        assert keys["master1"].cache.get(wrapped) != evil
        result, _plot = await runners["master1"].result(vdoc)  # the legitimate path: still readable
        assert result.image
    asyncio.run(go())


def test_a_master_whose_own_disk_fails_counts_one_holder_fewer(tmp_path: Path) -> None:
    """The local write runs beside the peers': a failing disk here is one missing holder. With three
    masters and a quorum of two the upload is still durable (and done); with two it is refused, nothing
    kept anywhere."""
    def broken(*_a: Any) -> None:
        raise OSError("disk failed")

    async def go(names: list[str]) -> tuple[JobRunner, FakeJobs, Net]:
        runners, jobs, net, _, _ = make(tmp_path / str(len(names)), names, quorum=2)
        net.stores["master1"].put = broken  # type: ignore[method-assign,assignment]
        return runners["master1"], jobs, net

    async def three() -> None:
        runner, jobs, net = await go(["master1", "master2", "master3"])
        doc = await submit(runner, image_with_run())
        await settle(runner)
        assert jobs.docs[doc["id"]]["state"] == "done"
        assert net.stores["master2"].get(doc["id"], "upload") is not None
        assert net.stores["master1"].get(doc["id"], "upload") is None

    async def two() -> None:
        runner, jobs, net = await go(["master1", "master2"])
        with pytest.raises(RunnerError) as err:
            await submit(runner, image_with_run())
        assert err.value.code == "not_durable" and "master1" in err.value.message
        assert not jobs.docs and not files_of(net.stores["master2"].root)
    asyncio.run(three())
    asyncio.run(two())
