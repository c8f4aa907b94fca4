"""The detection rules (secops/rules.yaml) and the detector: each rule fires on the refusal it is
written for, as classify() attributes that layer's own line; thresholds count in a sliding window; an
outside address is only ever alerted on; the cluster's ordinary traffic never quarantines anyone; and
no secret of an event reaches an incident."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import pytest

import histo
from histo.edge.events import EventBus
from histo.secops.detect import MAX_EVIDENCE, Detector, Incident
from histo.secops.rules import Rule, RulesError, load_rules, parse_rules
from histo.secops.sources import Inventory, classify

INV = Inventory([{"name": "vault1", "role": "vault", "address": "192.168.56.10"},
                 {"name": "zk1", "role": "zookeeper", "address": "192.168.56.11"},
                 {"name": "master1", "role": "master", "address": "192.168.56.21"},
                 {"name": "worker1", "role": "worker", "address": "192.168.56.31"},
                 {"name": "worker2", "role": "worker", "address": "192.168.56.32"},
                 {"name": "secops1", "role": "secops", "address": "192.168.56.40"}],
                {"vault": 8200, "zk_client": 2281, "zk_quorum": 2888, "public": 443, "internal": 8443})
ADDR = {h.name: a for a, h in INV.by_address.items()}
RULES = load_rules()
EXPECTED = {"vault-policy-denied": "quarantine", "vault-token-refused": "alert",
            "zookeeper-acl-denied": "quarantine", "zookeeper-auth-refused": "alert",
            "zookeeper-write-denied-by-address": "alert",
            "firewall-drop-cluster-machine": "alert", "firewall-drop-infrastructure": "alert",
            "forged-task-result": "quarantine", "result-disputed": "alert", "stale-task-results": "alert",
            "mtls-refused-repeatedly": "alert", "tls-handshake-refused-repeatedly": "alert",
            "forged-source": "alert", "vault-denied-by-address": "alert",
            "ssh-refused": "alert", "outside-refused": "alert",
            "vault-login-outside-binding": "alert", "vault-wrapping-token-refused": "alert"}


# -- each layer's own lines, as the collector receives them (tag, and `from`: the sending address) ----
def vault_audit(error: str, role_name: str | None, path: str, remote: str) -> dict[str, Any]:
    entry = {"type": "response", "error": error,
             "auth": {"display_name": "approle", "metadata": {"role_name": role_name}} if role_name else {},
             "request": {"path": path, "operation": "read", "remote_address": remote}}
    return {"msg": json.dumps(entry, separators=(",", ":")), "host": "vault1", "tag": "vault-audit",
            "from": ADDR["vault1"]}


def copied_login(remote: str, owner: str = "192.168.56.32") -> dict[str, Any]:
    """OpenBao's audit entry of an AppRole login refused for its source address (the approle mount tuned:
    the reason in clear in response.data, no top-level error): a secret_id bound to `owner` presented
    from `remote` (the real entry: tests/unit/test_secops_sources.py BAO_COPIED)."""
    entry = {"type": "response", "auth": {"token_type": "default"},
             "request": {"path": "auth/approle/login", "operation": "update", "remote_address": remote,
                         "data": {"role_id": "hmac-sha256:bf5f", "secret_id": "hmac-sha256:7982"}},
             "response": {"mount_type": "approle", "data": {
                 "error": f'source address "{remote}" unauthorized through CIDR restrictions on the secret ID'}}}
    return {"msg": json.dumps(entry, separators=(",", ":")), "host": "vault1", "tag": "vault-audit",
            "from": ADDR["vault1"]}


def wrapping_refused(client: str, path: str = "sys/wrapping/lookup") -> dict[str, Any]:
    """OpenBao's audit entry of a refused wrapping token: the request only, with the error (the real entry:
    tests/unit/test_secops_sources.py BAO_EXPIRED_LOOKUP)."""
    entry = {"type": "request", "auth": {"token_type": "default"},
             "request": {"operation": "update", "path": path, "data": {"token": "hmac-sha256:ade822d8"},
                         "remote_address": client}, "error": "wrapping token is not valid or does not exist"}
    return {"msg": json.dumps(entry, separators=(",", ":")), "host": "vault1", "tag": "vault-audit",
            "from": ADDR["vault1"]}


def nft(src: str, dst: str, port: int, proto: str = "TCP") -> dict[str, Any]:
    at = INV.by_address[dst].name
    tail = f"PROTO={proto} SPT=40000 DPT={port} WINDOW=64240 SYN" if proto in ("TCP", "UDP") else f"PROTO={proto}"
    return {"msg": f"[12.3] histo-drop: IN=eth1 OUT= MAC=aa SRC={src} DST={dst} LEN=60 TOS=0x00 {tail}",
            "host": at, "tag": "kernel:", "from": dst}


def service(kind: str, sender: str, **fields: Any) -> dict[str, Any]:
    """A master's or worker's EventFile line (edge/events.py: make_event, audience dropped), shipped."""
    event = EventBus().make_event(kind, **fields)
    line = json.dumps({k: v for k, v in event.items() if k != "audience"}, separators=(",", ":"), sort_keys=True)
    return {"msg": line, "host": sender, "tag": "histo-events", "from": ADDR[sender]}


def sshd(src: str, at: str = "zk1") -> dict[str, Any]:
    return {"msg": f"Failed password for root from {src} port 50000 ssh2", "host": at, "tag": "sshd[42]:",
            "from": ADDR[at]}


# ZooKeeper 3.8.0's own lines, as its refusals file has them (tests/unit/test_secops_sources.py).
ZK_DENIED = ("2026-12-06T05:35:41.542+0000 ERROR [SyncThread:0] Slf4jAuditLogger: session=0x10000c9f29c0001\t"
             "user=CN=worker1.histo.internal,histo-worker,192.168.56.31\tip=192.168.56.31\toperation=setData\t"
             "znode=/histo/jobs/j1\tresult=failure")
# the same refusal in a session no certificate of ours names: only its address says who
ZK_DENIED_BY_ADDRESS = ("2026-12-06T05:35:41.542+0000 ERROR [SyncThread:0] Slf4jAuditLogger: "
                        "session=0x10000c9f29c0002\tuser=histo-worker,192.168.56.31\tip=192.168.56.31\toperation=setData\t"
                        "znode=/histo/jobs/j1\tresult=failure")
ZK_NO_CERT = (r"2026-12-06T05:35:41.133+0000 WARN [nioEventLoopGroup-4-3] NettyServerCnxnFactory: Exception caught "
              r"io.netty.handler.codec.DecoderException: javax.net.ssl.SSLHandshakeException: Empty client "
              r"certificate chain\n\n2026-12-06T05:35:41.137+0000 DEBUG [nioEventLoopGroup-4-3] "
              r"NettyServerCnxnFactory: Closing  /192.168.56.32:51439[0](queued=0,recved=0,sent=0) ")


def zk(msg: str) -> dict[str, Any]:
    raw = {"msg": msg, "host": "zk1", "tag": "zookeeper", "from": ADDR["zk1"]}
    assert classify(raw, INV, "secops1") is not None, msg
    return raw


def attributed(raw: dict[str, Any], ts: float) -> dict[str, Any]:
    """What the detector is fed: classify()'s attribution with the stored event's ts."""
    found = classify(raw, INV, "secops1")
    assert found is not None, raw
    return {**found, "ts": ts}


def feed_all(det: Detector, raw: dict[str, Any], times: int, start: float = 1000.0, step: float = 1.0,
             seq: int = 1) -> list[Incident]:
    out: list[Incident] = []
    for i in range(times):
        out += det.feed(attributed(raw, start + i * step), seq=seq + i)
    return out


# rule -> (a refusal it is written for, how many of them reach its threshold, whom it names)
SCENARIOS: dict[str, tuple[dict[str, Any], int, str]] = {
    "vault-policy-denied": (vault_audit("1 error occurred:\n\t* permission denied\n\n", "histo-worker1",
                                        "secret/data/histo/zk/super", "192.168.56.31"), 1, "worker1"),
    "vault-denied-by-address": (vault_audit("1 error occurred:\n\t* permission denied\n\n", None,
                                            "secret/data/histo/zk/super", "192.168.56.31"), 1, "worker1"),
    "vault-token-refused": (vault_audit("2 errors occurred:\n\t* permission denied\n\t* invalid token\n\n", None,
                                        "secret/data/histo/worker1", "192.168.56.31"), 5, "worker1"),
    "zookeeper-acl-denied": (zk(ZK_DENIED), 1, "worker1"),
    "zookeeper-write-denied-by-address": (zk(ZK_DENIED_BY_ADDRESS), 1, "worker1"),
    "zookeeper-auth-refused": (zk(ZK_NO_CERT), 1, "worker2"),
    "firewall-drop-cluster-machine": (nft(ADDR["worker1"], ADDR["zk1"], 2888), 1, "worker1"),
    "firewall-drop-infrastructure": (nft(ADDR["zk1"], ADDR["worker1"], 8443), 1, "zk1"),
    "forged-task-result": (service("result_refused", "master1", worker="worker1", job="j1", task=3,
                                   reason="task attempt assigned to worker2, reported by worker1"), 1, "worker1"),
    "result-disputed": (service("result_disputed", "master1", severity="critical", worker="worker2", job="j1",
                                reason="workers worker1, worker2 computed different results for job j1"), 1, "worker2"),
    "stale-task-results": (service("result_refused", "master1", worker="worker2", job="j1", task=3,
                                   reason="no such task attempt pending (stale or forged)"), 5, "worker2"),
    "mtls-refused-repeatedly": (service("mtls_rejected", "master1", reason="peer is not a master",
                                        peer="192.168.56.32", path="/internal/v1/replicas"), 3, "worker2"),
    "tls-handshake-refused-repeatedly": (service("tls_handshake_refused", "master1", severity="warning",
                                                 peer="192.168.56.31", listener="internal",
                                                 reason="certificate has expired"), 3, "worker1"),
    "forged-source": ({**vault_audit("permission denied", "histo-master1", "transit/sign/histo-tokens", "x"),
                       "from": ADDR["worker1"]}, 1, "worker1"),
    "ssh-refused": (sshd("192.168.56.31"), 1, "worker1"),
    "vault-login-outside-binding": (copied_login("192.168.56.31"), 1, "worker1"),
    "vault-wrapping-token-refused": (wrapping_refused("192.168.56.31"), 1, "worker1"),
    "outside-refused": (service("auth_failure", "master1", where="203.0.113.7", reason="expired token",
                                path="/api/v1/jobs"), 5, "outside"),
}


# -- the file --------------------------------------------------------------------------------------
def test_the_packaged_rules_validate_and_ship_with_the_wheel() -> None:
    assert {r.name: r.response for r in RULES} == EXPECTED
    assert all(r.description and r.evidence for r in RULES)
    app = Path(histo.__file__).parent.parent
    globs = tomllib.loads((app / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["histo"]
    assert any(fnmatch("secops/rules.yaml", g) for g in globs)  # importlib.resources finds it installed
    deps = tomllib.loads((app / "pyproject.toml").read_text())["project"]["dependencies"]
    assert "pyyaml" in [d.lower() for d in deps]


GOOD = """
rules:
  - name: r1
    description: why
    match: {layer: vault, kind: vault_denied, role: [worker]}
    threshold: {count: 2, within: 10}
    severity: critical
    response: quarantine
    evidence: what
