"""The cluster drills' detection (tests/deploy/test_drills.py DETECTED, tests/deploy/detection.py), offline:
the table covers every drill and resolves in every profile's names; and each drill's expected refusals
are recognised in the events the SecOps API would serve for that drill — sample lines in each layer's
own format, through the real chain: the collector's attribution (secops/sources.py classify, in
Collector.ingest), the relay's event (secops/relay.py from_entry) and the master's feed
(master/secopsfeed.py push, query: GET /api/v1/secops/events). The expectations also tell the drills
apart: no drill's samples satisfy another drill's expectations."""
from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from attack import cli
from attack.deployed import load_inventory
from bench import detection as bench
from histo.edge.events import EventBus
from histo.master.secopsfeed import SecopsFeed
from histo.secops.collector import Collector
from histo.secops.relay import from_entry
from histo.secops.sources import Inventory
from tests.deploy import test_drills as drills
from tests.deploy.detection import (KIND, LAYERS, OUTSIDE, Arrivals, Names, Refusal, Wanted, append_rows,
                                    names_from_inventory)

from .test_secops_chain import LocalSigner

PROFILES = ("default", "small")
ROLES = {"zookeeper": "zookeeper", "masters": "master", "workers": "worker", "secops": "secops", "vault": "vault"}
INV = load_inventory("default")
NAMES = names_from_inventory(INV, drills.FLOOD_ADDRESSES)
ADDR = {name: body["hosts"][name]["histo_address"] for body in INV["all"]["children"].values()
        for name in body["hosts"]}
CONTROLLER = INV["all"]["vars"]["histo_controller_address"]
OUTSIDER = drills.FLOOD_ADDRESSES[31]  # one of the flood's fresh addresses (192.168.56.231)
DENIED = "1 error occurred:\n\t* permission denied\n\n"  # OpenBao's error of a request its ACL refuses


# -- what each layer ships for a drill's refusal (rsyslog's omprog line: msg, host, tag, and `from`) ----------
def _audit(path: str, operation: str, remote: str, role: str | None = None, node: str = "vault1") -> dict[str, Any]:
    """An OpenBao audit response the vault_errors filter ships: the request, its error, the token's AppRole."""
    entry = {"type": "response", "time": "2026-12-08T10:00:00Z", "error": DENIED,
             "auth": {"display_name": "approle" if role else "token",
                      "metadata": {"role_name": role} if role else None},
             "request": {"path": path, "operation": operation, "remote_address": remote}}
    return {"msg": json.dumps(entry, separators=(",", ":")), "host": node, "tag": "vault-audit",
            "from": ADDR[node]}


def _login_refused(remote: str, node: str = "vault1") -> dict[str, Any]:
    """OpenBao's audit response of an AppRole login its secret_id's CIDR binding refused: no top-level error,
    the reason in response.data (in clear: vault-setup tunes the approle mount; test_secops_sources.py)."""
    entry = {"type": "response", "time": "2026-12-08T10:00:00Z", "auth": {"token_type": "default"},
             "request": {"path": "auth/approle/login", "operation": "update", "remote_address": remote,
                         "data": {"role_id": "hmac-sha256:bf5f", "secret_id": "hmac-sha256:7982"}},
             "response": {"mount_type": "approle", "data": {
                 "error": f'source address "{remote}" unauthorized through CIDR restrictions on the secret ID'}}}
    return {"msg": json.dumps(entry, separators=(",", ":")), "host": node, "tag": "vault-audit", "from": ADDR[node]}


def _wrap_refused(remote: str, node: str = "vault1") -> dict[str, Any]:
    """OpenBao's audit request entry of a refused wrapping token (no response is audited; test_secops_sources.py)."""
    entry = {"type": "request", "time": "2026-12-08T10:00:00Z", "auth": {"token_type": "default"},
             "request": {"path": "sys/wrapping/lookup", "operation": "update", "remote_address": remote,
                         "data": {"token": "hmac-sha256:2376"}},
             "error": "wrapping token is not valid or does not exist"}
    return {"msg": json.dumps(entry, separators=(",", ":")), "host": node, "tag": "vault-audit", "from": ADDR[node]}


