"""The relay's pure parts (secops/relay.py) and the masters' judge of what it pushes
(master/secopsfeed.py): following the record as the collector appends to it, batching, resuming after a
restart with nothing lost or shown twice, and the strict validation of a push."""
from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from histo.edge.openapi import SECOPS_MAX_BATCH
from histo.master import secopsfeed
from histo.secops import relay
from histo.secops.chain import ChainLog

R = "ab" * 32  # a record id
REFUSAL = {"layer": "vault", "kind": "vault_denied", "severity": "warning", "host": "worker1",
           "spiffe": "spiffe://histo.internal/worker/worker1", "address": "192.168.56.31",
           "path": "secret/data/x", "operation": "read", "why": "permission denied"}


def _record(tmp_path: Path) -> tuple[Path, Path, ChainLog]:
    """A record (the collector's chained log) and an empty folder for the relay's state."""
    path, state = tmp_path / "r.log", tmp_path / "state"
    state.mkdir()
    return path, state, ChainLog(path)


def _append(log: ChainLog, n: int, refusal: bool = True, **extra: Any) -> None:
    for i in range(n):
        event: dict[str, Any] = {"msg": f"line {i}", "host": "vault1"}
        if refusal:
            event["secops"] = {**REFUSAL, **extra}
        log.append(event)


def test_an_attributed_entry_becomes_a_bounded_event_and_others_are_not_relayed() -> None:
    entry = {"seq": 7, "ts": 1.5, "event": {"msg": "x", "host": "vault1", "secops": REFUSAL}}
    ev = relay.from_entry(entry)
    assert ev == {"record_seq": 7, "ts": 1.5, "layer": "vault", "kind": "vault_denied", "severity": "warning",
                  "host": "worker1", "spiffe": "spiffe://histo.internal/worker/worker1", "address": "192.168.56.31",
                  "where": "vault1", "what": "read secret/data/x", "why": "permission denied"}
    assert relay.from_entry({"seq": 8, "ts": 1, "event": {"msg": "an ordinary line"}}) is None
    drop = {"layer": "firewall", "kind": "firewall_drop", "severity": "warning", "host": "worker1", "spiffe": None,
            "address": "192.168.56.31", "target": "worker2", "port": 8443, "proto": "TCP", "why": "no worker -> worker"}
    ev = relay.from_entry({"seq": 9, "ts": 2, "event": {"msg": "m", "secops": drop}})
    assert ev is not None and (ev["where"], ev["what"]) == ("worker2", "port 8443/TCP")
    # whatever the record holds, the event fits the schema the master checks (long, odd or missing values)
    odd = {"layer": "nonsense", "kind": "Weird Kind!" * 9, "severity": "panic", "host": None, "spiffe": "http://x",
           "address": "not an address", "why": "w" * 5000}
    ev = relay.from_entry({"seq": 10, "ts": 3, "event": {"msg": "m", "host": "bad host name", "secops": odd}})
    assert ev is not None and secopsfeed.parse_batch(json.dumps({"record": R, "events": [ev]}).encode())
    assert (ev["layer"], ev["severity"], ev["host"], ev["spiffe"], ev["address"], ev["where"]) == (
        "secops", "warning", "outside", None, None, None)
    assert len(ev["why"]) == 300 and len(ev["kind"]) <= 40


def test_the_follower_takes_only_whole_lines_as_they_are_appended(tmp_path: Path) -> None:
    path = tmp_path / "r.log"
    log = ChainLog(path)
    _append(log, 3)
    fd = os.open(path, os.O_RDONLY)
    try:
        f = relay.RecordFollower(fd)
        got = f.poll()
        assert [e["seq"] for _, e in got] == [1, 2, 3] and got[-1][0] == path.stat().st_size
        assert f.poll() == []
        with path.open("a") as w:  # a write seen half done: nothing until the line ends
            w.write('{"seq": 4, "prev": "x", "ts": 1, "eve')
        assert f.poll() == []
        with path.open("a") as w:
            w.write('nt": {}, "hash": "y"}\nnot json\n')
        assert [e["seq"] for _, e in f.poll()] == [4]
    finally:
        os.close(fd)


