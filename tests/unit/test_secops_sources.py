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


# -- OpenBao 2.7.2's audit entries of the two refusals secops did not attribute before (captured from the real
# `bao` of the venv: tests/integration/test_vault_refusals.py makes them again, end to end) ------------------
BAO_INV = Inventory([{"name": "vault1", "role": "vault", "address": "127.0.51.10"},
                     {"name": "master1", "role": "master", "address": "127.0.51.21"},
                     {"name": "worker1", "role": "worker", "address": "127.0.51.31"},
                     {"name": "worker2", "role": "worker", "address": "127.0.51.32"}])
# A wrapping token refused: OpenBao audits only the request, with the error (no response entry): a token
# already unwrapped presented to unwrap (in the header) and to lookup (in the body), one that expired.
BAO_USED_UNWRAP = ('{"time":"2026-12-06T15:33:29.538539788Z","type":"request","auth":{"client_token":"hmac-sha256:'
                   '2376bfde657549659dd57b34a663acf12b4428941d798a3a2e9ea1473ed812ae","token_type":"default"},"request":'
                   '{"id":"76b9d5c0-8fb1-edea-34c8-2a088d821b68","operation":"update","mount_point":"sys/","client_token":'
                   '"hmac-sha256:2376bfde657549659dd57b34a663acf12b4428941d798a3a2e9ea1473ed812ae","namespace":{"id":'
                   '"root"},"path":"sys/wrapping/unwrap","remote_address":"127.0.51.31","remote_port":41253},"error":'
                   '"wrapping token is not valid or does not exist"}')
BAO_USED_LOOKUP = ('{"time":"2026-12-06T15:33:29.546584493Z","type":"request","auth":{"token_type":"default"},'
                   '"request":{"id":"86b87725-29d0-128d-d942-f8cd61d32867","operation":"update","mount_point":"sys/","namespace":'
                   '{"id":"root"},"path":"sys/wrapping/lookup","data":{"token":"hmac-sha256:2376bfde657549659dd57b34a66'
                   '3acf12b4428941d798a3a2e9ea1473ed812ae"},"remote_address":"127.0.51.31","remote_port":37709},"error":'
                   '"wrapping token is not valid or does not exist"}')
BAO_EXPIRED_LOOKUP = ('{"time":"2026-12-06T15:35:21.063337056Z","type":"request","auth":{"token_type":"default"},'
                      '"request":{"id":"2b8041e9-38b1-07b8-c0f5-a8b4a898f9a6","operation":"update","mount_point":"sys/",'
                      '"namespace":{"id":"root"},"path":"sys/wrapping/lookup","data":{"token":"hmac-sha256:ade822d84660'
                      'a6779550be1bf9c1174c26580c313083e97862a9a995f14c1ab6"},"remote_address":"127.0.51.31",'
                      '"remote_port":34777},"error":"wrapping token is not valid or does not exist"}')
# the legitimate lookup of a delivery (worker2, its own), request and response
_LOOKUP = ('"request":{"id":"a6c893c9-b69d-d010-a295-526f06b43d35","operation":"update","mount_point":"sys/",'
           '"mount_type":"system","mount_accessor":"system_c06eb7f4","mount_running_version":"v2.7.2+builtin.bao",'
           '"mount_class":"secret","namespace":{"id":"root"},"path":"sys/wrapping/lookup","data":{"token":'
           '"hmac-sha256:c21d5ae944976fc745fd0d0e72983a39c2465d25f4fa56566e224c5063b4c27d"},"remote_address":'
           '"127.0.51.32","remote_port":47153}')
BAO_LOOKUP_REQUEST = ('{"time":"2026-12-06T15:42:08.522489932Z","type":"request","auth":{"policy_results":'
                      f'{{"allowed":true}},"token_type":"default"}},{_LOOKUP}}}')
BAO_LOOKUP_RESPONSE = ('{"time":"2026-12-06T15:42:08.522643503Z","type":"response","auth":{"policy_results":'
                       f'{{"allowed":true}},"token_type":"default"}},{_LOOKUP},"response":{{"mount_point":"sys/",'
                       '"mount_type":"system","mount_accessor":"system_c06eb7f4","mount_running_plugin_version":'
                       '"v2.7.2+builtin.bao","mount_class":"secret","data":{"creation_path":"hmac-sha256:7a8431230c0e82fa'
                       '6c915dfe2f2a2abd0fe45d3fbda6eb0f91b5a6d41eeb62ae","creation_time":"2026-12-06T15:42:08.436934056Z",'
                       '"creation_ttl":120}}}')
