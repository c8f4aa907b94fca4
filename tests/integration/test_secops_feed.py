"""The SecOps record reaches the dashboard (issue 17): the collector's relay pushes the record's attributed
refusals to every master's internal listener over mTLS with the collector's own identity (issued by the
session cluster's real OpenBao PKI), and the masters publish them on the event stream and on
GET /api/v1/secops/events. Every refusal is shown beside the legitimate path working."""
from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from histo.secops.chain import ChainLog
from histo.testing import secops
from histo.testing.cluster import Cluster

from .cluster_fixture import NET

MASTERS = ("master1", "master2")


@pytest.fixture(scope="module")
def tls(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    out = secops.issue_identity(cluster, tmp_path_factory.mktemp("secops-tls"))
    yield out
    secops.forget_identity(cluster)


def _events(cluster: Cluster, master: str, query: str = "", token: str | None = None) -> list[dict[str, Any]]:
    url = cluster.urls[MASTERS.index(master)]
    status, _, raw = cluster.request("GET", "/api/v1/secops/events?limit=500" + query, url=url,
                                     token=token or cluster.token("viewer"))
    assert status == 200, raw
    events: list[dict[str, Any]] = json.loads(raw)["events"]
    return events


def _marked(cluster: Cluster, master: str, marker: str) -> list[dict[str, Any]]:
    return [e for e in _events(cluster, master) if marker in (e.get("what") or "")]


def _stream_has(cluster: Cluster, master: str, marker: str, timeout: float = 15) -> dict[str, Any]:
    """The event carrying `marker`, as a viewer's WebSocket on `master` receives it (history first)."""
    import aiohttp

    async def wait() -> dict[str, Any]:
        ctx = ssl.create_default_context(cafile=cluster.ca)
        url = cluster.urls[MASTERS.index(master)].replace("https://", "wss://") + "/api/v1/events"
        async with aiohttp.ClientSession() as s, s.ws_connect(url, ssl=ctx) as ws:
            await ws.send_json({"type": "auth", "token": cluster.token("viewer")})
            deadline = time.time() + timeout
            while time.time() < deadline:
                msg = await ws.receive_json(timeout=timeout)
                ev = msg.get("event") or {}
                if marker in str(ev.get("what", "")):
                    return ev
        raise AssertionError(f"{marker} never reached the event stream of {master}")
    return asyncio.run(wait())


def _stream_kinds(cluster: Cluster, master: str, token: str, seconds: float = 3) -> list[dict[str, Any]]:
    """Every event a WebSocket with `token` on `master` receives in `seconds` (the history replay first)."""
    import aiohttp

    async def collect() -> list[dict[str, Any]]:
        ctx = ssl.create_default_context(cafile=cluster.ca)
        url = cluster.urls[MASTERS.index(master)].replace("https://", "wss://") + "/api/v1/events"
        got: list[dict[str, Any]] = []
        async with aiohttp.ClientSession() as s, s.ws_connect(url, ssl=ctx) as ws:
            await ws.send_json({"type": "auth", "token": token})
            assert (await ws.receive_json(timeout=10))["type"] == "ready"
            deadline = time.time() + seconds
            while (left := deadline - time.time()) > 0:
                try:
                    got.append((await ws.receive_json(timeout=left)).get("event") or {})
                except asyncio.TimeoutError:
                    break
        return got
    return asyncio.run(collect())


def test_the_secops_identity_pushes_and_each_master_shows_the_refusal(cluster: Cluster, tls: Path) -> None:
    marker = f"read secret/data/it-{secrets.token_hex(4)}"
    record = secops.record_id()
    for master in MASTERS:
        status, doc = secops.push(cluster, master, secops.batch(record, [secops.refusal(7, marker)]), tls)
        assert (status, doc) == (200, {"accepted": 1, "duplicates": 0, "high": 7}), doc
    for master in MASTERS:
        [ev] = _marked(cluster, master, marker)
        assert (ev["layer"], ev["kind"], ev["severity"], ev["host"], ev["spiffe"], ev["where"], ev["record_seq"],
                ev["collector"]) == ("vault", "vault_denied", "warning", "worker1",
                                     "spiffe://histo.internal/worker/worker1", "vault1", 7, "secops1")
        assert [e["record_seq"] for e in _events(cluster, master, "&layer=vault&host=worker1&severity=warning")
                if marker in (e["what"] or "")] == [7]
        assert not [e for e in _events(cluster, master, "&layer=firewall") if marker in (e["what"] or "")]
        streamed = _stream_has(cluster, master, marker)
        assert (streamed["kind"], streamed["source"], streamed["layer"], streamed["record_seq"], streamed["host"],
                streamed["audience"]) == ("vault_denied", "collector", "vault", 7, "worker1", "secops")
    # the same batch again (a relay's retry): acknowledged, shown once
    status, doc = secops.push(cluster, "master1", secops.batch(record, [secops.refusal(7, marker)]), tls)
    assert (status, doc["accepted"], doc["duplicates"]) == (200, 0, 1)
    assert len(_marked(cluster, "master1", marker)) == 1
    # the read API: viewer and admin; an uploader is refused, no token is 401, bad parameters 400
    assert _marked(cluster, "master1", marker) and [
        e for e in _events(cluster, "master1", token=cluster.token("admin")) if marker in (e["what"] or "")]
    for token, want in ((cluster.token("uploader"), 403), (None, 401)):
        status, _, _ = cluster.request("GET", "/api/v1/secops/events", token=token)
        assert status == want
    # nor does an uploader's event stream carry it (the viewer's above did, from the same history)
    seen = _stream_kinds(cluster, "master1", cluster.token("uploader"))
    assert not [e for e in seen if marker in str(e.get("what", ""))]
    assert not [e for e in seen if e.get("source") == "collector" or e.get("audience") == "secops"]
    for query in ("since=-1", "since=x", "limit=0", "limit=501", "layer=kernel", "host=a%20b", "severity=loud"):
        status, _, raw = cluster.request("GET", f"/api/v1/secops/events?{query}", token=cluster.token("viewer"))
        assert status == 400 and json.loads(raw)["error"] == "bad_request", query


def test_no_other_identity_may_push_and_the_secops_identity_reaches_nothing_else(cluster: Cluster, tls: Path) -> None:
    marker = f"forged-{secrets.token_hex(4)}"
    body = secops.batch(secops.record_id(), [secops.refusal(1, marker, host="worker2")])
    worker_tls, master_tls = cluster.service_dir("worker1") / "tls", cluster.service_dir("master2") / "tls"
    # a worker's and another master's identity, each from its own address: 403
    assert secops.push(cluster, "master1", body, worker_tls, source=f"{NET}.31")[0] == 403
    assert secops.push(cluster, "master1", body, master_tls, source=f"{NET}.22")[0] == 403
    # the secops certificate copied to another machine (worker1's address): 403 (the IP SAN binds it)
    assert secops.push(cluster, "master1", body, tls, source=f"{NET}.31")[0] == 403
    # no client certificate: the handshake itself is refused
    with pytest.raises((ssl.SSLError, ConnectionError)):
        secops.push(cluster, "master1", body, None)
    assert not _marked(cluster, "master1", marker)
    # the secops identity on every other internal route: 403
    for method, path in (("GET", "/internal/v1/ping"), ("POST", "/internal/v1/results"),
                         ("POST", "/internal/v1/join"), ("GET", "/internal/v1/public/api/v1/cluster"),
                         ("GET", "/internal/v1/store/" + "a" * 24 + "/upload")):
        assert secops.push(cluster, "master1", b"{}", tls, path=path, method=method)[0] == 403, path
    # and the legitimate path still works
    status, doc = secops.push(cluster, "master1", body, tls)
    assert status == 200 and doc["accepted"] == 1
    assert len(_marked(cluster, "master1", marker)) == 1


def test_malformed_and_oversized_pushes_get_a_4xx_json_error_and_the_master_stays_up(cluster: Cluster,
                                                                                    tls: Path) -> None:
    record = secops.record_id()
    good = secops.refusal(1, f"ok-{secrets.token_hex(4)}")
    cases: list[tuple[bytes, int]] = [
        (b"not json", 400), (b"{}", 400), (b"[1,2]", 400), (b"\xff\xfe", 400),
        (secops.batch(record, []), 400),
        (secops.batch(record, [dict(good, record_seq=i) for i in range(1, 102)]), 400),
        (secops.batch(record, [dict(good, token="hvs.secret")]), 400),
        (secops.batch(record, [dict(good, why="x" * 301)]), 400),
        (secops.batch(record, [dict(good, layer="kernel")]), 400),
        (json.dumps({"record": record, "events": [good], "extra": {"a": 1}}).encode(), 400),
        (b"[" * 100_000, 413),
        (secops.batch(record, [dict(good, what="w" * 300, why="y" * 300, record_seq=i) for i in range(1, 101)])
         + b" " * 10_000, 413),
    ]
    for body, want in cases:
        status, doc = secops.push(cluster, "master1", body, tls)
        assert status == want and doc.get("error") and doc.get("message"), (body[:60], status, doc)
    status, _, raw = cluster.request("GET", "/healthz")
    assert status == 200
    status, doc = secops.push(cluster, "master1", secops.batch(record, [good]), tls)
    assert status == 200 and doc["accepted"] == 1


def _relay(record: Path, state: Path, tls: Path, log: Path) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "histo.cli", "secops", "relay", "--record", str(record), "--state", str(state),
           "--tls-dir", str(tls), "--source-address", f"{NET}.40", "--interval", "0.1",
           *[f"--master={m}=https://{NET}.{21 + i}:8443" for i, m in enumerate(MASTERS)]]
    env = {k: v for k, v in os.environ.items() if not k.startswith("VAULT_")}
    with log.open("ab") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=out, env=env)