def _drop(src: str, at: str, port: int) -> dict[str, Any]:
    """An nftables histo-drop line of kern.log, shipped by the machine that dropped it."""
    msg = (f"[812.3] histo-drop: IN=eth1 OUT= MAC=aa SRC={src} DST={ADDR[at]} LEN=60 TOS=0x00 PROTO=TCP "
           f"SPT=40000 DPT={port} WINDOW=64240 SYN")
    return {"msg": msg, "host": at, "tag": "kernel:", "from": ADDR[at]}


def _zk_denied(host: str, operation: str, znode: str, at: str = "zk1") -> dict[str, Any]:
    """ZooKeeper 3.8.0's audit failure (tests/unit/test_secops_sources.py ZK_DENIED), from a ZooKeeper server."""
    a = ADDR[host]
    msg = (f" 2026-12-08T10:00:00.542+0000 ERROR [SyncThread:0] Slf4jAuditLogger: session=0x10000c9f29c0001"
           f"#011user=CN={host}.histo.internal,histo-worker,{a}#011ip={a}#011operation={operation}"
           f"#011znode={znode}#011result=failure ")
    return {"msg": msg, "host": at, "tag": "zookeeper", "from": ADDR[at]}


def _service(at: str, kind: str, **fields: Any) -> dict[str, Any]:
    """A master's own security event as its EventFile writes it (edge/events.py), shipped by that master."""
    event = EventBus().make_event(kind, severity="warning", service=at, **fields)
    line = json.dumps({k: v for k, v in event.items() if k != "audience"}, separators=(",", ":"), sort_keys=True)
    return {"msg": line, "host": at, "tag": "histo-events", "from": ADDR[at]}


JOB = "0123456789abcdef01234567"
W1_URI = "spiffe://histo.internal/worker/worker1"
SAMPLES: dict[str, list[dict[str, Any]]] = {
    "stolen certificate": [
        _service("master1", "mtls_rejected", peer=ADDR["worker2"], path="/internal/v1/results",
                 reason=f"certificate of {W1_URI} presented from {ADDR['worker2']}, not its own address"),
        _service("master1", "mtls_rejected", peer=ADDR["master2"], path="/internal/v1/results",
                 reason=f"certificate of {W1_URI} presented from {ADDR['master2']}, not its own address"),
        _drop(CONTROLLER, "master1", 8443)],
    "compromised worker": [
        _audit("secret/data/histo/zk/master", "read", ADDR["worker1"], "histo-worker1"),
        _zk_denied("worker1", "delete", f"/histo/jobs/{JOB}/tasks/0"),
        _drop(ADDR["worker1"], "worker2", 8443)],
    "forged / replayed result": [
        _service("master1", "result_refused", worker="worker1", job=JOB, task=0, reason="replayed result"),
        _service("master1", "result_refused", worker="worker2", job=JOB, task=0,
                 reason="stale or forged attempt (no such pending attempt)")],
    "ssh lateral": [_drop(ADDR["worker1"], "zk1", 22)],
    "used secret_id": [_wrap_refused(ADDR[NAMES.groups["workers"][-1]])],
    "copied secret_id": [_login_refused(ADDR["worker2"]), _login_refused(CONTROLLER)],
    "expired certificate": [_service("master1", "tls_handshake_refused", peer=ADDR["worker1"], listener="internal",
                                     reason="certificate has expired", suppressed=0)],
    "revoked token": [_service("master2", "auth_failure", where=CONTROLLER, reason="token revoked",
                               path="/api/v1/jobs")],
    "certificate without its address": [_audit("pki_int/issue/host-worker1", "update", ADDR["worker1"],
                                               "histo-worker1")],
    "revoked certificate": [_service("master2", "mtls_rejected", peer=ADDR["worker1"], path="/internal/v1/join",
                                     reason=f"certificate 1a2b of {W1_URI} is revoked")],
    "provisioner token": [_audit("secret/data/histo/zk/super", "read", CONTROLLER)],
    "flood": [_service("master1", "auth_failure", where=OUTSIDER, reason="bad signature", path="/api/v1/jobs")],
    "connection flood": [_service("master1", "connection_refused", where=OUTSIDER,
                                  reason="per-address connection cap")],
}