class FakeMasters:
    """Each master's answer to a push: what it took (by record_seq), and failures on demand."""

    def __init__(self, names: list[str]) -> None:
        self.feeds = {n: secopsfeed.SecopsFeed(lambda *a, **k: None, rate=1e6, burst=10**6) for n in names}
        self.down: set[str] = set()
        self.calls: list[tuple[str, int]] = []

    async def push(self, master: str, record: str, events: list[dict[str, Any]]) -> tuple[int, bytes, dict[str, str]]:
        if master in self.down:
            raise ConnectionRefusedError("down")
        self.calls.append((master, len(events)))
        try:
            rec, batch = secopsfeed.parse_batch(json.dumps({"record": record, "events": events}).encode())
            pushed = self.feeds[master].push("secops1", rec, batch)
        except secopsfeed.FeedRefused as exc:
            return exc.status, exc.message.encode(), {}
        return 200, json.dumps({"high": pushed.high}).encode(), {}

    def seqs(self, master: str) -> list[int]:
        return [e["record_seq"] for e in self.feeds[master].events]


def _run(r: relay.Relay, steps: int = 3) -> None:
    async def go() -> None:
        for _ in range(steps):
            await r.step()
    asyncio.run(go())


def test_new_entries_only_in_batches_then_a_restart_resends_nothing_and_loses_nothing(tmp_path: Path) -> None:
    path, state, log = _record(tmp_path)
    _append(log, 5)  # before the relay's first start: not relayed (new entries only)
    masters = FakeMasters(["master1", "master2"])
    fd = os.open(path, os.O_RDONLY)
    r = relay.Relay(fd, ["master1", "master2"], masters.push, state)
    _append(log, 250)
    _append(log, 10, refusal=False)  # the record's other lines move the state on, send nothing
    _run(r)
    want = list(range(6, 256))
    assert masters.seqs("master1") == want and masters.seqs("master2") == want
    assert max(n for _, n in masters.calls) == 100  # batches of at most SECOPS_MAX_BATCH
    assert json.loads((state / relay.STATE_FILE).read_text())["sent"] == {"master1": 265, "master2": 265}
    os.close(fd)

    # master2 goes away; entries arrive; the relay restarts (a new process: fresh state from the file)
    masters.down.add("master2")
    fd = os.open(path, os.O_RDONLY)
    r = relay.Relay(fd, ["master1", "master2"], masters.push, state)
    _append(log, 7)
    _run(r)
    assert masters.seqs("master1") == want + list(range(266, 273))
    assert masters.seqs("master2") == want
    os.close(fd)
    masters.down.clear()
    fd = os.open(path, os.O_RDONLY)
    r = relay.Relay(fd, ["master1", "master2"], masters.push, state)
    _run(r)
    # master2 got exactly what it missed, master1 nothing twice
    assert masters.seqs("master2") == want + list(range(266, 273))
    assert masters.seqs("master1") == want + list(range(266, 273))
    assert all(f.duplicates == 0 for f in masters.feeds.values())
    os.close(fd)


def test_a_master_that_hangs_does_not_delay_the_others(tmp_path: Path) -> None:
    path, state, log = _record(tmp_path)
    masters = FakeMasters(["master1", "master2"])

    async def push(master: str, record: str, events: list[dict[str, Any]]) -> tuple[int, bytes, dict[str, str]]:
        if master == "master2":
            await asyncio.sleep(30)  # a connect that times out
        return await masters.push(master, record, events)

    async def go() -> float:
        fd = os.open(path, os.O_RDONLY)
        r = relay.Relay(fd, ["master1", "master2"], push, state, interval=0.05)
        stop = asyncio.Event()
        task = asyncio.create_task(r.run(stop))
        await asyncio.sleep(0.2)
        t0 = asyncio.get_running_loop().time()
        _append(log, 3)
        for _ in range(250):  # polls the fake's feed (no event to wait on there)
            if len(masters.seqs("master1")) >= 3:
                break
            await asyncio.sleep(0.02)
        took = asyncio.get_running_loop().time() - t0
        task.cancel()
        os.close(fd)
        return took
    assert asyncio.run(go()) < 1.0


