"""The two Vault refusals the audit device alone did not attribute, end to end against a real OpenBao
(never -dev mode, configured by vault-setup) and real rsyslog with the logship role's own entry for a
Vault node's audit file (filter vault_errors):

- a response-wrapped secret_id replayed after it was unwrapped, and one presented after it expired:
  OpenBao refuses them before any response is audited; the audit device's request entry, with the
  error and the presenter's address, reaches the record as a refusal of that address's host;
- a copied secret_id (worker2's, CIDR-bound to worker2) used by worker1: the audit entry has no top-level
  error, its reason (response.data.error, in clear once vault-setup tuned the approle mount) reaches the
  record as a refusal of worker1, by its source address.

The legitimate path — worker2 unwrapping its own delivery and logging in, again — leaves nothing in the
record. Every incident these open is an alert (address-only evidence never contains). No secret_id,
wrapping token or role_id reaches the record. Loopback only (vaultfix.NET: derived from HISTO_IT_NET
and the pytest worker), processes stopped by their pid."""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml  # type: ignore[import-untyped]

from histo.local.bao import BaoServer
from histo.vault.client import VaultAuthError
from histo.vault.provision import wrapped_secret_id, write_credentials

from .test_logship import ROLE, Rsyslogd, _certs, _collector, _entries, _incidents, _wait_for
from .vaultfix import NET, configure, default_hosts, free_port, provision, running_bao, service_vault

pytestmark = pytest.mark.skipif(shutil.which("rsyslogd") is None, reason="rsyslog is installed by bootstrap.sh")
VAULT = {"name": "vault1", "role": "vault", "address": f"{NET}.10"}
SECOPS = {"name": "secops1", "role": "secops", "address": f"{NET}.40"}
HOSTS = [VAULT, *default_hosts(NET), SECOPS]
BY_NAME = {h["name"]: h for h in HOSTS}
W1, W2, M1 = BY_NAME["worker1"], BY_NAME["worker2"], BY_NAME["master1"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[BaoServer, dict[str, str], Path]]:
    root = tmp_path_factory.mktemp("vault-refusals")
    with running_bao(root / "vault", VAULT["address"]) as bao:
        yield bao, configure(bao, HOSTS)["role_ids"], root


def _secops(record: Path) -> list[dict[str, Any]]:
    return [e["event"]["secops"] for e in _entries(record) if isinstance(e["event"], dict) and "secops" in e["event"]]


def _refused(fn: Any) -> str:
    try:
        fn()
    except VaultAuthError as exc:
        return str(exc)
    return "logged in"