# (the request and response parts are the copied login's in all four entries below; in the others' real
# entries only the request id, the HMACs and the port differ)
_LOGIN_REQ = ('"request":{"id":"06411154-2f04-c37f-f472-1349bb7b460a","operation":"update",'
              '"mount_point":"auth/approle/","mount_type":"approle","mount_accessor":"auth_approle_cc59d26c",'
              '"mount_running_version":"v2.7.2+builtin.bao","mount_class":"auth","namespace":{"id":"root"},'
              '"path":"auth/approle/login","data":{"role_id":"hmac-sha256:bf5f47debdb62ebc1c3e75d4cdc248cf3351e25'
              'b1bb0b2dc66c1d14b6a81d15e","secret_id":"hmac-sha256:798218fd90f1e6c8365edee79ec94b3aff35a9eca95ce193'
              'fe7515da7c2a410e"},"remote_address":"127.0.51.31","remote_port":43469}')
_LOGIN_RESP = ('"response":{"mount_point":"auth/approle/","mount_type":"approle","mount_accessor":'
               '"auth_approle_cc59d26c","mount_running_plugin_version":"v2.7.2+builtin.bao","mount_class":"auth",'
               '"data":{"error":')
# The audit device, approle mount tuned (audit_non_hmac_response_keys=["error"]): worker2's secret_id
# (CIDR-bound to 127.0.51.32) presented by worker1 — no top-level error —; an unknown secret_id (a top-level
# error too); an unknown role_id (no top-level error either).
BAO_COPIED = ('{"time":"2026-12-06T15:35:21.087123565Z","type":"response","auth":{"policy_results":'
              f'{{"allowed":true}},"token_type":"default"}},{_LOGIN_REQ},{_LOGIN_RESP}'
              '"source address \\"127.0.51.31\\" unauthorized through CIDR restrictions on the secret ID"}}}')
BAO_BAD_SECRET = ('{"time":"2026-12-06T15:35:21.090626805Z","type":"response","auth":{"token_type":"default"},'
                  f'{_LOGIN_REQ},{_LOGIN_RESP}"invalid role or secret ID"}}}},"error":"invalid credentials"}}')
BAO_BAD_ROLE = ('{"time":"2026-12-06T15:35:21.093713724Z","type":"response","auth":{"policy_results":'
                f'{{"allowed":true}},"token_type":"default"}},{_LOGIN_REQ},{_LOGIN_RESP}'
                '"invalid role or secret ID"}}}')
# ... and the mount as it was before vault-setup tuned it: the reason HMAC'd, nothing at the top
BAO_COPIED_HMAC = ('{"time":"2026-12-06T15:33:29.583170994Z","type":"response","auth":{"policy_results":'
                   f'{{"allowed":true}},"token_type":"default"}},{_LOGIN_REQ},{_LOGIN_RESP}'
                   '"hmac-sha256:5e1b48d70e65bf125a53c30e20bd25da43530bf124a3a5d356a87b6068304366"}}}')
# the legitimate login (worker2 from its own address) as the audit device writes it, some mount fields left out
BAO_LOGGED_IN = ('{"time":"2026-12-06T15:33:29.594494863Z","type":"response","auth":{"client_token":'
                 '"hmac-sha256:4d4baa33654d47bcc8e120087c8af756ed0f64054a3ee2d95f690aa03c9a92c2","accessor":"hmac-sha256:9ae16ace0462702e3da'
                 '11dd661b44fd689c8e48d53f60edae6486fd05373d281","display_name":"approle","policies":["default",'
                 '"histo-worker2"],"token_policies":["default","histo-worker2"],"metadata":{"role_name":"histo-worker2"},'
                 '"entity_id":"85e033a9-2850-b104-546c-f89b39bf1615","entity_created":true,"token_type":"service",'
                 '"token_ttl":3600},"request":{"id":"245cc961-31e9-db79-9722-c17e3d4fbe4b","operation":"update",'
                 '"mount_point":"auth/approle/","mount_type":"approle","path":"auth/approle/login","data":{"role_id":'
                 '"hmac-sha256:3cd1a8fb257e43a2f87524eeb8a6554ed812bcf0936a8cab08816d25bb4df570","secret_id":'
                 '"hmac-sha256:d41e55049b48e1f96195b9736aa841099afc8c168a6c980c34c82f146e8658f0"},"remote_address":'
                 '"127.0.51.32","remote_port":33165},"response":{"auth":{"client_token":"hmac-sha256:4d4baa33654d47bcc8e'
                 '120087c8af756ed0f64054a3ee2d95f690aa03c9a92c2","metadata":{"role_name":"histo-worker2"},'
                 '"token_type":"service","token_ttl":3600},"mount_point":"auth/approle/","mount_type":"approle"}}')