def test_a_crash_before_the_state_is_written_is_at_least_once_and_the_master_takes_each_once(tmp_path: Path) -> None:
    path, state, log = _record(tmp_path)
    masters = FakeMasters(["master1"])
    fd = os.open(path, os.O_RDONLY)
    r = relay.Relay(fd, ["master1"], masters.push, state)
    saved = (state / relay.STATE_FILE).read_text()
    _append(log, 30)
    _run(r)
    (state / relay.STATE_FILE).write_text(saved)  # as if killed after the push, before the state file
    r = relay.Relay(fd, ["master1"], masters.push, state)
    _run(r)
    assert masters.seqs("master1") == list(range(1, 31))
    assert masters.feeds["master1"].duplicates == 30  # resent, acknowledged, not published again
    os.close(fd)


def test_a_state_that_does_not_match_the_record_reads_it_again(tmp_path: Path) -> None:
    path, state, log = _record(tmp_path)
    _append(log, 4)
    relay.save_state(state / relay.STATE_FILE, {"sent": {"master1": 2}, "safe": [2, 7]})  # offset mid-line
    masters = FakeMasters(["master1"])
    fd = os.open(path, os.O_RDONLY)
    _run(relay.Relay(fd, ["master1"], masters.push, state))
    assert masters.seqs("master1") == [3, 4]
    os.close(fd)


def test_a_record_started_anew_is_relayed_from_its_start(tmp_path: Path) -> None:
    path, state, log = _record(tmp_path)
    masters = FakeMasters(["master1"])
    fd = os.open(path, os.O_RDONLY)
    r = relay.Relay(fd, ["master1"], masters.push, state)
    _append(log, 6)
    _run(r)
    assert masters.seqs("master1") == [1, 2, 3, 4, 5, 6]
    os.close(fd)
    log.close()
    path.unlink()  # the collector's record begun again (a reinstalled secops1): sequences restart at 1
    log = ChainLog(path)
    _append(log, 2)
    fd = os.open(path, os.O_RDONLY)
    _run(relay.Relay(fd, ["master1"], masters.push, state))
    assert masters.seqs("master1") == [1, 2, 3, 4, 5, 6, 1, 2]  # the master counts them in the new record
    os.close(fd)


def test_backlog_on_first_start(tmp_path: Path) -> None:
    path, state, log = _record(tmp_path)
    _append(log, 8)
    _append(log, 2, refusal=False)
    masters = FakeMasters(["master1"])
    fd = os.open(path, os.O_RDONLY)
    _run(relay.Relay(fd, ["master1"], masters.push, state, backlog=3))
    assert masters.seqs("master1") == [6, 7, 8]
    os.close(fd)


def _ev(seq: int, **over: Any) -> dict[str, Any]:
    return {"record_seq": seq, "ts": 1.0, "layer": "vault", "kind": "vault_denied", "severity": "warning",
            "host": "worker1", "spiffe": "spiffe://histo.internal/worker/worker1", "address": "10.0.0.1",
            "where": "vault1", "what": "read secret/data/x", "why": "denied", **over}


@pytest.mark.parametrize("body, why", [
    (b"not json", "not JSON"),
    (b"[]", "send JSON"),
    (json.dumps({"events": [_ev(1)]}).encode(), "send JSON"),
    (json.dumps({"record": "x", "events": [_ev(1)]}).encode(), "send JSON"),
    (json.dumps({"record": R, "events": []}).encode(), "1 to 100"),
    (json.dumps({"record": R, "events": [_ev(i) for i in range(1, 102)]}).encode(), "1 to 100"),
    (json.dumps({"record": R, "events": [_ev(1)], "more": 1}).encode(), "send JSON"),
    (json.dumps({"record": R, "events": [_ev(1, token="s.abc")]}).encode(), "unknown field"),
    (json.dumps({"record": R, "events": [_ev(1, extra={"nested": 1})]}).encode(), "unknown field"),
    (json.dumps({"record": R, "events": [_ev(1, layer="kernel")]}).encode(), "layer"),
    (json.dumps({"record": R, "events": [_ev(1, host="a b")]}).encode(), "host"),
    (json.dumps({"record": R, "events": [_ev(1, why="x" * 301)]}).encode(), "why"),
    (json.dumps({"record": R, "events": [_ev(0)]}).encode(), "record_seq"),
    (json.dumps({"record": R, "events": [_ev(True)]}).encode(), "record_seq"),
    (json.dumps({"record": R, "events": [_ev(2), _ev(1)]}).encode(), "increasing"),
    (json.dumps({"record": R, "events": [_ev(1, spiffe="spiffe://x/../../etc")]}).encode(), "spiffe"),
])
def test_a_malformed_push_is_a_400_naming_why(body: bytes, why: str) -> None:
    with pytest.raises(secopsfeed.FeedRefused) as err:
        secopsfeed.parse_batch(body)
    assert err.value.status == 400 and why in err.value.message


