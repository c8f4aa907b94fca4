"""Each layer's refusal attributed to its inventory host and SPIFFE id (sample lines in each layer's
own format; the Vault one is checked against a real OpenBao in test_secops_record.py; ZooKeeper's are
real lines of the real server, as tests/integration/test_logship.py received them)."""
from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from kazoo.security import make_digest_acl_credential

from histo.secops.collector import Collector, event_of
from histo.secops.sources import Inventory, classify

from .test_secops_chain import LocalSigner

INV_HOSTS = [{"name": "worker1", "role": "worker", "address": "192.168.56.31"},
             {"name": "worker2", "role": "worker", "address": "192.168.56.32"},
             {"name": "zk1", "role": "zookeeper", "address": "192.168.56.11"}]
INV = Inventory(INV_HOSTS, {"internal": 8443, "zk_client": 2281})
W1 = "spiffe://histo.internal/worker/worker1"


def test_nftables_drop_names_source_target_port_and_why() -> None:
    msg = ("[12.3] histo-drop: IN=eth1 OUT= MAC=aa SRC=192.168.56.31 DST=192.168.56.32 LEN=60 TOS=0x00 "
           "PROTO=TCP SPT=40000 DPT=8443 WINDOW=64240 SYN")
    got = classify({"msg": msg, "host": "worker2", "tag": "kernel:"}, INV)
    assert got and got["layer"] == "firewall" and got["host"] == "worker1" and got["spiffe"] == W1
    assert got["target"] == "worker2" and got["port"] == 8443
    assert got["why"] == "the segmentation matrix allows no worker -> worker:internal"
    out = classify({"msg": msg.replace("192.168.56.31", "203.0.113.9"), "host": "worker2"}, INV)
    assert out and out["host"] == "outside" and out["spiffe"] is None and out["address"] == "203.0.113.9"
    # a booting machine's DHCP request, broadcast on the management network, is no one's refusal
    dhcp = ("[9.1] histo-drop: IN=eth0 OUT= MAC=ff SRC=0.0.0.0 DST=255.255.255.255 LEN=328 TOS=0x00 PROTO=UDP "
            "SPT=68 DPT=67 LEN=308")
    assert classify({"msg": dhcp, "host": "worker2", "tag": "kernel:"}, INV) is None


def test_sshd_failures_and_ordinary_lines() -> None:
    for msg, user in (("Failed password for root from 192.168.56.31 port 50000 ssh2", "root"),
                      ("Failed password for invalid user bob from 192.168.56.31 port 5 ssh2", "bob"),
                      ("Invalid user admin from 192.168.56.31 port 6", "admin")):
        got = classify({"msg": msg, "host": "zk1", "tag": "sshd[42]:"}, INV)
        assert got and (got["layer"], got["host"], got["target"], got["user"]) == ("ssh", "worker1", "zk1", user)
    assert classify({"msg": "Accepted publickey for vagrant from 192.168.56.1", "host": "zk1", "tag": "sshd"},
                    INV) is None
    assert classify({"msg": "CRON[1]: session opened", "host": "zk1", "tag": "CRON"}, INV) is None


def test_vault_audit_line() -> None:
    vault = {"type": "response", "error": "1 error occurred:\n\t* permission denied\n\n",
             "auth": {"display_name": "approle", "metadata": {"role_name": "histo-worker1"}},
             "request": {"path": "secret/data/histo/zk/super", "operation": "read", "remote_address": "10.9.9.9"}}
    got = classify({"msg": json.dumps(vault), "host": "vault1", "tag": "vault-audit"}, INV)
    assert got and (got["layer"], got["host"], got["spiffe"], got["path"]) == (
        "vault", "worker1", W1, "secret/data/histo/zk/super")  # the AppRole wins over the address
    assert classify({**vault, "error": ""}, INV) is None


# ZooKeeper 3.8.0's own lines (Debian's 3.8.0-11+deb12u2, the server local mode runs, its refusals file
# as histo.zk.config writes it), as the collector received them through the role's shipper and filter in
# tests/integration/test_logship.py: rsyslog escaped the audit line's tabs as #011, and the shipper's
# input joined a refused handshake's "Closing <address>" line to the exception line with a literal \n.
ZK_INV = Inventory([{"name": "zk1", "role": "zookeeper", "address": "127.0.10.11"},
                    {"name": "master1", "role": "master", "address": "127.0.10.21"},
                    {"name": "worker1", "role": "worker", "address": "127.0.10.31"},
                    {"name": "worker2", "role": "worker", "address": "127.0.10.32"}])
