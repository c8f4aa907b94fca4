"""Shipping with real rsyslog (the role's own templates): a shipper (worker1) sends RELP over TLS to
the collector (secops1), both with certificates OpenBao issued to them; each side checks the other's
name. What the shipper reads reaches the hash-chained record; a collector that is away is waited
for (the shipper queues); an impostor collector (a valid histo certificate, the wrong name) gets
nothing. A real ZooKeeper server's refusals, through the role's zookeeper_refusals filter, reach the
record attributed to the refused host, and its ordinary traffic does not. Loopback only (vaultfix.NET),
processes stopped by their pid."""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import jinja2
import pytest
import yaml  # type: ignore[import-untyped]
from kazoo.client import KazooClient
from kazoo.exceptions import BadVersionError, NoAuthError, NodeExistsError, NoNodeError
from kazoo.security import make_digest_acl_credential

from histo.edge.events import EventBus, EventFile
from histo.files import write_private
from histo.local.bao import BaoServer
from histo.local.zkserver import ZkServer
from histo.secops.chain import walk
from histo.tls.selfsigned import ensure_bootstrap_tls
from histo.zk.acl import default_acl, tree_acls, worker_slot_acl
from histo.zk.client import SourceBoundHandler
from histo.zk.config import LOG_ENTRY_START

from .test_secops_record import SECOPS, WORKER
from .vaultfix import NET, configure, default_hosts, free_port, provision, running_bao, service_vault

pytestmark = [pytest.mark.long,
              pytest.mark.skipif(shutil.which("rsyslogd") is None, reason="rsyslog is installed by bootstrap.sh")]
ROLE = Path(__file__).resolve().parents[2] / "roles" / "logship" / "templates"
HOSTS = [*default_hosts(), SECOPS]
WORKER2 = next(h for h in HOSTS if h["name"] == "worker2")


def _certs(bao: BaoServer, role_ids: dict[str, str], host: dict[str, str], d: Path) -> dict[str, str]:
    vault = service_vault(bao, host, provision(bao, role_ids, host, d / "creds"))
    vault.login()
    b = vault.issue_cert("1h")
    write_private(d / "cert.pem", b.cert_pem)
    write_private(d / "key.pem", b.key_pem)
    write_private(d / "ca.pem", b.chain_pem)
    return {"logship_cert": str(d / "cert.pem"), "logship_key": str(d / "key.pem"), "logship_ca": str(d / "ca.pem"),
            "logship_creds_dir": str(d / "creds")}


class Rsyslogd:
    def __init__(self, d: Path, template: str, **vars: object) -> None:
        self.dir = d
        (d / "work").mkdir(parents=True, exist_ok=True)
        env = jinja2.Environment(undefined=jinja2.StrictUndefined, loader=jinja2.FileSystemLoader(ROLE))
        text = env.get_template(template).render(logship_work_dir=str(d / "work"), **vars)
        self.conf = d / "rsyslog.conf"
        self.conf.write_text(text)
        check = subprocess.run(["rsyslogd", "-N1", "-f", str(self.conf)], capture_output=True, text=True)
        assert check.returncode == 0, check.stderr  # what the role's validate runs
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(["rsyslogd", "-n", "-f", str(self.conf), "-i", str(self.dir / "pid")],
                                     stdout=subprocess.DEVNULL, stderr=open(self.dir / "stderr", "ab"))

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=20)
        self.proc = None


