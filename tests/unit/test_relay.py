"""A compromised worker cannot forge the SecOps stream through its status reply."""
from histo.master.relay import MAX_EVENTS, MAX_VALUE, accept


def test_known_kinds_are_relayed_attributed_to_the_sender() -> None:
    events, refused = accept([{"kind": "mtls_rejected", "reason": "no cert", "peer": "10.0.0.9", "path": "/x"},
                              {"kind": "cert_rotated", "serial": "ab:cd", "not_after": 1.5e9}], "worker1")
    assert refused == 0
    assert events[0] == {"kind": "mtls_rejected", "severity": "warning", "service": "worker1",
                         "relayed_from": "worker1", "reason": "no cert", "peer": "10.0.0.9", "path": "/x"}
    assert events[1]["serial"] == "ab:cd" and events[1]["not_after"] == 1.5e9


def test_forged_kind_service_audience_and_severity_are_refused_or_overridden() -> None:
    forged = [{"kind": "leader_changed", "service": "master1", "leader": "worker1"},
              {"kind": "job_failed", "audience": "alice", "reason": "click here"},
              {"kind": "mtls_rejected", "service": "master2", "audience": "alice", "severity": "critical",
               "reason": "x", "extra": "y"},
              "not an object", {"no": "kind"}]
    events, refused = accept(forged, "worker1")
    assert refused == 4
    assert events == [{"kind": "mtls_rejected", "severity": "warning", "service": "worker1",
                       "relayed_from": "worker1", "reason": "x"}]


def test_bounded_in_number_and_size() -> None:
    many = [{"kind": "vault_unavailable", "reason": "r" * 10_000}] * (MAX_EVENTS + 30)
    events, refused = accept(many, "worker2")
    assert len(events) == MAX_EVENTS and refused == 30
    assert all(len(e["reason"]) == MAX_VALUE for e in events)
    assert accept({"kind": "x"}, "w") == ([], 1) and accept(None, "w") == ([], 0)


def test_a_workers_connection_cap_refusal_is_relayed_not_counted_as_forged() -> None:
    """edge/conncap.py on a worker reports `connection_refused`; the leader relays it (it was counted as a
    refused kind, a `relay_refused` warning at every status poll of a worker under a connection flood)."""
    events, refused = accept([{"kind": "connection_refused", "where": "192.168.56.99", "reason": "per-address cap",
                               "service": "master2"}], "worker1")
    assert refused == 0
    assert events == [{"kind": "connection_refused", "severity": "warning", "service": "worker1",
                       "relayed_from": "worker1", "where": "192.168.56.99", "reason": "per-address cap"}]