def _append(log: ChainLog, marker: str, start: int, n: int) -> None:
    for i in range(start, start + n):
        log.append({"msg": f"line {i}", "host": "vault1", "secops": {
            "layer": "vault", "kind": "vault_denied", "severity": "warning", "host": "worker1",
            "spiffe": "spiffe://histo.internal/worker/worker1", "address": f"{NET}.31",
            "path": f"secret/data/{marker}-{i}", "operation": "read", "why": "permission denied"}})
        log.append({"msg": f"an ordinary line {i}", "host": "worker1"})  # in the record, not a refusal


def _wait_marked(cluster: Cluster, marker: str, n: int, timeout: float = 30) -> dict[str, list[int]]:
    deadline, got = time.time() + timeout, {}
    while time.time() < deadline:
        got = {m: [e["record_seq"] for e in _marked(cluster, m, marker)] for m in MASTERS}
        if all(len(v) >= n for v in got.values()):
            return got
        time.sleep(0.2)
    raise AssertionError(f"after {timeout}s: {got}")


def test_the_relay_follows_the_record_and_a_restart_resends_nothing_and_loses_nothing(
        cluster: Cluster, tls: Path, tmp_path: Path) -> None:
    marker = f"relay-{secrets.token_hex(4)}"
    path, state, out = tmp_path / "secops.log", tmp_path / "state", tmp_path / "relay.log"
    record = ChainLog(path)
    _append(record, marker, 0, 1)  # before the relay's first start: not relayed (new entries only)
    relay = _relay(path, state, tls, out)
    try:
        deadline = time.time() + 20
        while not (state / "relay-state.json").exists() and time.time() < deadline:
            time.sleep(0.1)
        t0 = time.monotonic()
        _append(record, marker, 1, 30)
        got = _wait_marked(cluster, marker, 30)
        print(f"30 refusals appended to the record reached both masters in {time.monotonic() - t0:.2f} s")
        relay.send_signal(signal.SIGKILL)  # a crash, not a clean stop
        relay.wait(10)
        _append(record, marker, 31, 20)  # written while the relay is down
        relay = _relay(path, state, tls, out)
        _append(record, marker, 51, 10)
        got = _wait_marked(cluster, marker, 60)
        time.sleep(1.0)  # anything resent would have arrived by now
        got = {m: [e["record_seq"] for e in _marked(cluster, m, marker)] for m in MASTERS}
        want = list(range(3, 122, 2))  # entries 3, 5, ... 121: the refusals, each once, in order
        assert got == {m: want for m in MASTERS}, (got, out.read_text()[-2000:])
        relay.send_signal(signal.SIGTERM)
        assert relay.wait(10) == 0
        saved = json.loads((state / "relay-state.json").read_text())
        assert saved["sent"] == {m: 122 for m in MASTERS} and saved["read"] == 122
    finally:
        if relay.poll() is None:
            relay.kill()
            relay.wait(10)