def _all(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def _is_incident(entry: dict[str, Any]) -> bool:
    event = entry["event"]
    return isinstance(event, dict) and str(event.get("kind", "")).startswith("incident_")


def _entries(path: Path) -> list[dict[str, Any]]:
    """What was shipped (the collector's own incident entries apart: _incidents)."""
    return [e for e in _all(path) if not _is_incident(e)]


def _collector(bao: BaoServer, role_ids: dict[str, str], d: Path, record: Path, inventory: Path,
              shippers: list[str], common: dict[str, Any], host: dict[str, str] = SECOPS) -> Rsyslogd:
    """secops1's collector as the role configures it (collector.conf.j2: RELP in, `histo audit collect`
    writing `record`, attributing with `inventory`), accepting the named shippers' certificates."""
    return Rsyslogd(d, "collector.conf.j2", **common, **_certs(bao, role_ids, host, d.with_name(d.name + "-tls")),
                    logship_address=host["address"], logship_histo_bin=str(Path(sys.executable).with_name("histo")),
                    logship_record_path=str(record), logship_collector_host="secops1",
                    logship_vault_url=bao.url, logship_vault_ca=str(bao.ca_path),
                    logship_confirm_timeout_ms=10000, logship_inventory_path=str(inventory),
                    __logship_all_files=[], logship_permitted_shippers=shippers)


def _incidents(path: Path) -> list[dict[str, Any]]:
    return [e["event"] for e in _all(path) if _is_incident(e)]


def _wait_for(path: Path, n: int, timeout: float = 30.0) -> list[dict[str, object]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = _entries(path)
        if len(got) >= n:
            return got
        time.sleep(0.2)
    return _entries(path)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[BaoServer, dict[str, str], Path]]:
    root = tmp_path_factory.mktemp("logship-it")
    with running_bao(root / "vault") as bao:
        yield bao, configure(bao, HOSTS)["role_ids"], root


def test_relp_tls_ships_to_the_record_queues_and_refuses_an_impostor(
        env: tuple[BaoServer, dict[str, str], Path]) -> None:
    bao, role_ids, root = env
    port = free_port(SECOPS["address"])
    record = root / "secops.log"
    common = {"logship_port": port, "logship_queue_max_disk": "64m", "logship_collector_respond": "alert"}
    inventory = root / "inventory.json"  # what the role writes on the collector (attribution)
    inventory.write_text(json.dumps({"hosts": HOSTS, "ports": {"vault": 8200, "internal": 8443}}))
    collector = _collector(bao, role_ids, root / "collector", record, inventory,
                           [f"{h['name']}.histo.internal" for h in HOSTS if h["role"] != "secops"], common)
    source = root / "auth.log"
    source.write_text("")
    audit = root / "audit.log"  # a Vault node's audit file (errors_only: the refusals, not the traffic)
    audit.write_text("")
    events = root / "secops-events.jsonl"  # a service's own refusals (edge/events.py EventFile)
    event_file = EventFile(events)
    shipper = Rsyslogd(root / "shipper", "shipper.conf.j2", **common, **_certs(bao, role_ids, WORKER, root / "w"),
                       logship_collector_address=SECOPS["address"], logship_collector_name="secops1.histo.internal",
                       __logship_all_files=[{"path": str(source), "tag": "sshd"},
                                            {"path": str(audit), "tag": "vault-audit", "errors_only": True},
                                            {"path": str(events), "tag": "histo-events"}])
    try:
        collector.start()
        shipper.start()
        with source.open("a") as f:
            f.write(f"Failed password for root from {NET}.32 port 2222 ssh2\n")
        got = _wait_for(record, 1)
        # at least once: under load the collector's first `histo audit collect` may miss omprog's confirm
        # timeout while it starts (imports, Vault login), and rsyslog hands the message again — a
        # duplicate of that line is allowed, anything else is not
        assert got and all("Failed password for root" in str(e["event"]) for e in got), got
        time.sleep(1)
        first = len(_entries(record))

        # the collector away: the shipper queues, and delivers once it is back
        collector.stop()
        with source.open("a") as f:
            f.writelines(f"Invalid user probe{i} from {NET}.32\n" for i in range(5))
        time.sleep(2)
        assert len(_entries(record)) == first
        collector.start()
        got = _wait_for(record, first + 5, timeout=60)
        # RELP is at-least-once: a message the collector stored but had not acknowledged when it stopped
        # comes again (a duplicate entry, never a gap)
        assert {f"probe{i}" for i in range(5)} <= {str(e["event"]).split("Invalid user ")[-1].split(" ")[0]
                                                    for e in got}, got
        assert walk(record.read_text().splitlines(), {})[1] is None  # one unbroken chain across restarts

        # Vault's audit file: a request, a granted response and a denied one; only the denial leaves the
        # machine, and the collector names the host it came from (the inventory, by its AppRole)
        before = len(_entries(record))
        denied: dict[str, Any] = {"type": "response", "error": "1 error occurred:\n\t* permission denied\n\n",
                  "auth": {"metadata": {"role_name": "histo-worker1"}},
                  "request": {"path": "secret/data/histo/zk/super", "operation": "read",
                              "remote_address": WORKER["address"]}}
        with audit.open("a") as f:  # compact JSON, one entry a line, as Vault writes it
            for entry in ({"type": "request", "request": {"path": "pki_int/crl"}},
                          {"type": "response", "request": {"path": "pki_int/crl"}, "response": {}}, denied):
                f.write(json.dumps(entry, separators=(",", ":")) + "\n")
        got = _wait_for(record, before + 1)
        time.sleep(2)  # nothing else follows: the request and the granted response stayed on the machine
        vault_events = [e["event"] for e in _entries(record)[before:]
                        if isinstance(e["event"], dict) and "secops" in e["event"]]
        assert len(_entries(record)) == before + 1 and len(vault_events) == 1, got[before:]
        found = vault_events[0]["secops"]
        assert (found["layer"], found["host"], found["path"]) == ("vault", "worker1", "secret/data/histo/zk/super")
        assert found["spiffe"] == "spiffe://histo.internal/worker/worker1"
        # detected: the rule for a cluster machine's Vault denial opened an incident for worker1, and the
        # collector (--respond alert, the role's default) recorded what it would do without doing it
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any(i["kind"] == "incident_alerted" for i in _incidents(record)):
            time.sleep(0.2)
        opened = [i for i in _incidents(record) if i["kind"] == "incident_opened" and i["host"] == "worker1"]
        assert opened and opened[-1]["rule"] == "vault-policy-denied", _incidents(record)
        decided = [i for i in _incidents(record) if i["kind"] == "incident_alerted" and i["host"] == "worker1"]
        assert decided and "dry run" in json.dumps(decided[-1]["actions"]), _incidents(record)

        # a denial padded past rsyslog's message limit (8 KiB): cut in pieces, none a whole entry; the
        # pieces still leave the machine, and the collector records them as an unreadable audit entry
        before = len(_entries(record))
        with audit.open("a") as f:
            f.write(json.dumps({**denied, "request": {**denied["request"], "path": "secret/data/" + "p" * 12000}},
                               separators=(",", ":")) + "\n")
        _wait_for(record, before + 1)
        time.sleep(2)
        kinds = [e["event"]["secops"]["kind"] for e in _entries(record)[before:]
                 if isinstance(e["event"], dict) and "secops" in e["event"]]
        assert "vault_audit_unparsed" in kinds, kinds

        # the service's own refusal, as a worker's EventFile writes it: one JSON line shipped, the identity
        # refused the peer it names (worker2); an info event (a rotation) is never written, so never shipped
        before = len(_entries(record))
        bus = EventBus(sink=event_file.write)
        bus.publish("cert_rotated", serial="1a")
        bus.publish("mtls_rejected", severity="warning", reason="not a master", peer=f"{WORKER2['address']}:40100")
        _wait_for(record, before + 1)
        time.sleep(2)
        found = [e["event"]["secops"] for e in _entries(record)[before:]
                 if isinstance(e["event"], dict) and "secops" in e["event"]]
        assert [(f["layer"], f["kind"], f["host"], f["spiffe"]) for f in found] == \
            [("service", "mtls_rejected", "worker2", "spiffe://histo.internal/worker/worker2")], found
        assert len(_entries(record)) == before + 1
        collector.stop()

        # an impostor collector: a genuine histo certificate, but worker2's name — the shipper sends nothing
        impostor_record = root / "impostor.log"
        sink = root / "sink.sh"  # what the impostor would do with a message: keep it
        sink.write_text(f'#!/bin/sh\necho OK\nwhile read -r l; do echo "$l" >> {impostor_record}; echo OK; done\n')
        sink.chmod(0o700)
        impostor = Rsyslogd(root / "impostor", "collector.conf.j2", **common,
                            **_certs(bao, role_ids, WORKER2, root / "i"), logship_address=SECOPS["address"],
                            logship_histo_bin=str(sink), logship_record_path=str(impostor_record),
                            logship_collector_host="x", logship_vault_url="x", logship_vault_ca="x",
                            logship_confirm_timeout_ms=10000, logship_inventory_path=str(inventory),
                            __logship_all_files=[],
                            logship_permitted_shippers=["worker1.histo.internal"])
        impostor.start()
        with source.open("a") as f:
            f.write(f"Failed password for admin from {NET}.32\n")
        time.sleep(4)
        impostor.stop()
        assert not impostor_record.exists()
        # the real collector comes back and gets that message from the queue. Observed with rsyslog
        # 8.2302 / librelp 1.11: after the refused handshake the held message leaves with the next one
        # (docs/SECURITY.md), so one more line follows; both must arrive, nothing is lost
        collector.start()
        time.sleep(1)
        with source.open("a") as f:
            f.write(f"Failed password for later from {NET}.32\n")
        deadline = time.monotonic() + 60
        while not all(any(f"Failed password for {who}" in str(e["event"]) for e in _entries(record))
                      for who in ("admin", "later")):
            assert time.monotonic() < deadline, _entries(record)
            time.sleep(0.3)
    finally:
        for r in (shipper, collector):
            r.stop()
    assert os.stat(record).st_mode & 0o077 == 0


def _zk(address: str, port: int, source: str, tls: dict[str, str], *digests: tuple[str, str]) -> KazooClient:
    client = KazooClient(hosts=f"{address}:{port}", use_ssl=True, verify_certs=True, check_hostname=True,
                         ca=tls["logship_ca"], certfile=tls["logship_cert"], keyfile=tls["logship_key"],
                         auth_data=[("digest", f"{name}:{password}") for name, password in digests], timeout=4,
                         handler=SourceBoundHandler(source), connection_retry={"max_tries": 1, "delay": 0.2})
    client.start(timeout=10)
    return client


def _handshake(address: str, port: int, source: str, ca: str, cert: tuple[Path, Path] | None) -> str:
    """A raw TLS client from `source`: what the handshake ended with."""
    ctx = ssl.create_default_context(cafile=ca)
    if cert:
        ctx.load_cert_chain(str(cert[0]), str(cert[1]))
    try:
        with socket.create_connection((address, port), timeout=5, source_address=(source, 0)) as raw, \
                ctx.wrap_socket(raw, server_hostname=address) as s:
            s.sendall(b"ruok")
            return s.recv(4).decode() or "closed"
    except (ssl.SSLError, OSError) as e:
        return f"refused: {e}"


def test_zookeeper_refusals_ship_attributed_and_ordinary_traffic_stays(
        env: tuple[BaoServer, dict[str, str], Path]) -> None:
    """A real ZooKeeper 3.8.0 server (local mode's ZkServer: TLS only, x509 + digest, ACLs): a client
    without a certificate, one with a certificate of another CA and a worker writing where its ACL
    forbids are refused; ZooKeeper's refusals file, read by a real rsyslog shipper with the role's
    filter, brings exactly those to the collector, each attributed to its inventory host. The master's
    operations succeed, and its ordinary failed writes (NodeExists, NoNode, BadVersion) and the worker's
    writes in its own slot never leave the machine."""
    bao, role_ids, root = env
    zk_host = next(h for h in HOSTS if h["role"] == "zookeeper")
    master, worker2 = (next(h for h in HOSTS if h["name"] == n) for n in ("master1", "worker2"))
    outsider = f"{SECOPS['address'].rsplit('.', 1)[0]}.50"  # in no inventory
    base = root / "zk-refusals"
    zk_tls, m_tls, w_tls = (_certs(bao, role_ids, h, base / h["name"]) for h in (zk_host, master, WORKER))
    foreign_ca, foreign_cert, foreign_key = ensure_bootstrap_tls(base / "foreign", ["worker1.histo.internal"],
                                                                 [outsider])
    secret = {r: secrets.token_urlsafe(24) for r in ("super", "histo-master", "histo-worker")}
    ids = {"master": make_digest_acl_credential("histo-master", secret["histo-master"]),
           "worker": make_digest_acl_credential("histo-worker", secret["histo-worker"])}
    port = free_port(zk_host["address"])
    zk = ZkServer(base / "zk", zk_host["address"], port)
    ca_pem = Path(zk_tls["logship_ca"]).read_text()
    zk.write_config(Path(zk_tls["logship_cert"]).read_text() + "\n" + ca_pem, Path(zk_tls["logship_key"]).read_text(),
                    ca_pem, make_digest_acl_credential("super", secret["super"]))

    record = root / "zk-secops.log"
    relp = free_port(SECOPS["address"])
    common = {"logship_port": relp, "logship_queue_max_disk": "64m", "logship_collector_respond": "alert"}
    inventory = base / "inventory.json"
    inventory.write_text(json.dumps({"hosts": HOSTS, "ports": {"zk_client": port}}))
    collector = _collector(bao, role_ids, base / "collector", record, inventory, ["zk1.histo.internal"], common)
    # the role's own entry for ZooKeeper's file, at this server's path; the masters as the role computes them
    defaults = yaml.safe_load((ROLE.parent / "defaults" / "main.yml").read_text())
    role_entry = defaults["logship_group_files"]["zookeeper"][0]
    assert role_entry["startmsg"] == LOG_ENTRY_START
    shipper = Rsyslogd(base / "shipper", "shipper.conf.j2", **common, **zk_tls,
                       logship_collector_address=SECOPS["address"], logship_collector_name="secops1.histo.internal",
                       logship_source_address=zk_host["address"], logship_zk_masters=["master1"],
                       __logship_zk_clients={"master1": master["address"], "worker1": WORKER["address"]},
                       __logship_all_files=[{**role_entry, "path": str(zk.log_file)}])
    m = w = None
    try:
        zk.start()  # inside: a failure from here on still stops it (finally)
        collector.start()
        shipper.start()
        time.sleep(2)  # imfile has the file open before anything happens
        m = _zk(zk_host["address"], port, master["address"], m_tls, ("histo-master", secret["histo-master"]))
        m.create("/histo", b"", acl=tree_acls(ids)["/histo"])
        m.create("/histo/jobs", b"", acl=tree_acls(ids)["/histo/jobs"])
        m.create("/histo/workers", b"", acl=tree_acls(ids)["/histo/workers"])
        m.create("/histo/workers/worker1", b"", acl=worker_slot_acl(ids, "worker1", "histo.internal"))
        m.create("/histo/jobs/j1", b"{}", acl=default_acl(ids, "master"))
        m.set("/histo/jobs/j1", b'{"state": "done"}')
        # a master's ordinary failed writes: ZooKeeper audits them as failures too
        with pytest.raises(NodeExistsError):
            m.create("/histo/jobs/j1", b"")
        with pytest.raises(NoNodeError):
            m.delete("/histo/jobs/nope")
        with pytest.raises(BadVersionError):
            m.set("/histo/jobs/j1", b"", version=99)

        # the refusals: no certificate (worker2), another CA (an address in no inventory)
        no_cert = _handshake(zk_host["address"], port, worker2["address"], zk_tls["logship_ca"], None)
        assert no_cert.startswith("refused"), no_cert
        assert _handshake(zk_host["address"], port, outsider, zk_tls["logship_ca"],
                          (foreign_cert, foreign_key)).startswith("refused")
        # worker1, authenticated (its certificate, the workers' digest): its own slot is its to write,
        # a job is not
        w = _zk(zk_host["address"], port, WORKER["address"], w_tls, ("histo-worker", secret["histo-worker"]))
        w.create("/histo/workers/worker1/member", b"{}", ephemeral=True)
        with pytest.raises(NodeExistsError):  # ordinary, in its own slot: stays on the machine
            w.create("/histo/workers/worker1/member", b"{}", ephemeral=True)
        with pytest.raises(NoAuthError):
            w.set("/histo/jobs/j1", b'{"state": "forged"}')
        # refused writes whose paths spell out what a master's ordinary line says (found by review: the
        # filter matched a master's certificate name anywhere in the line, the path included): shipped too
        disguised = ["/histo/jobs/x#011user=CN=master1.histo.internal,histo-master,y",
                     "/histo/jobs/y,CN=master1.,histo-master,"]
        for path in disguised:
            with pytest.raises(NoAuthError):
                w.create(path, b"")
        # worker1 (its certificate, from its address) gives itself digest identities named like master1's
        # certificate and the masters' digest user (a digest name is the client's own text; a wrong
        # password still shows it): its failed writes used to pass for a master's ordinary ones (never
        # shipped). Two certificate names in one line bind nobody: shipped, by address
        # (the first one given at connect, before its certificate's id: ZooKeeper then names it first)
        spoof = _zk(zk_host["address"], port, WORKER["address"], w_tls, ("CN=master1.histo.internal", "x"))
        spoof.add_auth("digest", "histo-master:not-the-password")
        spoof.add_auth("digest", f"histo-worker:{secret['histo-worker']}")
        with pytest.raises((NodeExistsError, NoAuthError)):
            spoof.create("/histo/jobs", b"")
        with pytest.raises(NoAuthError):
            spoof.set("/histo/jobs/j1", b'{"state": "forged"}')
        spoof.stop()
        spoof.close()
        assert m.get("/histo/jobs/j1")[0] == b'{"state": "done"}'  # the legitimate path still works

        got = _wait_for(record, 7, timeout=60)
        time.sleep(3)  # nothing else follows
        found = [e["event"]["secops"] for e in _entries(record) if isinstance(e["event"], dict)
                 and "secops" in e["event"]]
        summary = sorted((f["kind"], f["host"], f.get("znode") or "") for f in found)
        assert summary == [("zk_acl_denied", "worker1", "/histo/jobs"),
                           ("zk_acl_denied", "worker1", "/histo/jobs/j1"),
                           ("zk_acl_denied", "worker1", "/histo/jobs/j1"),
                           ("zk_acl_denied", "worker1", "/histo/jobs/x"),
                           ("zk_acl_denied", "worker1", "/histo/jobs/y,CN=master1.,histo-master,"),
                           ("zk_tls_refused", "outside", ""), ("zk_tls_refused", "worker2", "")], got
        assert len(_entries(record)) == 7, got  # no ordinary line was shipped
        spoofed = [f for f in found if f["kind"] == "zk_acl_denied" and f["znode"] in ("/histo/jobs", "/histo/jobs/j1")
                   and f["certificate"] is None]
        assert len(spoofed) == 2 and all(f["by"] == "address" and "several certificates" in f["why"]
                                         for f in spoofed), found
        denied = next(f for f in found if f["kind"] == "zk_acl_denied" and f.get("znode") == "/histo/jobs/j1")
        assert (denied["spiffe"], denied["operation"], denied["certificate"], denied["by"], denied["target"]) == (
            "spiffe://histo.internal/worker/worker1", "setData", "worker1", "certificate", "zk1")
        # bound to worker1's certificate, the refused write is an incident the quarantine rule names (the
        # collector here is a dry run: the decision is recorded, nothing done)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any(i["kind"] == "incident_alerted" for i in _incidents(record)):
            time.sleep(0.2)
        decided = [i for i in _incidents(record) if i["kind"] == "incident_alerted" and i["host"] == "worker1"]
        assert ("zookeeper-acl-denied", "quarantine") in [(i["rule"], i["response"]) for i in decided], \
            _incidents(record)
        assert not [i for i in _incidents(record) if i.get("host") == "master1"]  # master1 is framed by nothing
        reasons = {f["host"]: f["why"] for f in found if f["kind"] == "zk_tls_refused"}
        assert "no client certificate" in reasons["worker2"] and "another CA" in reasons["outside"]
        assert next(f for f in found if f["host"] == "outside")["address"] == outsider
        # no secret in ZooKeeper's file, nor in the record
        for text in (zk.log_file.read_text(), record.read_text()):
            assert not any(s in text for s in secret.values())
            assert not any(i.split(":", 1)[1] in text for i in ids.values())
    finally:
        for c in (m, w):
            if c is not None:
                c.stop()
                c.close()
        for r in (shipper, collector):
            r.stop()
        zk.stop()


def _filter_decisions(tmp: Path, lines: list[str], clients: dict[str, str]) -> list[str]:
    """The lines the role's zookeeper_refusals filter ships, decided by a real rsyslog reading a file of
    them (imfile, as on ZooKeeper's host: tabs as they are), kept lines written to another file."""
    tmp.mkdir(parents=True, exist_ok=True)
    src, out = tmp / "zookeeper.log", tmp / "kept.log"
    (tmp / "filter.conf.j2").write_text(
        'global(workDirectory="{{ logship_work_dir }}")\nmodule(load="imfile" mode="inotify")\n'
        'input(type="imfile" File="' + str(src) + '" Tag="zookeeper" ruleset="logship_only_zookeeper_refusals"'
        ' addMetadata="off" freshStartTail="off")\n'
        "{% with __logship_filter_to = 'kept' %}{% include 'filters.j2' %}{% endwith %}\n"
        'template(name="msgonly" type="string" string="%msg%\\n")\n'
        'ruleset(name="kept") { action(type="omfile" file="' + str(out) + '" template="msgonly") }\n')
    loader = jinja2.ChoiceLoader([jinja2.FileSystemLoader(tmp), jinja2.FileSystemLoader(ROLE)])
    text = jinja2.Environment(undefined=jinja2.StrictUndefined, loader=loader).get_template("filter.conf.j2").render(
        logship_work_dir=str(tmp / "work"), __logship_all_files=[{"path": str(src), "filter": "zookeeper_refusals"}],
        logship_zk_masters=sorted(n for n in clients if n.startswith("master")), __logship_zk_clients=clients)
    (tmp / "work").mkdir(exist_ok=True)
    conf = tmp / "rsyslog.conf"
    conf.write_text(text)
    check = subprocess.run(["rsyslogd", "-N1", "-f", str(conf)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    src.write_text("".join(line + "\n" for line in lines))
    proc = subprocess.Popen(["rsyslogd", "-n", "-f", str(conf), "-i", str(tmp / "pid")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        marker = lines[-1].strip()
        while time.monotonic() < deadline and not (out.exists() and marker in out.read_text()):
            time.sleep(0.2)
        time.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
    return [x.strip() for x in out.read_text().splitlines()] if out.exists() else []


def test_the_zookeeper_filter_binds_a_certificate_name_to_its_host_and_to_one_head(tmp_path: Path) -> None:
    """Deterministic lines through the role's filter in a real rsyslog (ZooKeeper orders a session's ids
    by its own hash, so the order an attacker wants cannot be forced in the test above). A digest name is
    the client's own text: worker1 naming a digest identity "CN=master1.histo.internal" (first, as
    ZooKeeper may list it) and "histo-master" used to pass for master1's ordinary failure and was never
    shipped; so did a user field that spells out a head of its own. Both ship now; master1's and
    worker1's own ordinary failures stay on the machine."""
    m1, w1 = "127.1.20.21", "127.1.20.31"

    def line(user: str, ip: str, op: str, znode: str | None, session: str = "0x1000") -> str:
        where = f"\tznode={znode}\tznode_type=persistent" if znode else ""
        return (f" 2026-12-07T01:25:48.361+0000 ERROR [SyncThread:0] Slf4jAuditLogger: session={session}"
                f"\tuser={user}\tip={ip}\toperation={op}{where}\tresult=failure ")

    ordinary = [line(f"{m1},CN=master1.histo.internal,histo-master", m1, "create", "/histo/jobs/j1"),
                line(f"CN=master1.histo.internal,histo-master,{m1}", m1, "multiOperation", None),
                line(f"histo-worker,{w1},CN=worker1.histo.internal", w1, "create", "/histo/workers/worker1/member")]
    spoofs = [
        # a digest name spelling master1's certificate, listed first, from worker1's address
        line(f"CN=master1.histo.internal,{w1},CN=worker1.histo.internal,histo-master", w1, "create", "/histo/jobs",
             "0x2001"),
        # the same from master1's address (borrowed on the segment): two certificate names bind nobody
        line(f"CN=master1.histo.internal,{m1},CN=worker1.histo.internal,histo-master", m1, "setData",
             "/histo/jobs/j1", "0x2002"),
        # master1's certificate from another address
        line(f"CN=master1.histo.internal,histo-master,{w1}", w1, "create", "/histo/jobs", "0x2003"),
        # a user field that spells a whole head of its own, then the real one (tabs as ZooKeeper writes)
        line(f"CN=master1.histo.internal,histo-master,{m1}\tip={m1}\toperation=create\tznode=/histo/jobs\tx,"
             f"CN=worker1.histo.internal,{w1}", w1, "create", "/histo/jobs", "0x2004"),
        # worker2's slot written by worker1 with a digest name spelling worker2's certificate
        line(f"CN=worker2.histo.internal,CN=worker1.histo.internal,histo-worker,{w1}", w1, "create",
             "/histo/workers/worker2/member", "0x2005"),
    ]
    kept = _filter_decisions(tmp_path / "filter", ordinary + spoofs,
                             {"master1": m1, "master2": "127.1.20.22", "worker1": w1, "worker2": "127.1.20.32"})
    sessions = sorted(s.split("session=")[1].split()[0] for s in kept)
    assert sessions == ["0x2001", "0x2002", "0x2003", "0x2004", "0x2005"], kept