ZK_NO_CERT = (r" 2026-12-06T05:35:41.133+0000 WARN [nioEventLoopGroup-4-3] NettyServerCnxnFactory: Exception caught "
              r"io.netty.handler.codec.DecoderException: javax.net.ssl.SSLHandshakeException: Empty client "
              r"certificate chain\n\n2026-12-06T05:35:41.137+0000 DEBUG [nioEventLoopGroup-4-3] "
              r"NettyServerCnxnFactory: Closing  /127.0.10.32:51439[0](queued=0,recved=0,sent=0) ")
ZK_OTHER_CA = (r" 2026-12-06T05:35:41.228+0000 WARN [nioEventLoopGroup-4-4] NettyServerCnxnFactory: Exception caught "
               r"io.netty.handler.codec.DecoderException: javax.net.ssl.SSLHandshakeException: PKIX path building "
               r"failed: sun.security.provider.certpath.SunCertPathBuilderException: unable to find valid "
               r"certification path to requested target\n\n2026-12-06T05:35:41.231+0000 DEBUG [nioEventLoopGroup-4-4] "
               r"NettyServerCnxnFactory: Closing  /127.0.10.50:48329[0](queued=0,recved=0,sent=0) ")
# an expired certificate of the server's own CA (the experiment of this change, on 127.0.80.x; rsyslog
# imfile output, before RELP)
ZK_EXPIRED = (r"2026-12-06T05:31:21.810+0000 WARN [nioEventLoopGroup-4-1] NettyServerCnxnFactory: Exception caught "
              r"io.netty.handler.codec.DecoderException: javax.net.ssl.SSLHandshakeException: PKIX path validation "
              r"failed: java.security.cert.CertPathValidatorException: validity check failed\n\n"
              r"2026-12-06T05:31:21.812+0000 DEBUG [nioEventLoopGroup-4-1] NettyServerCnxnFactory: Closing  "
              r"/127.0.10.31:52251[0](queued=0,recved=0,sent=0) ")
ZK_DENIED = (" 2026-12-06T05:35:41.542+0000 ERROR [SyncThread:0] Slf4jAuditLogger: session=0x10000c9f29c0001"
             "#011user=CN=worker1.histo.internal,histo-worker,127.0.10.31#011ip=127.0.10.31#011operation=setData"
             "#011znode=/histo/jobs/j1#011result=failure ")
ZK_NO_SCHEME = ("2026-12-06T05:31:25.242+0000 WARN [nioEventLoopGroup-4-4] ZooKeeperServer: No authentication "
                "provider for scheme: foo has x509 ip digest  ")
ZK1 = "127.0.10.11"


def _zk(msg: str, sent_from: str = ZK1) -> dict[str, Any] | None:
    return classify({"msg": msg, "host": "vm", "tag": "zookeeper", "from": sent_from}, ZK_INV, "secops1")


def test_zookeeper_tls_refusals_name_the_client_from_the_joined_closing_line() -> None:
    for msg, host, address, what in ((ZK_NO_CERT, "worker2", "127.0.10.32", "no client certificate"),
                                     (ZK_OTHER_CA, "outside", "127.0.10.50", "another CA"),
                                     (ZK_EXPIRED, "worker1", "127.0.10.31", "validity")):
        got = _zk(msg)
        assert got and (got["layer"], got["kind"], got["host"], got["address"], got["target"]) == (
            "zookeeper", "zk_tls_refused", host, address, "zk1"), got
        assert what in got["why"]
    assert _zk(ZK_NO_CERT)["spiffe"] == "spiffe://histo.internal/worker/worker2"  # type: ignore[index]
    # a "Closing" line of another thread (another connection) joined by chance: no address rather than a wrong one
    crossed = ZK_NO_CERT.replace("DEBUG [nioEventLoopGroup-4-3]", "DEBUG [nioEventLoopGroup-4-1]")
    got = _zk(crossed)
    assert got and (got["kind"], got["host"], got["address"]) == ("zk_tls_refused", "unknown", None)


def test_zookeeper_acl_refusal_names_host_znode_operation_and_certificate() -> None:
    got = _zk(ZK_DENIED)
    assert got and (got["kind"], got["host"], got["spiffe"], got["operation"], got["znode"]) == (
        "zk_acl_denied", "worker1", W1, "setData", "/histo/jobs/j1")
    assert (got["certificate"], got["claimed"], got["severity"]) == ("worker1", ["histo-worker"], "critical")
    # the same line as ZooKeeper writes it (tabs), e.g. from the collector's own file
    raw = ZK_DENIED.replace("#011", "\t").strip()
    assert {**(_zk(raw, "127.0.0.1") or {}), "target": "zk1"} == got
    # a wrong digest password: the name the client claimed is what ZooKeeper shows
    wrong = ZK_DENIED.replace("histo-worker", "histo-master")
    assert _zk(wrong)["claimed"] == ["histo-master"]  # type: ignore[index]