"""


def _bad(old: str, new: str) -> str:
    assert old in GOOD
    return GOOD.replace(old, new)


BAD = [
    (_bad("    severity: critical\n", "    severity: critical\n    colour: red\n"), "rule 'r1': unknown key 'colour'"),
    (_bad("layer: vault", "layer: kafka"), "rule 'r1': match.layer: unknown layer 'kafka'"),
    (_bad("response: quarantine", "response: reboot"), "rule 'r1': response must be one of"),
    (_bad("count: 2", "count: 0"), "rule 'r1': threshold.count must be an integer >= 1"),
    (_bad("count: 2", "count: true"), "rule 'r1': threshold.count"),
    (_bad("within: 10", "within: 0"), "rule 'r1': threshold.within"),
    (GOOD + GOOD.split("rules:\n", 1)[1], "rule 'r1': name given to two rules"),
    (_bad("    severity: critical\n", "    severity: critical\n    severity: warning\n"), "key 'severity' given twice"),
    (_bad("severity: critical", "severity: loud"), "rule 'r1': severity must be one of"),
    (_bad("role: [worker]", "role: [admin]"), "rule 'r1': match.role: unknown 'admin'"),
    (_bad("role: [worker]", "role: [outside]"), "rule 'r1': response quarantine for role outside"),
    (_bad("kind: vault_denied", "kind: vault_denied, kinds: [x]"), "rule 'r1': match has both kind and kinds"),
    (_bad("kind: vault_denied", "kind: Vault-Denied"), "rule 'r1': match.kind: 'Vault-Denied' is not a kind"),
    (_bad("role: [worker]", "colour_contains: [x]"), "rule 'r1': unknown match key 'colour_contains'"),
    (_bad("role: [worker]", "port_below: high"), "rule 'r1': match.port_below must be a port number"),
    (_bad("{layer: vault, kind: vault_denied, role: [worker]}", "{why_contains: [x]}"),
     "rule 'r1': match names no layer, kind or role"),
    (_bad("    evidence: what\n", ""), "rule 'r1': evidence must be a non-empty sentence"),
    (_bad("name: r1", "name: R 1"), "rule #1: name must be a slug"),
    ("rules: [\n", "not valid YAML (line"),
    ("- just a list\n", "the file must be a mapping with one key, rules"),
    ("rules: []\n", "rules must be a non-empty list"),
]


def test_a_good_file_parses() -> None:
    (rule,) = parse_rules(GOOD)
    assert (rule.name, rule.count, rule.within, rule.roles, rule.response) == (
        "r1", 2, 10.0, frozenset({"worker"}), "quarantine")


@pytest.mark.parametrize("text,expected", BAD, ids=[e for _, e in BAD])
def test_every_invalid_file_is_one_line_naming_rule_and_field(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    with pytest.raises(RulesError) as caught:
        load_rules(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ") and expected in message and "\n" not in message


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(histo.__file__).parent.parent),
                                                         os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "histo.cli", "secops", "rules-check", *args], capture_output=True,
                          text=True, timeout=60, env=env)


def test_rules_check_cli(tmp_path: Path) -> None:
    good = run_cli()
    assert good.returncode == 0, good.stderr
    summary = json.loads(good.stdout)
    assert summary["rules"] == len(EXPECTED)
    assert sorted(summary["quarantine"]) == sorted(n for n, r in EXPECTED.items() if r == "quarantine")
    for text, expected in (BAD[0], BAD[6], BAD[18]):
        (tmp_path / "r.yaml").write_text(text)
        out = run_cli("--rules", str(tmp_path / "r.yaml"))
        assert out.returncode != 0 and out.stdout == "" and "Traceback" not in out.stderr
        assert out.stderr.strip().splitlines() == [out.stderr.strip()] and expected in out.stderr
        assert out.stderr.startswith(f"histo: rules: {tmp_path / 'r.yaml'}: ")
    missing = run_cli("--rules", str(tmp_path / "nope.yaml"))
    assert missing.returncode != 0 and missing.stderr.strip() == (
        f"histo: rules: {tmp_path / 'nope.yaml'}: cannot read (No such file or directory)")


# -- the detector ----------------------------------------------------------------------------------
def detector(rules: list[Rule] | None = None, quiet: float = 10_000.0) -> Detector:
    return Detector(RULES if rules is None else rules, clock=lambda: 5000.0, quiet=quiet)


def test_every_rule_has_a_scenario() -> None:
    assert set(SCENARIOS) == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_each_rule_fires_on_its_refusal_at_its_threshold(name: str) -> None:
    raw, count, host = SCENARIOS[name]
    det = detector()
    assert feed_all(det, raw, count - 1) == []  # one short of the threshold: nothing yet
    (inc,) = feed_all(det, raw, 1, start=1000.0 + count - 1, seq=count)
    assert (inc.rule, inc.host, inc.response, inc.state) == (name, host, EXPECTED[name], "open")
    assert inc.severity == next(r.severity for r in RULES if r.name == name)
    assert inc.spiffe == (None if host == "outside" else INV.who(INV.by_name[host])["spiffe"])
    assert [e["seq"] for e in inc.evidence] == list(range(1, count + 1))
    assert (inc.first_seen, inc.detected) == (1000.0, 5000.0)
    event = inc.as_event()
    assert event["kind"] == "incident_opened" and event["incident"] == inc.id and event["rule"] == name
    assert classify(event, INV) is None  # the record's own entry is never taken for a refusal
    json.dumps(event)


def test_a_threshold_counts_inside_its_window_only() -> None:
    raw = SCENARIOS["mtls-refused-repeatedly"][0]  # 3 within 30 s
    det = detector()
    assert det.feed(attributed(raw, 0.0), 1) == [] and det.feed(attributed(raw, 10.0), 2) == []
    assert det.feed(attributed(raw, 45.0), 3) == []  # 0 and 10 are older than 30 s by now
    assert det.feed(attributed(raw, 50.0), 4) == []
    (inc,) = det.feed(attributed(raw, 55.0), 5)
    assert [e["seq"] for e in inc.evidence] == [3, 4, 5] and inc.first_seen == 45.0
    # `at` (the collector's time) wins over the event's ts
    det2 = detector()
    for seq, at in ((1, 0.0), (2, 100.0)):
        assert det2.feed(attributed(raw, 1.0), seq, at=at) == []
    assert len(det2.feed(attributed(raw, 1.0), 3, at=110.0 + 0.5)) == 0  # 0 expired: 100, 110.5 only


def test_one_open_incident_per_identity_evidence_bounded_and_closing() -> None:
    raw = SCENARIOS["forged-task-result"][0]
    det = detector()
    (inc,) = feed_all(det, raw, 1)
    assert feed_all(det, raw, 30, start=2000.0, seq=100) == []  # the same machine again: the same incident
    assert feed_all(det, SCENARIOS["ssh-refused"][0], 1, start=3000.0, seq=500) == []  # another layer too
    assert len(det.open_incidents) == 1 and len(inc.evidence) == MAX_EVIDENCE and inc.evidence_dropped == 12
    assert det.close(inc.id) is inc and inc.state == "closed" and det.open_incidents == []
    (again,) = feed_all(det, raw, 1, start=4000.0, seq=600)
    assert again is not inc and again.id != inc.id
    # another machine is another incident, the same one's other layers are not
    assert feed_all(det, SCENARIOS["firewall-drop-cluster-machine"][0], 1, start=4000.0, seq=700) == []
    (other,) = feed_all(det, nft(ADDR["worker2"], ADDR["zk1"], 2888), 1, start=4000.0, seq=701)
    assert (other.host, again.host, len(det.open_incidents)) == ("worker2", "worker1", 2)


def test_an_incident_ends_after_a_quiet_period_and_later_evidence_is_tied_to_it() -> None:
    raw = SCENARIOS["forged-task-result"][0]
    det = detector(quiet=60.0)
    (inc,) = feed_all(det, raw, 1, start=1000.0)
    assert feed_all(det, raw, 1, start=1050.0, seq=2) == [] and det.joined is not None
    assert det.joined[0] is inc and det.joined[1]["seq"] == 2  # what the collector records as evidence
    assert feed_all(det, raw, 1, start=1100.0, seq=3) == []  # 50 s after the last: still the same one
    (later,) = feed_all(det, raw, 1, start=1161.0, seq=4)  # 61 s of quiet: a new incident
    assert later is not inc and inc.state == "quiet" and det.joined is None


def test_an_alert_incident_is_escalated_by_quarantine_evidence() -> None:
    det = detector()
    (inc,) = feed_all(det, SCENARIOS["ssh-refused"][0], 1)  # worker1 tried SSH: alert
    assert (inc.response, inc.host) == ("alert", "worker1")
    (same,) = feed_all(det, SCENARIOS["vault-policy-denied"][0], 1, start=1001.0, seq=2)
    assert same is inc and (inc.rule, inc.response, inc.escalated_from, inc.severity) == (
        "vault-policy-denied", "quarantine", "ssh-refused", "critical")
    assert inc.as_event()["kind"] == "incident_escalated" and [e["seq"] for e in inc.evidence] == [1, 2]
    # a quarantine incident is never lowered by later alert evidence
    assert feed_all(det, SCENARIOS["ssh-refused"][0], 1, start=1002.0, seq=3) == [] and inc.response == "quarantine"


def test_outside_is_alerted_on_never_quarantined() -> None:
    # the packaged forged-source rule says quarantine; a sender the inventory does not know has no identity
    raw = {**SCENARIOS["forged-source"][0], "from": "198.51.100.9"}
    (inc,) = feed_all(detector(), raw, 1)
    assert (inc.rule, inc.host, inc.address, inc.response) == ("forged-source", "outside", "198.51.100.9", "alert")
    # a rule with no role filter, quarantine: an outside scan of the firewall is still an alert
    (rule,) = parse_rules(GOOD.replace("{layer: vault, kind: vault_denied, role: [worker]}",
                                       "{layer: firewall}").replace("count: 2", "count: 1"))
    det = detector([rule])
    (scan,) = det.feed(attributed(nft("203.0.113.9", ADDR["master1"], 22), 1.0), 1)
    (inside,) = det.feed(attributed(nft(ADDR["worker2"], ADDR["master1"], 22), 1.0), 2)
    assert (scan.response, inside.response, inside.host) == ("alert", "quarantine", "worker2")
    # two outside addresses are two identities
    assert det.feed(attributed(nft("203.0.113.10", ADDR["master1"], 22), 1.0), 3)[0] is not scan


def test_the_clusters_ordinary_traffic_never_quarantines() -> None:
    """What make test and the soak produce without any attack: Vault outages, workers leaving, failed
    jobs, certificate rotations, users' wrong passwords and rate limits, a token that expired in a
    renewal race, a late result after a retry, one mTLS refusal in a rotation, VRRP and late replies
    to a rebooted master dropped by the matrix: many times each, none is a quarantine."""
    ordinary = [
        service("vault_unavailable", "worker1", service="worker1", reason="Vault unreachable"),
        service("worker_left", "master1", worker="worker1"),
        service("job_failed", "master1", job="j1", error="the image cannot be processed"),
        service("cert_rotated", "worker1", serial="1a:2b", not_after="2026-12-07T00:00:00Z"),
        service("leader_changed", "master1", severity="warning", leader=None, reason="session lost"),
        service("auth_failure", "master1", where="203.0.113.7", reason="expired token", path="/api/v1/jobs"),
        service("rate_limited", "master1", who="alice", where="203.0.113.7", scope="user"),
        service("forbidden", "master1", who="alice", role="viewer", where="203.0.113.8", path="/api/v1/jobs"),
        vault_audit("2 errors occurred:\n\t* permission denied\n\t* invalid token\n\n", None,
                    "auth/token/renew-self", "192.168.56.31"),
        vault_audit("invalid role or secret ID", None, "auth/approle/login", "192.168.56.32"),
        service("result_refused", "master1", worker="worker1", job="j1", task=1,
                reason="no such task attempt pending (stale or forged)"),
        service("mtls_rejected", "worker2", reason="certificate is not yet trusted", peer="https://192.168.56.21:8443"),
        nft(ADDR["master1"], ADDR["worker1"], 0, proto="112"),  # keepalived's VRRP reaches the workers too
        nft(ADDR["worker1"], ADDR["master1"], 41234),  # a worker's late reply after master1 rebooted
        nft(ADDR["zk1"], ADDR["master1"], 41236),  # ZooKeeper's too
    ]
    det = detector()
    incidents: list[Incident] = []
    for n, raw in enumerate(ordinary):
        found = classify(raw, INV, "secops1")
        if found is None:  # not a refusal at all (cert_rotated: info, never shipped)
            continue
        times = 1 if found["kind"] in ("mtls_rejected", "result_refused", "vault_denied") else 10
        incidents += feed_all(det, raw, times, start=1000.0 + 100 * n, step=10.0, seq=100 * n)
    assert [i for i in incidents if i.response == "quarantine"] == []
    # what did open is an alert about outside addresses (many failed sign-ins), nothing else
    assert {(i.rule, i.host) for i in incidents} == {("outside-refused", "outside")}


def test_a_late_wrapping_token_and_a_contained_hosts_retries_are_never_contained() -> None:
    """Legitimate, and refused all the same: a host provisioned late presents its own expired wrapping
    token at every start of its services; a contained host's services keep logging in with the secret_id
    the quarantine destroyed (OpenBao: data.error "invalid role or secret ID", error "invalid
    credentials"). Each is looked at (alert), none ever quarantines anyone."""
    destroyed = json.loads(copied_login(ADDR["worker2"])["msg"])
    destroyed["response"]["data"]["error"] = "invalid role or secret ID"
    destroyed["error"] = "invalid credentials"
    retry = {"msg": json.dumps(destroyed), "host": "vault1", "tag": "vault-audit", "from": ADDR["vault1"]}
    det = detector()
    incidents = feed_all(det, wrapping_refused(ADDR["worker1"]), 20, step=5.0)
    incidents += feed_all(det, wrapping_refused(ADDR["master1"], "sys/wrapping/unwrap"), 20, step=5.0, seq=100)
    incidents += feed_all(det, retry, 30, step=2.0, seq=200)
    assert {(i.rule, i.host, i.response) for i in incidents} == {
        ("vault-wrapping-token-refused", "worker1", "alert"), ("vault-wrapping-token-refused", "master1", "alert"),
        ("vault-token-refused", "worker2", "alert")}


def test_a_worker_whose_certificate_lapsed_is_alerted_on_never_quarantined() -> None:
    """Vault away longer than worker1's certificate life: every master's internal listener refuses its
    expired certificate at the handshake until it renews (each service reports at most 3 at once, then
    one per 10 s: edge/conncap.py HandshakeReporter). One refusal is nothing; the run is an alert."""
    expired = service("tls_handshake_refused", "master1", severity="warning", peer=ADDR["worker1"],
                      listener="internal", reason="certificate has expired")
    det = detector()
    assert feed_all(det, expired, 1) == []  # one refusal (a certificate lapsing mid-rotation)
    incidents = feed_all(det, expired, 2, start=1001.0, seq=2)  # the reporter's burst
    incidents += feed_all(det, expired, 60, start=1010.0, step=10.0, seq=10)  # then one per 10 s
    assert [(i.rule, i.host, i.response) for i in incidents] == [
        ("tls-handshake-refused-repeatedly", "worker1", "alert")]
    assert [i for i in det.open_incidents if i.response == "quarantine"] == []


def test_an_event_naming_no_one_opens_nothing() -> None:
    det = detector()
    unattributed = attributed(service("vault_unavailable", "worker1", service="worker1", reason="x"), 1.0)
    assert unattributed["host"] == "outside" and unattributed["address"] is None
    assert det.feed(unattributed, 1) == []
    assert det.feed({"layer": "secops", "kind": "forged_source", "host": "worker1", "spiffe": None}, 2) == []
    # a host and a SPIFFE id that disagree: nothing rather than the wrong machine
    assert det.feed({"layer": "secops", "kind": "forged_source", "host": "worker1", "ts": 1.0,
                     "spiffe": "spiffe://histo.internal/worker/worker2"}, 3) == []
    assert det.feed({"layer": "secops", "kind": "forged_source", "host": "worker1", "ts": 1.0,
                     "spiffe": "spiffe://histo.internal/worker/worker1"}, 4) != []


def test_evidence_is_redacted() -> None:
    token, secret = "hvs.CAESIJ" + "x" * 80, "0f6b3a2e-1c44-4f6c-9b7e-5d2a8c1e9f00"
    raw = vault_audit(f"permission denied: token={token} secret_id={secret}", "histo-worker1",
                      f"secret/data/histo/{token}", "192.168.56.31")
    event = {**attributed(raw, 1.0), "reason": f"secret_id={secret}", "token": token, "secret_id": secret}
    (inc,) = detector().feed(event, 1)
    text = json.dumps(inc.as_event())
    assert inc.rule == "vault-policy-denied" and "[redacted]" in text
    assert token not in text and "CAESIJ" not in text and secret not in text


def test_a_borrowed_address_never_gets_a_healthy_machine_contained() -> None:
    """Root on worker1 can send with worker2's source address (the same network segment): a firewall
    drop, mTLS refusals and an anonymous Vault denial that all name worker2 by address. None of them
    may quarantine worker2 — only evidence bound to worker2's own secrets does (its AppRole token)."""
    det = detector()
    w2 = ADDR["worker2"]
    borrowed = [nft(w2, ADDR["zk1"], 2888), sshd(w2),
                vault_audit("1 error occurred:\n\t* permission denied\n\n", None, "secret/data/histo/zk/super", w2),
                *[service("mtls_rejected", "master1", reason="peer is not a master", peer=w2,
                          path="/internal/v1/replicas")] * 3,
                {**vault_audit("permission denied", "histo-master1", "transit/sign/histo-tokens", "x"), "from": w2},
                zk(ZK_DENIED_BY_ADDRESS.replace(ADDR["worker1"], w2)),  # a ZooKeeper write no certificate names
                # worker1's own secret_id presented from worker2's address, and a used wrapping token replayed
                copied_login(w2, owner=ADDR["worker1"]), wrapping_refused(w2, "sys/wrapping/unwrap")]
    opened: list[Incident] = []
    for i, raw in enumerate(borrowed):
        opened += det.feed(attributed(raw, 1000.0 + i), seq=i)
    assert opened and all(inc.response == "alert" for inc in det.open_incidents), det.open_incidents
    # worker1's own certificate in a session from worker2's address: worker1 is named, never worker2
    framed = attributed(zk(ZK_DENIED.replace("ip=" + ADDR["worker1"], "ip=" + w2)), 1050.0)
    assert (framed["host"], framed["by"]) == ("worker1", "certificate")
    # legitimate: worker2's own token refused a path outside its policy is evidence enough
    (own,) = det.feed(attributed(vault_audit("1 error occurred:\n\t* permission denied\n\n", "histo-worker2",
                                             "secret/data/histo/zk/super", w2), 1100.0), seq=99)
    assert (own.host, own.response, own.rule) == ("worker2", "quarantine", "vault-policy-denied")


def test_a_worker_outvoted_by_the_leaders_verification_is_contained() -> None:
    """master/scheduler.py: a worker whose result two others contradicted is reported as a refused result
    (forged: quarantine); two that disagree with no third are each named for a person (alert)."""
    det = detector()
    reason = "outvoted: its result for job j1 differs from the identical results of worker1 and worker3"
    (inc,) = det.feed(attributed(service("result_refused", "master1", worker="worker2", job="j1", task=0,
                                         reason=reason), 1000.0), seq=1)
    assert (inc.rule, inc.host, inc.response) == ("forged-task-result", "worker2", "quarantine")
    det = detector()
    found = [det.feed(attributed(service("result_disputed", "master1", severity="critical", worker=w, job="j1",
                                         reason="workers worker1, worker2 computed different results"), 1000.0 + i),
                      seq=i) for i, w in enumerate(("worker1", "worker2"))]
    assert [(i.rule, i.host, i.response) for incs in found for i in incs] == [
        ("result-disputed", "worker1", "alert"), ("result-disputed", "worker2", "alert")]