def test_an_oversized_push_is_a_413() -> None:
    with pytest.raises(secopsfeed.FeedRefused) as err:
        secopsfeed.parse_batch(b" " * (secopsfeed.MAX_BODY + 1))
    assert err.value.status == 413


def test_the_feed_redacts_publishes_once_and_pages_by_sequence() -> None:
    published: list[tuple[str, dict[str, Any]]] = []
    feed = secopsfeed.SecopsFeed(lambda kind, **f: published.append((kind, f)), capacity=50, rate=1e6, burst=10**6)
    secret = "Bearer eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"
    got = feed.push("secops1", R, [_ev(1, why=f"denied {secret}"), _ev(2, layer="firewall", host="worker2",
                                                                       severity="critical")])
    assert (got.accepted, got.duplicates, got.high) == (2, 0, 2)
    assert "eyJ" not in json.dumps(published) and "eyJ" not in json.dumps(list(feed.events))
    kind, fields = published[0]
    assert kind == "vault_denied" and fields["record_seq"] == 1 and fields["layer"] == "vault"
    assert fields["host"] == "worker1" and fields["spiffe"].endswith("/worker/worker1") and fields["where"] == "vault1"
    again = feed.push("secops1", R, [_ev(2), _ev(3)])
    assert (again.accepted, again.duplicates, again.high) == (1, 1, 3) and len(published) == 3
    assert [e["record_seq"] for e in feed.query()["events"]] == [1, 2, 3]
    assert [e["record_seq"] for e in feed.query(layer="firewall")["events"]] == [2]
    assert [e["record_seq"] for e in feed.query(host="worker1", since=1)["events"]] == [3]
    assert [e["record_seq"] for e in feed.query(severity="critical")["events"]] == [2]
    page = feed.query(limit=2)
    assert page["next_since"] == 2 and page["more"] and page["head"] == 3
    assert [e["record_seq"] for e in feed.query(since=page["next_since"])["events"]] == [3]
    for i in range(4, 120):  # bounded: the oldest go
        feed.push("secops1", R, [_ev(i)])
    assert len(feed.events) == 50 and feed.query(limit=500)["events"][0]["record_seq"] == 70
    # a record started anew (another first entry): its entry 1 is new, not a duplicate of the old one's
    assert feed.push("secops1", "cd" * 32, [_ev(1)]).accepted == 1


def test_the_feed_rate_refuses_a_whole_batch_with_retry_after() -> None:
    feed = secopsfeed.SecopsFeed(lambda *a, **k: None, rate=10, burst=20)
    feed.push("secops1", R, [_ev(i) for i in range(1, 21)])
    with pytest.raises(secopsfeed.FeedRefused) as err:
        feed.push("secops1", R, [_ev(21)])
    assert err.value.status == 429 and err.value.retry_after and err.value.retry_after >= 1
    assert feed.high[("secops1", R)] == 20  # nothing of the refused batch was taken


def test_refusals_with_long_details_are_never_dropped_with_their_batch(tmp_path: Path) -> None:
    """Root on a worker chooses the paths it asks Vault for (and the znodes it writes): its refusals reach
    the record with a 300-character `what`, JSON-escaped to 6 bytes a character when it is not ASCII. A
    batch of 100 such events is over the master's 64 KiB (413): the relay must not lose the batch — the
    worker's other refusals and everyone else's with it — but send batches that fit."""
    path, state, log = _record(tmp_path)
    masters = FakeMasters(["master1", "master2"])
    bodies: list[int] = []

    async def push(master: str, record: str, events: list[dict[str, Any]]) -> tuple[int, bytes, dict[str, str]]:
        bodies.append(len(json.dumps({"record": record, "events": events}).encode()))
        return await masters.push(master, record, events)
    fd = os.open(path, os.O_RDONLY)
    r = relay.Relay(fd, ["master1", "master2"], push, state)
    for i in range(120):
        long = i % 3 != 0  # two of three: a padded path; one of three: an ordinary refusal to hide
        _append(log, 1, path=("secret/data/" + "\u00e9" * 300) if long else f"secret/data/probe-{i}")
    _run(r)
    want = list(range(1, 121))
    assert masters.seqs("master1") == want and masters.seqs("master2") == want
    assert max(bodies) <= secopsfeed.MAX_BODY and all(n <= SECOPS_MAX_BATCH for _, n in masters.calls)
    os.close(fd)