def test_zookeeper_auth_refusal_and_redacted_acl() -> None:
    got = _zk(ZK_NO_SCHEME)
    assert got and (got["kind"], got["host"], got["address"]) == ("zk_auth_failed", "unknown", None)
    assert "scheme: foo" in got["why"]
    # a refused setAcl: ZooKeeper's line carries the requested ACL's digest id (SHA-1 of name:password);
    # the shipper sends acl=[redacted], and the record's own redaction catches it if it ever arrives
    digest = make_digest_acl_credential("a", "b")
    line = ZK_DENIED.replace("operation=setData#011znode=/histo/jobs/j1",
                             f"operation=setAcl#011znode=/histo/jobs#011acl=digest:{digest}:cdrwa")
    stored = event_of(json.dumps({"msg": line, "tag": "zookeeper"}))
    assert digest.split(":")[1] not in json.dumps(stored) and "digest:a:[redacted]" in stored["msg"]
    found = _zk(line)
    assert found and (found["operation"], found["znode"]) == ("setAcl", "/histo/jobs")


def test_a_zookeeper_line_from_another_machine_is_forged() -> None:
    got = _zk(ZK_DENIED, sent_from="127.0.10.32")
    assert got and (got["kind"], got["host"], got["severity"]) == ("forged_source", "worker2", "critical")
    assert _zk(ZK_DENIED, sent_from="127.0.0.1")["kind"] == "zk_acl_denied"  # type: ignore[index]
    # ZooKeeper's ordinary lines are no refusal (the shipper does not send them; if one came, nothing)
    assert _zk("2026-12-06T05:35:37.669+0000 WARN [main] QuorumPeerMain: Either no config or no quorum defined "
               "in config, running in standalone mode ") is None


def test_collector_stores_the_attribution_with_the_event(tmp_path: Path) -> None:
    c = Collector(tmp_path / "l.log", LocalSigner(), None, interval=3600, inventory=INV)
    c.run(io.StringIO(json.dumps({"msg": "Invalid user x from 192.168.56.32 port 1", "host": "zk1",
                                  "tag": "sshd"}) + "\n" + json.dumps({"msg": "hello", "host": "zk1"}) + "\n"))
    first, second = (json.loads(x)["event"] for x in (tmp_path / "l.log").read_text().splitlines())
    assert first["secops"]["host"] == "worker2" and "secops" not in second


def test_the_sending_address_not_the_declared_name_says_where_it_happened() -> None:
    """With the collector's `from` (rsyslog's fromhost-ip): a worker that ships a Vault audit entry in
    Vault's name, or claims another hostname, is itself the finding; a Vault node's entry, the
    collector's own files and a cut piece of a long entry are attributed as they should be."""
    inv = Inventory([*(dict(h) for h in ({"name": "worker1", "role": "worker", "address": "192.168.56.31"},
                                          {"name": "master1", "role": "master", "address": "192.168.56.21"},
                                          {"name": "vault1", "role": "vault", "address": "192.168.56.10"},
                                          {"name": "secops1", "role": "secops", "address": "192.168.56.40"}))])
    denied = json.dumps({"type": "response", "error": "permission denied",
                         "auth": {"metadata": {"role_name": "histo-master1"}},
                         "request": {"path": "transit/sign/histo-tokens", "operation": "update"}},
                        separators=(",", ":"))
    forged = classify({"msg": denied, "host": "vault1", "tag": "vault-audit", "from": "192.168.56.31"}, inv, "secops1")
    assert forged and (forged["kind"], forged["host"], forged["severity"]) == ("forged_source", "worker1", "critical")
    real = classify({"msg": denied, "host": "vault1", "tag": "vault-audit", "from": "192.168.56.10"}, inv, "secops1")
    assert real and (real["kind"], real["host"]) == ("vault_denied", "master1")
    wrong_tag = classify({"msg": denied, "host": "vault1", "tag": "sshd", "from": "192.168.56.10"}, inv, "secops1")
    assert wrong_tag and wrong_tag["kind"] == "forged_source"
    own = classify({"msg": denied, "host": "x", "tag": "vault-audit", "from": "127.0.0.1"}, inv, "secops1")
    assert own and own["kind"] == "vault_denied"  # the collector's own files (a Vault node that collects too)
    # an sshd refusal on worker1's auth.log, shipped by worker1 but naming master1 as the machine: worker1
    ssh = classify({"msg": "Invalid user x from 192.168.56.40 port 1", "host": "master1", "tag": "sshd",
                    "from": "192.168.56.31"}, inv, "secops1")
    assert ssh and (ssh["host"], ssh["target"]) == ("secops1", "worker1")
    piece = classify({"msg": '"error":"permission denied"}', "host": "vault1", "tag": "vault-audit",
                      "from": "192.168.56.10"}, inv, "secops1")
    assert piece and (piece["kind"], piece["host"]) == ("vault_audit_unparsed", "vault1")