def api_events(lines: list[dict[str, Any]], tmp: Path) -> list[dict[str, Any]]:
    """What GET /api/v1/secops/events serves once the collector stored `lines` and its relay pushed them."""
    hosts = [{"name": name, "role": ROLES[group], "address": body["hosts"][name]["histo_address"]}
             for group, body in INV["all"]["children"].items() for name in body["hosts"]]
    record = tmp / "secops.log"
    c = Collector(record, LocalSigner(), None, interval=3600, self_host="secops1",
                  inventory=Inventory(hosts, INV["all"]["vars"]["histo_ports"]))
    c.run(io.StringIO("".join(json.dumps(line) + "\n" for line in lines)))
    pushed = [ev for ev in (from_entry(json.loads(x)) for x in record.read_text().splitlines()) if ev is not None]
    feed = SecopsFeed(lambda kind, **fields: None)
    feed.push("secops1", "0" * 64, pushed)
    page = feed.query(since=0, limit=500)
    assert not page["more"]
    events: list[dict[str, Any]] = page["events"]
    return events


def _wanted(drill: str, names: Names = NAMES) -> list[Wanted]:
    entry = drills.DETECTED[drill]
    return [] if isinstance(entry, str) else [r.at(names) for r in entry]


# -- the table -------------------------------------------------------------------------------------------------
def test_every_drill_has_an_entry_and_a_drill_without_one_says_why() -> None:
    assert list(drills.DETECTED) == drills.DRILLS == list(cli.DRILLS)
    for drill, entry in drills.DETECTED.items():
        if isinstance(entry, str):
            assert len(entry) > 20 and "\n" not in entry, drill
            continue
        assert entry, f"{drill}: an empty tuple skips silently; say why with a string"
        for r in entry:
            assert isinstance(r, Refusal) and r.layer in LAYERS and KIND.fullmatch(r.kind), (drill, r)
            assert r.reason and "\n" not in r.reason, (drill, r)


@pytest.mark.parametrize("profile", PROFILES)
def test_the_table_resolves_in_every_profile(profile: str) -> None:
    names = names_from_inventory(load_inventory(profile), drills.FLOOD_ADDRESSES)
    hosts = {h for group in names.groups.values() for h in group}
    for drill in drills.DRILLS:
        for w in _wanted(drill, names):
            assert w.host in hosts or w.host == OUTSIDE, (drill, w)
            assert w.where is None or w.where in hosts, (drill, w)
            assert w.addresses is None or w.addresses, (drill, w)
    worker1 = names.groups["workers"][0]
    assert _wanted("compromised worker", names)[0].host == worker1


def test_samples_cover_every_drill_with_an_expectation() -> None:
    assert set(SAMPLES) == {d for d, e in drills.DETECTED.items() if not isinstance(e, str)}


# -- each drill's refusals recognised in the API's events, through the real collector, relay and feed -----------
@pytest.mark.parametrize("drill", sorted(SAMPLES))
def test_a_drills_refusals_are_found_in_what_the_api_serves(drill: str, tmp_path: Path) -> None:
    events = api_events(SAMPLES[drill], tmp_path)
    assert len(events) == len(SAMPLES[drill]), events  # every sample line was attributed and relayed
    arrivals = Arrivals(_wanted(drill), started=100.0)
    arrivals.feed(events, now=103.25)
    assert arrivals.done(), [w.describe() for w in arrivals.missing]
    for w, ev, seconds in arrivals.arrived():
        assert (ev["layer"], ev["host"], ev["collector"], seconds) == (w.layer, w.host, "secops1", 3.2)
        assert ev["spiffe"] is None if w.host == OUTSIDE else ev["spiffe"].endswith(f"/{w.host}"), ev


def test_the_expectations_tell_the_drills_apart(tmp_path: Path) -> None:
    """No drill's samples are taken for another drill's refusals (a late refusal of the drill before
    cannot pass for the next one's)."""
    served = {}
    for i, (d, lines) in enumerate(SAMPLES.items()):
        (tmp_path / str(i)).mkdir()
        served[d] = api_events(lines, tmp_path / str(i))
    for drill in SAMPLES:
        for other, events in served.items():
            if other == drill:
                continue
            a = Arrivals(_wanted(drill), 0.0)
            a.feed(events, 1.0)
            assert not a.done(), f"{other}'s refusals pass for {drill}'s: {a.arrived()}"