def _from_vault1(msg: str, tag: str) -> dict[str, Any]:
    return {"msg": msg, "host": "vault1", "tag": tag, "from": "127.0.51.10"}


def test_a_refused_wrapping_token_is_named_by_the_clients_address() -> None:
    for line, path in ((BAO_USED_UNWRAP, "sys/wrapping/unwrap"), (BAO_USED_LOOKUP, "sys/wrapping/lookup"),
                       (BAO_EXPIRED_LOOKUP, "sys/wrapping/lookup")):
        got = classify(_from_vault1(line, "vault-audit"), BAO_INV, "secops1")
        assert got is not None, line
        assert (got["layer"], got["kind"], got["host"], got["spiffe"], got["address"], got["by"]) == (
            "vault", "vault_wrapping_refused", "worker1", W1, "127.0.51.31", "address")
        assert (got["path"], got["operation"]) == (path, "update")
        assert "used already, expired or never issued" in got["why"] and "hmac-sha256" not in json.dumps(got)
    # the legitimate lookup (request and response) is none
    for line in (BAO_LOOKUP_REQUEST, BAO_LOOKUP_RESPONSE):
        assert classify(_from_vault1(line, "vault-audit"), BAO_INV, "secops1") is None, line
    # an address the inventory does not know is `outside`
    got = classify(_from_vault1(BAO_USED_UNWRAP.replace("127.0.51.31", "203.0.113.9"), "vault-audit"), BAO_INV)
    assert got and (got["host"], got["address"]) == ("outside", "203.0.113.9")
    # a request entry with an error on any other path is left to its response entry (no double count)
    other = json.loads(BAO_USED_UNWRAP)
    other["request"]["path"] = "secret/data/histo/zk/super"
    assert classify(_from_vault1(json.dumps(other), "vault-audit"), BAO_INV, "secops1") is None


def test_a_refused_wrapping_token_from_a_machine_that_is_no_vault_node_is_forged() -> None:
    got = classify({"msg": BAO_USED_UNWRAP, "host": "vault1", "tag": "vault-audit", "from": "127.0.51.32"}, BAO_INV)
    assert got and (got["kind"], got["host"]) == ("forged_source", "worker2")


def test_a_refused_approle_login_is_named_by_its_source_address_with_its_reason() -> None:
    got = classify(_from_vault1(BAO_COPIED, "vault-audit"), BAO_INV, "secops1")
    assert got is not None  # no top-level error: the reason is only in the response's data
    assert (got["layer"], got["kind"], got["host"], got["address"], got["by"], got["path"], got["operation"]) == (
        "vault", "vault_denied", "worker1", "127.0.51.31", "address", "auth/approle/login", "update")
    assert got["why"] == "source address 127.0.51.31 unauthorized by the CIDR restrictions on the secret ID"
    for line in (BAO_BAD_SECRET, BAO_BAD_ROLE):
        got = classify(_from_vault1(line, "vault-audit"), BAO_INV, "secops1")
        assert got and (got["host"], got["why"]) == ("worker1", "invalid role or secret ID"), line
    # before vault-setup tuned the mount: refused all the same, the reason hidden
    got = classify(_from_vault1(BAO_COPIED_HMAC, "vault-audit"), BAO_INV, "secops1")
    assert got and got["host"] == "worker1" and "HMAC" in got["why"] and "hmac-sha256" not in got["why"]
    # the legitimate login is no refusal
    assert classify(_from_vault1(BAO_LOGGED_IN, "vault-audit"), BAO_INV, "secops1") is None
    # no role_id or secret_id (not even their HMACs) in the attribution
    for line in (BAO_COPIED, BAO_BAD_SECRET, BAO_BAD_ROLE, BAO_COPIED_HMAC):
        assert "hmac-sha256" not in json.dumps(classify(_from_vault1(line, "vault-audit"), BAO_INV, "secops1"))


def test_a_login_refusals_unknown_reason_is_never_copied() -> None:
    """OpenBao's approle can quote a presented secret_id in its reason (`invalid secret_id "<id>"`, a
    use-limited secret_id gone during the login; histo's have no use limit): a reason not in the known
    shapes is replaced, whatever it quotes."""
    secret = "0e9ac8a1-6a8c-4c2b-b0a5-6c3bd1c0a0ff"
    entry = json.loads(BAO_BAD_ROLE)
    entry["response"]["data"]["error"] = f'invalid secret_id "{secret}"'
    got = classify(_from_vault1(json.dumps(entry), "vault-audit"), BAO_INV, "secops1")
    assert got and got["host"] == "worker1" and secret not in json.dumps(got) and "not shown" in got["why"]