def test_a_services_own_refusal_is_attributed_to_the_party_it_refused(tmp_path: Path) -> None:
    """A worker's mTLS refusal as its EventFile writes it: it happened on worker2 (the sender), the
    identity refused is the peer it names (worker1); info and relayed events never reach the file."""
    from histo.edge.events import EventBus, EventFile
    inv = Inventory([*INV_HOSTS, {"name": "master1", "role": "master", "address": "192.168.56.21"}])
    ef = EventFile(tmp_path / "log" / "secops-events.jsonl")
    bus = EventBus(sink=ef.write)
    bus.publish("mtls_rejected", severity="warning", reason="not a master", peer="192.168.56.31:40100")
    bus.publish("cert_rotated", serial="1a")  # info: stays on the dashboard
    bus.publish("mtls_rejected", severity="warning", reason="x", relayed_from="worker2")  # the worker ships its own
    bus.publish("auth_failure", where="203.0.113.7", reason="expired token token=abc.def.ghi")
    # the collector's own entries, pushed back to the dashboard (master/secopsfeed.py): never shipped again
    bus.publish("vault_denied", severity="warning", source="collector", record_seq=7, layer="vault")
    lines = (tmp_path / "log" / "secops-events.jsonl").read_text().splitlines()
    assert oct((tmp_path / "log" / "secops-events.jsonl").stat().st_mode & 0o777) == "0o640"
    assert [json.loads(line)["kind"] for line in lines] == ["mtls_rejected", "auth_failure"]
    assert "abc.def.ghi" not in lines[1]  # the bus's redaction holds in the file too
    got = classify({"msg": lines[0], "host": "worker2", "tag": "histo-events", "from": "192.168.56.32"}, inv)
    assert got and (got["layer"], got["kind"], got["host"], got["spiffe"], got["target"]) == \
        ("service", "mtls_rejected", "worker1", W1, "worker2")
    edge = classify({"msg": lines[1], "host": "master1", "tag": "histo-events", "from": "192.168.56.21"}, inv)
    assert edge and (edge["host"], edge["address"], edge["target"]) == ("outside", "203.0.113.7", "master1")
    # the same line sent by a ZooKeeper server: no histo service runs there, so the sender is the finding
    forged = classify({"msg": lines[0], "host": "zk1", "tag": "histo-events", "from": "192.168.56.11"}, inv)
    assert forged and forged["kind"] == "forged_source" and forged["host"] == "zk1"
    assert classify({"msg": "not json", "tag": "histo-events", "from": "192.168.56.32"}, inv) is None
    ef.close()


def test_the_event_file_is_bounded(tmp_path: Path) -> None:
    from histo.edge.events import EventBus, EventFile
    ef = EventFile(tmp_path / "e.jsonl", max_bytes=4096, backups=1)
    bus = EventBus(sink=ef.write)
    for i in range(500):
        bus.publish("auth_failure", where=f"203.0.113.{i % 250}", reason="r" * 50)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["e.jsonl", "e.jsonl.1"] and all((tmp_path / f).stat().st_size <= 4096 for f in files)
    ef.close()


def test_a_workers_security_events_reach_its_file_however_they_name_the_service(tmp_path: Path) -> None:
    """The runtime's Vault loop emits with service=... itself (runtime.py); the worker's own refusals
    without: both are written once, and neither raises (a raise there ended the Vault loop)."""
    from types import SimpleNamespace

    from histo.edge.events import EventBus, EventFile
    from histo.worker.service import Worker
    w = object.__new__(Worker)
    w.cfg = SimpleNamespace(name="worker1")  # type: ignore[assignment]  # only its name is read
    w.event_file, w._events, w.pending_events = EventFile(tmp_path / "e.jsonl"), EventBus(history=1), []
    w._security_event("vault_unavailable", severity="warning", service="worker1", reason="Vault unreachable")
    w._security_event("mtls_rejected", severity="warning", reason="not a master", peer="192.168.56.32")
    w._security_event("vault_recovered", severity="info", service="worker1")
    lines = [json.loads(line) for line in (tmp_path / "e.jsonl").read_text().splitlines()]
    assert [(e["kind"], e["service"]) for e in lines] == [("vault_unavailable", "worker1"),
                                                          ("mtls_rejected", "worker1")]
    assert [e["kind"] for e in w.pending_events] == ["vault_unavailable", "mtls_rejected", "vault_recovered"]