def test_a_refusal_must_match_on_every_field_it_names() -> None:
    w = Refusal("firewall", "{workers[0]}", "firewall_drop", "r", what="port {ports[internal]}/TCP",
                where="{workers[1]}").at(NAMES)
    ev = {"layer": "firewall", "kind": "firewall_drop", "host": "worker1", "what": "port 8443/TCP", "where": "worker2"}
    assert w.matches(ev)
    for change in ({"layer": "vault"}, {"kind": "ssh_refused"}, {"host": "worker2"}, {"what": "port 22/TCP"},
                   {"what": None}, {"where": "master1"}):
        assert not w.matches({**ev, **change}), change
    outside = Refusal("service", OUTSIDE, "auth_failure", "r", address="controller").at(NAMES)
    ev = {"layer": "service", "kind": "auth_failure", "host": OUTSIDE, "address": CONTROLLER}
    assert outside.matches(ev) and not outside.matches({**ev, "address": OUTSIDER})
    assert not outside.matches({**ev, "address": None})


def test_names_resolve_groups_from_either_end_and_ports() -> None:
    small = names_from_inventory(load_inventory("small"), [])
    assert NAMES.resolve("{masters[-1]} -> {masters[0]}:{ports[internal]}") == "master2 -> master1:8443"
    assert small.resolve("{masters[-1]}") == small.resolve("{masters[0]}") == "master1"
    assert NAMES.resolve("outside") == "outside" and NAMES.addresses["controller"] == [CONTROLLER]
    with pytest.raises(KeyError):
        NAMES.resolve("{workerz[0]}")
    with pytest.raises(ValueError):
        NAMES.resolve("{workers}")


def test_arrivals_keep_the_first_sighting_of_each() -> None:
    wanted = [Wanted("vault", "worker1", "vault_denied"), Wanted("service", "worker2", "mtls_rejected")]
    a = Arrivals(wanted, started=10.0)
    first = {"layer": "vault", "host": "worker1", "kind": "vault_denied", "record_seq": 5}
    a.feed([first, {"layer": "vault", "host": "worker2", "kind": "vault_denied", "record_seq": 6}], now=12.04)
    assert not a.done() and a.missing == wanted[1:] and a.seen == 2
    a.feed([{**first, "record_seq": 9}, {"layer": "service", "host": "worker2", "kind": "mtls_rejected"}], now=15.0)
    assert a.done() and [(w.layer, ev.get("record_seq"), s) for w, ev, s in a.arrived()] == [
        ("vault", 5, 2.0), ("service", None, 5.0)]


def test_the_artifact_is_appended_to_and_made_with_its_folder(tmp_path: Path) -> None:
    path = tmp_path / "test-artifacts" / "detection.json"
    row = {"drill": "ssh lateral", "layer": "firewall", "host": "worker1", "seconds": 4.5}
    append_rows(path, [row])
    append_rows(path, [{**row, "seconds": 6.0}, {**row, "layer": "vault", "seconds": 1.0}])
    assert [r["seconds"] for r in json.loads(path.read_text())] == [4.5, 6.0, 1.0]
    assert [p.name for p in path.parent.iterdir()] == ["detection.json"]  # no temporary file left
    path.write_text("{}")
    with pytest.raises(ValueError):
        append_rows(path, [row])


def test_bench_summarizes_per_layer() -> None:
    rows = [{"drill": "d", "layer": "vault", "seconds": s} for s in (3.0, 1.0, 2.0, 10.0)]
    rows += [{"drill": "e", "layer": "firewall", "seconds": 7.0}]
    assert bench.by(rows, "layer") == {"firewall": {"n": 1, "p50_s": 7.0, "p99_s": 7.0, "max_s": 7.0},
                                       "vault": {"n": 4, "p50_s": 2.5, "p99_s": 10.0, "max_s": 10.0}}
    assert bench.stats(float(i) for i in range(1, 201))["p99_s"] == 199.0
    with pytest.raises(ValueError):
        bench.stats([])