def test_a_replayed_or_expired_wrap_and_a_copied_secret_id_are_recorded_and_the_legitimate_path_is_not(
        cluster: tuple[BaoServer, dict[str, str], Path]) -> None:
    bao, role_ids, root = cluster
    # vault-setup tuned the approle mount: a refused login's reason is in clear in the audit entry
    approle = bao.root_client().sys.list_auth_methods()["data"]["approle/"]
    assert approle["config"]["audit_non_hmac_response_keys"] == ["error"]

    record = root / "secops.log"
    common = {"logship_port": free_port(SECOPS["address"]), "logship_queue_max_disk": "64m",
              "logship_collector_respond": "alert"}
    inventory = root / "inventory.json"
    inventory.write_text(json.dumps({"hosts": HOSTS, "ports": {"vault": bao.port}}))
    collector = _collector(bao, role_ids, root / "collector", record, inventory, ["vault1.histo.internal"], common,
                           SECOPS)
    # the role's own entry for a Vault node's audit file, at this server's path
    defaults = yaml.safe_load((ROLE.parent / "defaults" / "main.yml").read_text())
    (entry,) = defaults["logship_group_files"]["vault"]
    files = [{**entry, "path": str(bao.audit_path)}]
    shipper = Rsyslogd(root / "shipper", "shipper.conf.j2", **common, **_certs(bao, role_ids, VAULT, root / "v"),
                       logship_collector_address=SECOPS["address"], logship_collector_name="secops1.histo.internal",
                       logship_source_address=VAULT["address"], __logship_all_files=files)
    secrets: list[str] = []
    try:
        collector.start()
        shipper.start()
        time.sleep(2)  # imfile has the file open (it starts at its end) before anything happens

        # the legitimate path: worker2 unwraps its own delivery (lookup, unwrap) and logs in, and again
        creds2 = provision(bao, role_ids, W2, root / "w2")
        wrap = (creds2 / "secret_id.wrap").read_text().strip()
        own = service_vault(bao, W2, creds2)
        own.login()
        service_vault(bao, W2, creds2).login()
        secret_id2 = (creds2 / "secret_id").read_text().strip()
        secrets += [wrap, secret_id2, role_ids["worker2"], role_ids["worker1"]]

        # worker1 copies worker2's role_id and secret_id and logs in with them from its own address
        copied = root / "w1-copied"
        copied.mkdir()
        for name in ("role_id", "secret_id"):
            (copied / name).write_text((creds2 / name).read_text())
        why = _refused(service_vault(bao, {**W1, "name": "worker2"}, copied, source=W1["address"]).login)
        assert "CIDR" in why, why
        # worker1 replays worker2's wrapping token, which worker2 unwrapped already
        replay = root / "w1-replay"
        write_credentials(replay, role_ids["worker2"], wrap)
        why = _refused(service_vault(bao, {**W1, "name": "worker2"}, replay, source=W1["address"]).login)
        assert "already used or expired" in why, why
        # master1, provisioned late: its own delivery expired before its services started
        late = wrapped_secret_id(bao.root_client(), "master1", M1["address"], wrap_ttl="1s")
        secrets.append(late)
        write_credentials(root / "m1", role_ids["master1"], late)
        time.sleep(2.5)
        why = _refused(service_vault(bao, M1, root / "m1").login)
        assert "already used or expired" in why, why
        own.login()  # the rightful holder is not disturbed

        got = _wait_for(record, 3, timeout=60)
        time.sleep(3)  # nothing else follows: the legitimate requests stayed on the machine
        found = _secops(record)
        summary = sorted((f["kind"], f["host"], f["path"]) for f in found)
        assert summary == [("vault_denied", "worker1", "auth/approle/login"),
                           ("vault_wrapping_refused", "master1", "sys/wrapping/lookup"),
                           ("vault_wrapping_refused", "worker1", "sys/wrapping/lookup")], got
        assert len(_entries(record)) == 3, got
        login = next(f for f in found if f["kind"] == "vault_denied")
        assert (login["address"], login["by"], login["spiffe"]) == (
            W1["address"], "address", "spiffe://histo.internal/worker/worker1")
        assert login["why"] == f"source address {W1['address']} unauthorized by the CIDR restrictions on the secret ID"
        for f in found:
            if f["kind"] == "vault_wrapping_refused":
                assert (f["address"], f["by"]) == (BY_NAME[f["host"]]["address"], "address")
                assert "used already, expired or never issued" in f["why"]
        # what OpenBao audited of the refused wrapping tokens: a request entry with the error, no response
        audited = [json.loads(x) for x in bao.audit_path.read_text().splitlines()]
        refused = [e for e in audited if (e.get("request") or {}).get("path", "").startswith("sys/wrapping/")
                   and (e.get("request") or {}).get("remote_address") in (W1["address"], M1["address"])]
        assert [(e["type"], e["error"]) for e in refused] == [
            ("request", "wrapping token is not valid or does not exist")] * 2, refused

        # detected, and only ever alerted on: worker1 (a copied secret_id, then a replayed wrap joining the
        # same incident), master1 (its late, expired delivery)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len([i for i in _incidents(record)
                                                  if i["kind"] == "incident_alerted"]) < 2:
            time.sleep(0.2)
        opened = sorted((i["rule"], i["host"], i["response"]) for i in _incidents(record)
                        if i["kind"] == "incident_opened")
        assert opened == [("vault-login-outside-binding", "worker1", "alert"),
                          ("vault-wrapping-token-refused", "master1", "alert")], _incidents(record)
        assert not [i for i in _incidents(record) if i.get("response") == "quarantine"]
        # no secret_id, wrapping token or role_id in the record
        text = record.read_text()
        assert not any(s in text for s in secrets)
    finally:
        for r in (shipper, collector):
            r.stop()
