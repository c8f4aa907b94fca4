"""`histo secops replay`: the rules over a layer's own files after the fact (what measures "no false
alarms" on a run of legitimate traffic, bench/soak.py). Lines are the formats of a real OpenBao audit
device and ZooKeeper 3.8.0's refusals file (tests/unit/test_secops_detect.py, test_secops_sources.py)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from histo.secops.replay import read_files, replay
from histo.secops.rules import load_rules
from histo.secops.sources import Inventory, ordinary_zk_failure

HOSTS = [{"name": "vault1", "role": "vault", "address": "127.0.31.10"},
         {"name": "zk1", "role": "zookeeper", "address": "127.0.31.11"},
         {"name": "master1", "role": "master", "address": "127.0.31.21"},
         {"name": "worker1", "role": "worker", "address": "127.0.31.31"}]
INV = Inventory(HOSTS)


def audit(when: str, role: str | None, path: str, error: str | None = None, kind: str = "response") -> str:
    entry: dict[str, Any] = {"time": when, "type": kind,
                             "auth": {"metadata": {"role_name": role}} if role else {},
                             "request": {"path": path, "operation": "read", "remote_address": "127.0.31.31"}}
    if error:
        entry["error"] = error
    return json.dumps(entry)


ORDINARY = [audit("2026-12-06T10:00:00.123456789Z", "histo-worker1", "secret/data/histo/worker1"),
            audit("2026-12-06T10:00:01.5Z", "histo-worker1", "pki_int/issue/worker1", kind="request"),
            audit("2026-12-06T10:00:02Z", None, "auth/approle/login", error="invalid role or secret ID")]
DENIED = audit("2026-12-06T10:00:03.000000001Z", "histo-worker1", "secret/data/histo/zk/super",
               error="1 error occurred:\n\t* permission denied\n\n")
ZK = [("2026-12-06T10:00:04.542+0000 WARN [nioEventLoopGroup-4-3] NettyServerCnxnFactory: Exception caught "
      "io.netty.handler.codec.DecoderException: javax.net.ssl.SSLHandshakeException: Empty client certificate chain"),
      ("2026-12-06T10:00:04.543+0000 DEBUG [nioEventLoopGroup-4-3] NettyServerCnxnFactory: Closing  "
      "/127.0.31.31:51439[0](queued=0,recved=0,sent=0) "),
      ("2026-12-06T10:00:05.542+0000 ERROR [SyncThread:0] Slf4jAuditLogger: session=0x10000c9f29c0001\t"
      "user=CN=worker1.histo.internal,histo-worker,127.0.31.31\tip=127.0.31.31\toperation=setData\t"
      "znode=/histo/jobs/j1\tresult=failure")]


def test_ordinary_traffic_opens_nothing_and_a_denial_opens_its_incident(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    log.write_text("\n".join(ORDINARY) + "\n")
    refusals, incidents = replay(read_files([log]), INV, load_rules())
    assert incidents == [] and refusals == 1  # the failed login names no host: a refusal, no incident
    log.write_text("\n".join(ORDINARY + [DENIED]) + "\n")
    refusals, incidents = replay(read_files([log]), INV, load_rules())
    assert [(i.rule, i.host, i.response) for i in incidents] == [("vault-policy-denied", "worker1", "quarantine")]
    assert abs(incidents[0].first_seen - 1796551203.0) < 0.001  # the entry's own time, not the replay's


def test_zookeeper_entries_are_joined_and_timed_like_the_shipper_does(tmp_path: Path) -> None:
    zk = tmp_path / "zookeeper.log"
    zk.write_text("\n".join(ZK) + "\n")
    entries = list(read_files([zk]))
    assert len(entries) == 2 and "Closing" in entries[0][0]["msg"]  # the address line joins its exception
    refusals, incidents = replay(entries, INV, load_rules())
    assert refusals == 2
    # the refused handshake is an alert, the write bound to worker1's certificate escalates it
    assert [(i.rule, i.host, i.response, i.escalated_from) for i in incidents] == [
        ("zookeeper-acl-denied", "worker1", "quarantine", "zookeeper-auth-refused")]


def test_the_command_prints_json_and_refuses_a_missing_file_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "inv.json").write_text(json.dumps({"hosts": HOSTS}))
    (tmp_path / "audit.log").write_text(DENIED + "\n")
    cmd = [sys.executable, "-m", "histo.cli", "secops", "replay", "--inventory", str(tmp_path / "inv.json")]
    out = subprocess.run([*cmd, str(tmp_path / "audit.log")], capture_output=True, text=True, check=True)
    got = json.loads(out.stdout)
    assert (got["refusals"], got["incidents"], got["opened"][0]["host"]) == (1, 1, "worker1")
    bad = subprocess.run([*cmd, str(tmp_path / "nope.log")], capture_output=True, text=True)
    assert bad.returncode != 0 and bad.stderr.strip().splitlines() == [(f"histo: secops replay: {tmp_path}/nope.log: "
                                                                        "no such file")]



def test_a_refused_wrapping_token_in_the_audit_log_is_replayed(tmp_path: Path) -> None:
    """OpenBao audits a refused wrapping token as a request entry with the error and no response (the
    real entry: test_secops_sources.py BAO_USED_LOOKUP): a refusal, an alert for the presenting host."""
    log = tmp_path / "audit.log"
    refused = json.loads(audit("2026-12-06T10:00:04Z", None, "sys/wrapping/lookup", kind="request",
                               error="wrapping token is not valid or does not exist"))
    refused["request"]["data"] = {"token": "hmac-sha256:2376bfde"}
    log.write_text("\n".join([*ORDINARY, audit("2026-12-06T10:00:03Z", None, "sys/wrapping/unwrap"),
                              json.dumps(refused)]) + "\n")
    refusals, incidents = replay(read_files([log]), INV, load_rules())
    assert refusals == 2  # the failed login (ORDINARY) and the refused wrapping token
    assert [(i.rule, i.host, i.response) for i in incidents] == [("vault-wrapping-token-refused", "worker1", "alert")]


def _zk_failure(user: str, operation: str, znode: str | None, ip: str | None = None) -> str:
    """A failed write as ZooKeeper audits it; from the address the user field names (a session's own)."""
    where = f"znode={znode}\t" if znode else ""
    ip = ip or user.rsplit(",", 1)[-1]
    return (f"2026-12-06T20:02:43.087+0000 ERROR [SyncThread:0] Slf4jAuditLogger: session=0x10003e3c1420002\t"
            f"user={user}\tip={ip}\toperation={operation}\t{where}result=failure ")


def test_failed_writes_the_shipper_keeps_on_zookeepers_host_are_no_refusals(tmp_path: Path) -> None:
    """What `make soak` found: replayed raw, ZooKeeper's audit failures of ordinary traffic (a master's
    create of a node that exists at start, its multi that lost a race, a worker's member node created
    again after a reconnect) opened zookeeper-acl-denied incidents with a quarantine response. The
    machines' shipper never sends them (filter-zookeeper_refusals.j2: who wrote decides); the replay now
    drops them the same way, and still counts a write its writer had no right to try."""
    master = "CN=master1.histo.internal,histo-master,127.0.31.21"
    worker = "histo-worker,CN=worker1.histo.internal,127.0.31.31"
    ordinary = [_zk_failure(master, "create", "/histo"), _zk_failure(master, "multiOperation", None),
                _zk_failure(worker, "create", "/histo/workers/worker1/member")] * 3
    refused = [_zk_failure(worker, "create", "/histo/workers/worker2/member"),  # another worker's slot
               _zk_failure(worker, "multiOperation", None),
               _zk_failure(master, "reconfig", "/zookeeper/config"),
               _zk_failure("CN=master1.histo.internal,127.0.31.21", "create", "/histo")]  # no master digest user
    log = tmp_path / "zookeeper.log"
    log.write_text("\n".join(ordinary) + "\n")
    assert replay(read_files([log]), INV, load_rules()) == (0, [])
    log.write_text("\n".join(ordinary + refused) + "\n")
    refusals, incidents = replay(read_files([log]), INV, load_rules())
    assert refusals == len(refused)
    assert {(i.rule, i.host) for i in incidents} == {("zookeeper-acl-denied", "worker1"),
                                                     ("zookeeper-acl-denied", "master1")}


def test_a_path_that_spells_another_user_frames_no_one() -> None:
    """Found by review: a refused create whose path holds "#011user=CN=worker2..." (rsyslog's escaped
    tab, spelled out) was attributed to worker2 by certificate (the last `user=` won) and opened a
    quarantine incident on it. The first occurrence of each field is ZooKeeper's own."""
    from histo.secops.sources import classify
    line = _zk_failure("histo-worker,CN=worker1.histo.internal,127.0.31.31", "create",
                       "/histo/jobs/x#011user=CN=master1.histo.internal,histo-master,127.0.31.21")
    found = classify({"msg": line, "host": "zk1", "tag": "zookeeper", "from": "127.0.31.11"}, INV)
    # two certificate names in the line: one is the writer's own text, so it binds nobody (an alert on the
    # address the line's head names, worker1's here), and master1 is never named
    assert found is not None and (found["host"], found["certificate"], found["by"]) == ("worker1", None, "address")
    assert found["znode"] == "/histo/jobs/x"
    assert not ordinary_zk_failure(line, INV)  # nor does it pass for a master's ordinary failure
    # a path that spells a head naming no other certificate: worker1's own, still bound to it
    own = _zk_failure("histo-worker,CN=worker1.histo.internal,127.0.31.31", "create",
                      "/histo/workers/worker1/x#011ip=127.0.31.21#011operation=create")
    found = classify({"msg": own, "host": "zk1", "tag": "zookeeper", "from": "127.0.31.11"}, INV)
    assert found is not None and (found["certificate"], found["by"]) == ("worker1", "certificate"), found
    assert not ordinary_zk_failure(own, INV)  # not read strictly: never ordinary, even in its own slot


def test_a_digest_name_that_spells_a_certificate_passes_for_no_one() -> None:
    """Found by review (SECURITY.md's open item, now closed): ZooKeeper's audit line names a session's
    ids without their scheme, and a digest name is the client's own text. worker1 (its certificate, from
    its address) adds digest identities named like master1's certificate and the masters' digest user:
    its refused writes were a master's ordinary failures (never shipped) and attributed to master1. Now a
    certificate's name makes a write ordinary only as the one certificate of the session and from its
    host's address; a second CN= id binds nobody. A user field with text no id of ours has ('#', a
    space, '/') is not read strictly: shipped, by address. The legitimate lines stay ordinary."""
    from histo.secops.sources import classify
    w1, m1 = "127.0.31.31", "127.0.31.21"

    def found(line: str) -> dict[str, Any]:
        got = classify({"msg": line, "host": "zk1", "tag": "zookeeper", "from": "127.0.31.11"}, INV)
        assert got is not None and got["kind"] == "zk_acl_denied", line
        return got

    spoofed = f"CN=worker1.histo.internal,CN=master1.histo.internal,histo-master,{w1}"
    for line in (_zk_failure(spoofed, "create", "/histo"), _zk_failure(spoofed, "multiOperation", None),
                 _zk_failure(f"CN=master1.histo.internal,histo-worker,CN=worker1.histo.internal,{w1}", "create",
                             "/histo/jobs/j1"),
                 # the same, written from master1's address (borrowed on the segment)
                 _zk_failure(spoofed, "setData", "/histo/jobs/j1", ip=m1)):
        assert not ordinary_zk_failure(line, INV), line
        got = found(line)
        assert (got["certificate"], got["by"]) == (None, "address") and "several certificates" in got["why"], got
        assert got["host"] == ("master1" if f"ip={m1}" in line else "worker1")  # the address only: an alert
    # a user field that spells out a head of its own: not read strictly, never ordinary, never bound
    odd = _zk_failure(f"CN=master1.histo.internal,histo-master,{m1}#011ip={m1}#011operation=create#011znode=/histo"
                      f"#011x,CN=worker1.histo.internal,{w1}", "create", "/histo", ip=w1)
    assert not ordinary_zk_failure(odd, INV)
    got = found(odd)
    assert (got["certificate"], got["by"]) == (None, "address") and "a head of its own" in got["why"], got
    # master1's certificate from another address is not a master's ordinary failure (still attributed to
    # the certificate: a key only master1 holds)
    elsewhere = _zk_failure(f"CN=master1.histo.internal,histo-master,{w1}", "create", "/histo")
    assert not ordinary_zk_failure(elsewhere, INV)
    assert (found(elsewhere)["certificate"], found(elsewhere)["by"]) == ("master1", "certificate")
    # the legitimate lines: ordinary, and a worker's real refusal still names it by its certificate
    assert ordinary_zk_failure(_zk_failure(f"CN=master1.histo.internal,histo-master,{m1}", "create", "/histo"), INV)
    assert ordinary_zk_failure(_zk_failure(f"histo-worker,CN=worker1.histo.internal,{w1}", "create",
                                           "/histo/workers/worker1/member"), INV)
    real = found(_zk_failure(f"histo-worker,CN=worker1.histo.internal,{w1}", "setData", "/histo/jobs/j1"))
    assert (real["host"], real["certificate"], real["by"]) == ("worker1", "worker1", "certificate")
