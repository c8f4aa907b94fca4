"""The event bus: fields every event carries, history for new subscribers, bounded queues, and
publishing from threads other than the loop's (kazoo callbacks)."""
import asyncio
import json
import threading

from histo.edge.events import EventBus


def test_every_event_has_ts_kind_severity_audience():
    bus = EventBus()
    e = bus.publish("auth_failure", where="192.0.2.1", reason="expired")
    assert {"ts", "kind", "severity", "audience"} <= set(e)
    assert (e["kind"], e["severity"], e["audience"]) == ("auth_failure", "warning", "secops")
    assert bus.publish("auth_throttled")["severity"] == "critical"  # defaults by kind
    assert bus.publish("cert_rotated")["severity"] == "info"
    assert bus.publish("job_progress", job="j", progress=0.5, audience="alice")["audience"] == "alice"
    assert bus.publish("leader_changed", severity="bogus")["severity"] == "warning"
    spoof = bus.publish("x", ts=0, kind="y", seq=-1)
    assert spoof["kind"] == "x" and spoof["ts"] > 0 and spoof["seq"] > 0  # the bus's own fields win


def test_events_are_json_safe_and_carry_no_token():
    bus = EventBus()
    e = bus.publish("auth_failure", header="Bearer eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln", obj=object(),
                    nested={"k": [1, {"t": "token=s3cr3tvalue"}]})
    text = json.dumps(e)
    # The secret must not be a string an object's hex address can contain ("abc" once was).
    assert "eyJ" not in text and "s3cr3tvalue" not in text
    assert e["obj"].startswith("<object object at") and "[redacted]" in text


def test_history_ring_keeps_the_last_ones():
    bus = EventBus(history=200)
    for i in range(250):
        bus.publish("rate_limited", n=i)
    assert len(bus.history) == 200 and bus.history[0]["n"] == 50 and bus.recent(2)[-1]["n"] == 249


def test_replay_then_live_and_slow_subscribers_drop_oldest():
    async def run():
        bus = EventBus(history=5, queue_size=3)
        bus.bind(asyncio.get_running_loop())
        for i in range(7):
            bus.publish("auth_failure", n=i)
        assert [e["n"] for e in bus.history] == [2, 3, 4, 5, 6]
        sub = bus.subscribe()
        assert (await sub.__anext__())["n"] == 4  # replay: as much of the history as the queue holds
        # the subscriber now lags: 2 replayed events are queued; 5 more arrive into a queue of 3
        for i in range(7, 12):
            bus.publish("auth_failure", n=i)
        got = [(await sub.__anext__())["n"] for _ in range(3)]
        assert got == [9, 10, 11] and bus.dropped == 4
        await sub.aclose()
        assert bus.subscribers == 0
    asyncio.run(run())


def test_publish_from_other_threads_reaches_subscribers():
    async def run():
        bus = EventBus()
        bus.bind(asyncio.get_running_loop())
        sub = bus.subscribe(replay=False)
        first = asyncio.ensure_future(sub.__anext__())
        await asyncio.sleep(0)  # subscribed
        threads = [threading.Thread(target=lambda n=n: [bus.publish("zk_auth_failure", t=n, i=i)
                                                        for i in range(10)]) for n in range(4)]
        [t.start() for t in threads]
        [t.join() for t in threads]
        got = [await asyncio.wait_for(first, 5)] + [await asyncio.wait_for(sub.__anext__(), 5) for _ in range(39)]
        assert len({(e["t"], e["i"]) for e in got}) == 40
        assert len({e["seq"] for e in got}) == 40
        await sub.aclose()
    asyncio.run(run())


def test_publish_without_or_after_the_loop_keeps_history():
    bus = EventBus()
    bus.publish("vault_unavailable")
    loop = asyncio.new_event_loop()
    bus.bind(loop)
    loop.close()
    bus.publish("vault_unavailable")
    assert len(bus.history) == 2