def test_refusals_whose_details_a_worker_chose_long_are_relayed_with_the_rest(
        cluster: Cluster, tls: Path, tmp_path: Path) -> None:
    """Root on worker1 chooses the Vault paths it is refused on: 300 characters that JSON writes as 6 bytes
    each. Sixty such refusals among twenty ordinary ones are more than one push of 64 KiB can carry: the
    relay sends them in pushes that fit, and every one reaches both masters (none is dropped with a
    refused batch)."""
    marker = f"long-{secrets.token_hex(4)}"
    path, state, out = tmp_path / "secops.log", tmp_path / "state", tmp_path / "relay.log"
    record = ChainLog(path)
    _append(record, marker, 0, 1)
    relay = _relay(path, state, tls, out)
    try:
        deadline = time.time() + 20
        while not (state / "relay-state.json").exists() and time.time() < deadline:
            time.sleep(0.1)
        for i in range(80):
            long = i % 4 != 0
            record.append({"msg": f"line {i}", "host": "vault1", "secops": {
                "layer": "vault", "kind": "vault_denied", "severity": "warning", "host": "worker1",
                "spiffe": "spiffe://histo.internal/worker/worker1", "address": f"{NET}.31",
                "path": f"secret/data/{marker}-{i}-" + ("\u00e9" * 300 if long else "ordinary"),
                "operation": "read", "why": "permission denied"}})
        got = _wait_marked(cluster, marker, 80)
        assert all(len(v) == 80 for v in got.values()), (got, out.read_text()[-2000:])
        assert "refused event" not in out.read_text()
    finally:
        relay.send_signal(signal.SIGTERM)
        relay.wait(10)