def test_one_event_a_master_refuses_costs_that_event_only(tmp_path: Path) -> None:
    """A master that judges one event unfit (400) answers for the batch; the relay narrows the batch down
    until that event is alone, and loses nothing else."""
    path, state, log = _record(tmp_path)
    masters = FakeMasters(["master1"])
    real = masters.push

    async def picky(master: str, record: str, events: list[dict[str, Any]]) -> tuple[int, bytes, dict[str, str]]:
        if any(e["record_seq"] == 37 for e in events):
            return 400, b"events[..]: unfit", {}
        return await real(master, record, events)
    fd = os.open(path, os.O_RDONLY)
    r = relay.Relay(fd, ["master1"], picky, state)
    _append(log, 100)
    _run(r, steps=10)
    assert masters.seqs("master1") == [s for s in range(1, 101) if s != 37]
    assert json.loads((state / relay.STATE_FILE).read_text())["sent"] == {"master1": 100}
    os.close(fd)


INCIDENT = {"kind": "incident_alerted", "layer": "secops", "incident": "0123456789abcdef",
            "rule": "vault-denied-by-address", "host": "worker1", "spiffe": "spiffe://histo.internal/worker/worker1",
            "address": "192.168.56.31", "severity": "critical", "response": "alert", "state": "alerted",
            "evidence": [{"kind": "vault_denied", "path": "secret/data/x"}],
            "actions": [{"name": "alert", "ok": True, "detail": "the rule's response is alert (record only)"}]}


def test_an_incidents_decisions_are_relayed_and_its_evidence_entries_are_not() -> None:
    got = relay.from_entry({"seq": 7, "ts": 5.0, "event": INCIDENT})
    assert got is not None
    assert (got["layer"], got["kind"], got["host"], got["incident"], got["rule"]) == (
        "secops", "incident_alerted", "worker1", "0123456789abcdef", "vault-denied-by-address")
    assert got["what"] == "vault-denied-by-address -> alert" and "record only" in got["why"]
    assert relay.from_entry({"seq": 8, "ts": 5.0, "event": {**INCIDENT, "kind": "incident_evidence"}}) is None
    # an id or a rule the schema does not take is left out, never sent for the master to refuse
    odd = relay.from_entry({"seq": 9, "ts": 5.0, "event": {**INCIDENT, "incident": "<b>", "rule": "A B"}})
    assert odd is not None and odd["incident"] is None and odd["rule"] is None


def test_the_feed_keeps_each_incidents_latest_decision_for_the_panel() -> None:
    feed = secopsfeed.SecopsFeed(lambda *a, **k: None)
    opened = relay.from_entry({"seq": 1, "ts": 1.0, "event": {**INCIDENT, "kind": "incident_opened", "actions": []}})
    alerted = relay.from_entry({"seq": 2, "ts": 2.0, "event": INCIDENT})
    other = relay.from_entry({"seq": 3, "ts": 3.0, "event": {**INCIDENT, "kind": "incident_contained",
                                                             "incident": "fedcba9876543210", "host": "worker2"}})
    assert opened and alerted and other
    feed.push("secops1", R, [opened])
    assert [(i["host"], i["state"]) for i in feed.open_incidents()] == [("worker1", "open")]
    feed.push("secops1", R, [alerted, other])
    listed = feed.open_incidents()
    assert [(i["host"], i["state"], i["rule"]) for i in listed] == [("worker1", "alerted", "vault-denied-by-address")]
    assert "record only" in listed[0]["decision"]  # contained ones are Vault's to list, not the feed's
    assert feed.open_incidents(now=time.time() + secopsfeed.INCIDENT_WINDOW + 1) == []  # an old alert leaves
