"""The collector's detection and response (secops/collector.py, detect.py, respond.py) with a real
chained log and a stand-in for Vault: a refusal from a worker opens an incident, the responder contains
the host and records its decision; a guard rail, a dry run, a failed step and an outside address each
end in an alert that says why — every decision is an entry of the tamper-evident record.
tests/integration/test_quarantine_vault.py and test_quarantine.py run containment against the real parts."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from histo.secops.chain import ChainLog
from histo.secops.collector import Collector, event_time
from histo.secops.detect import Detector
from histo.secops.respond import Responder
from histo.secops.rules import load_rules
from histo.vault.quarantine import guard

from .test_secops_detect import ADDR, INV, service, vault_audit

HOSTS = [{"name": h.name, "role": h.role} for h in INV.by_name.values()]


class Signer:
    def sign_head(self, head: Any) -> str:
        return f"jws-{head.seq}"


def collector(tmp_path: Path, contained: list[str], fail: bool = False, dry_run: bool = False
              ) -> tuple[Collector, Responder]:
    def contain(host: str, incident: dict[str, Any]) -> dict[str, Any]:
        contained.append(host)
        return {"actions": [{"name": "policy", "ok": not fail, **({"error": "Forbidden: 403"} if fail else {})}]}
    responder = Responder(contain=contain, guard=lambda host, held: guard(HOSTS, held, host),
                          record=lambda e: None, dry_run=dry_run)
    c = Collector(tmp_path / "record.log", Signer(), None, interval=3600, inventory=INV, self_host="secops1",
                  detector=Detector(load_rules()), responder=responder)
    responder.record = c.record
    return c, responder


def entries(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line)["event"] for line in path.read_text().splitlines()]


def wait_decided(responder: Responder, n: int) -> None:
    deadline = time.time() + 10
    while len(responder.decided) < n and time.time() < deadline:
        time.sleep(0.01)


def test_a_worker_denied_by_vault_is_contained_and_the_decision_recorded(tmp_path: Path) -> None:
    contained: list[str] = []
    c, responder = collector(tmp_path, contained)
    c.start()
    c.ingest(json.dumps(service("worker_left", "master1", worker="worker2")))  # ordinary: no incident
    c.ingest(json.dumps(vault_audit("1 error occurred:\n\t* permission denied\n\n", "histo-worker1",
                                    "secret/data/histo/zk/super", ADDR["worker1"])))
    wait_decided(responder, 1)
    c.ingest(json.dumps(vault_audit("permission denied", "histo-worker1", "transit/sign/histo-receipts",
                                    ADDR["worker1"])))  # the same machine again: evidence of its incident
    c.close()
    kinds = [e.get("kind") for e in entries(tmp_path / "record.log")]
    assert kinds.count("incident_opened") == 1 and kinds.count("incident_contained") == 1
    (joined,) = [e for e in entries(tmp_path / "record.log") if e.get("kind") == "incident_evidence"]
    assert joined["incident"] == responder.decided[0]["incident"]
    assert joined["evidence"]["path"] == "transit/sign/histo-receipts"
    decided = responder.decided[0]
    assert contained == ["worker1"] and decided["host"] == "worker1" and decided["state"] == "contained"
    assert decided["to_contain"] is not None and decided["to_contain"] >= decided["to_detect"] >= 0
    assert ChainLog(tmp_path / "record.log").head.seq == len(kinds)  # the chain holds every decision


def test_guard_rails_dry_run_and_a_failed_step_are_alerts_that_say_why(tmp_path: Path) -> None:
    contained: list[str] = []
    (tmp_path / "a").mkdir()
    c, responder = collector(tmp_path / "a", contained)
    c.start()
    responder.held = {"worker2"}  # worker1 is the last worker left: never contained automatically
    c.ingest(json.dumps(vault_audit("permission denied", "histo-worker1", "pki_int/issue/host-worker2",
                                    ADDR["worker1"])))
    wait_decided(responder, 1)
    c.close()
    assert contained == [] and responder.decided[0]["kind"] == "incident_alerted"
    assert "last" in json.dumps(responder.decided[0]["actions"])

    def one_denial(folder: str, **kw: bool) -> Responder:
        (tmp_path / folder).mkdir()
        c, responder = collector(tmp_path / folder, contained, **kw)
        c.start()
        c.ingest(json.dumps(vault_audit("permission denied", "histo-worker1", "secret/data/histo/zk/super",
                                        ADDR["worker1"])))
        wait_decided(responder, 1)
        c.close()
        return responder

    responder = one_denial("b", dry_run=True)
    assert contained == [] and "dry run" in json.dumps(responder.decided[0]["actions"])
    responder = one_denial("c", fail=True)
    assert contained == ["worker1"] and responder.decided[0]["state"] == "containment_partial"
    assert "worker1" not in responder.held  # not counted as contained: the guard rails still count it


def test_an_outside_address_is_never_contained(tmp_path: Path) -> None:
    contained: list[str] = []
    c, responder = collector(tmp_path, contained)
    c.start()
    for _ in range(6):
        c.ingest(json.dumps(service("auth_failure", "master1", where="203.0.113.7", reason="expired token",
                                    path="/api/v1/jobs")))
    wait_decided(responder, 1)
    c.close()
    assert contained == [] and responder.decided and responder.decided[0]["kind"] == "incident_alerted"


def test_event_time_reads_each_sources_clock() -> None:
    assert event_time({"ts": 12.5}) == 12.5
    assert event_time({"ts": "2026-12-06T10:00:00.250+00:00"}) == 1796551200.25
    assert event_time({"time": "2026-12-06T10:00:00Z"}) == 1796551200.0
    assert event_time({"ts": "yesterday"}) is None and event_time({}) is None
