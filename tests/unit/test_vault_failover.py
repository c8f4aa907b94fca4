"""vault/failover.py: which node a request goes to, when it moves on, and when it gives up. The
transport is faked at hvac's RawAdapter.request (pure logic); the real failover under a killed
active node is tests/integration/test_vault_raft.py."""
from __future__ import annotations

import json
import time
from typing import Any

import pytest
import requests
from hvac import adapters
from hvac import exceptions as hx


from histo.vault.failover import FailoverAdapter, failover_client, split_urls

A, B, C = "https://10.0.0.1:8200", "https://10.0.0.2:8200", "https://10.0.0.3:8200"


@pytest.fixture
def nodes(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Each node's behaviour: "ok", or an exception to raise; every call is recorded."""
    state: dict[str, Any] = {"calls": [], A: "ok", B: "ok", C: "ok"}

    def fake(self: adapters.RawAdapter, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        state["calls"].append(self.base_uri)
        what = state[self.base_uri]
        if what == "ok":
            resp = requests.Response()
            resp.status_code, resp._content = 200, json.dumps({"node": self.base_uri}).encode()
            return resp
        raise what

    monkeypatch.setattr(adapters.RawAdapter, "request", fake)
    monkeypatch.setattr(time, "sleep", lambda _s: None)
    return state


def test_split_urls() -> None:
    assert split_urls(f"{A}/, {B} ,,{C}") == [A, B, C]
    assert split_urls(A) == [A]
    with pytest.raises(ValueError):
        split_urls(" , ")


def test_stays_on_the_node_that_answered(nodes: dict[str, Any]) -> None:
    client = failover_client(f"{A},{B},{C}", verify=False)
    assert client.adapter.get("/v1/x") == {"node": A}
    nodes[A] = requests.ConnectionError("refused")
    assert client.adapter.get("/v1/x") == {"node": B}
    assert client.url == B  # the next request starts where the last one succeeded
    nodes["calls"].clear()
    nodes[A] = "ok"
    assert client.adapter.get("/v1/x") == {"node": B}
    assert nodes["calls"] == [B]


@pytest.mark.parametrize("trouble", [hx.VaultDown("sealed"), hx.InternalServerError("no active node"),
                                     hx.BadGateway("bad gateway")])
def test_a_node_that_cannot_serve_is_skipped(nodes: dict[str, Any], trouble: Exception) -> None:
    nodes[A] = trouble
    assert failover_client(f"{A},{B}", verify=False).adapter.get("/v1/x") == {"node": B}


def test_an_answer_of_the_server_is_never_repeated_elsewhere(nodes: dict[str, Any]) -> None:
    nodes[A] = hx.Forbidden("permission denied")
    with pytest.raises(hx.Forbidden):
        failover_client(f"{A},{B}", verify=False).adapter.get("/v1/x")
    assert nodes["calls"] == [A]


def test_rides_through_an_election_then_gives_up(nodes: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    for u in (A, B, C):
        nodes[u] = hx.InternalServerError("no active node")
    clock = iter(range(1000))
    monkeypatch.setattr(time, "monotonic", lambda: float(next(clock)))
    client = failover_client(f"{A},{B},{C}", verify=False, ride_through=5)
    with pytest.raises(hx.InternalServerError):
        client.adapter.get("/v1/x")
    assert len(nodes["calls"]) > 3  # several rounds over the three nodes, not one
    assert set(nodes["calls"]) == {A, B, C}


def test_a_single_node_fails_at_once(nodes: dict[str, Any]) -> None:
    nodes[A] = requests.ConnectionError("refused")
    adapter = FailoverAdapter(A)
    assert adapter.ride_through == 0.0
    with pytest.raises(requests.ConnectionError):
        adapter.get("/v1/x")
    assert nodes["calls"] == [A]


@pytest.mark.parametrize("trouble", [requests.ReadTimeout("no answer"), hx.VaultNotInitialized("not joined yet")])
def test_a_node_that_times_out_or_has_not_joined_is_skipped(nodes: dict[str, Any], trouble: Exception) -> None:
    nodes[A] = trouble
    client = failover_client(f"{A},{B}", verify=False)
    assert client.adapter.get("/v1/x") == {"node": B}
    assert client.url == B


def test_concurrent_requests_each_try_their_own_round(nodes: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """One thread failing over must not redirect another thread's attempt: each request's round is its
    own (the node being tried is per thread), and the shared starting node is the last that answered."""
    import threading

    client = failover_client(f"{A},{B},{C}", verify=False)
    adapter = client.adapter
    nodes[A] = requests.ConnectionError("refused")
    seen: dict[str, list[str]] = {}
    real = adapters.RawAdapter.request
    barrier = threading.Barrier(2, timeout=5)

    def slow(self: adapters.RawAdapter, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        name = threading.current_thread().name
        seen.setdefault(name, []).append(self.base_uri)
        if self.base_uri == A:
            barrier.wait()  # both threads are on A at once, then both fail over
        return real(self, method, url, *args, **kwargs)

    monkeypatch.setattr(adapters.RawAdapter, "request", slow)
    out: dict[str, Any] = {}
    threads = [threading.Thread(target=lambda n=n: out.__setitem__(n, adapter.get("/v1/x")), name=n)
               for n in ("t1", "t2")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert out == {"t1": {"node": B}, "t2": {"node": B}}
    assert seen == {"t1": [A, B], "t2": [A, B]}
    assert client.url == B
