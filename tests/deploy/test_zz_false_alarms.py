"""No false alarms (issue 18, item 5): every incident this run's SecOps record opened traces to a drill.

Runs after every other acceptance test (marked `audit`: tests/conftest.py). Each incident opened or
escalated during the run is held against the ledger of test windows (ledger.py): every piece of its
opening evidence must have happened while a test marked `drill` attacked (or within its GRACE after).
An incident any of whose evidence came from a legitimate test — an upload, a restart, a failover, a
re-provisioning, `vagrant halt`/`up` — is a rule firing on legitimate traffic: a bug, named here with
the test that was running."""
from __future__ import annotations

import collections
import time

import pytest

from attack.deployed import DeployedCluster

from .api import RECORD, incidents
from .ledger import LEDGER, Window, explain

pytestmark = pytest.mark.audit

OPENING = ("incident_opened", "incident_escalated")


def _name(w: Window | None) -> str:
    return "between tests" if w is None else w.test


def test_every_incident_of_this_run_traces_to_a_drill(cluster: DeployedCluster) -> None:
    secops = cluster.group("secops")
    if not secops:
        pytest.skip(f"the {cluster.profile} profile has no SecOps machine")
    others = [w for w in LEDGER if "test_zz_false_alarms" not in w.test]
    if not others:
        pytest.skip("no other acceptance test ran in this session: nothing to audit")
    since = others[0].start - 1.0
    time.sleep(5)  # the shippers' queues: the last test's refusals reach the record
    # no record read is no incident found: the audit must not pass on a record it could not read
    assert secops[0].run(f"test -s {RECORD} && echo present", check=False).stdout.strip() == "present", RECORD
    opened = [e for e in incidents(secops[0])
              if e.get("kind") in OPENING and float(e.get("detected") or 0) >= since]  # type: ignore[arg-type]
    by_drill: collections.Counter[str] = collections.Counter()
    false_alarms = []
    for inc in opened:
        raw = inc.get("evidence")
        evidence = [e for e in raw if isinstance(e, dict)] if isinstance(raw, list) else []
        assert evidence, f"incident {inc.get('incident')} ({inc.get('rule')}) carries no evidence"
        windows = [explain(float(e.get("ts") or 0)) for e in evidence]
        legit = [(e.get("kind"), e.get("ts"), _name(w)) for e, w in zip(evidence, windows) if w is None or not w.drill]
        if legit:
            false_alarms.append((inc.get("rule"), inc.get("host"), inc.get("address"), legit[:5]))
        else:
            for w in {w for w in windows if w is not None}:
                by_drill[f"{w.test}: {inc.get('rule')} {inc.get('host') or inc.get('address')}"] += 1
    drills = [w for w in others if w.drill]
    print(f"\naudit: {len(opened)} incidents opened in {len(others)} tests ({len(drills)} drills, "
          f"{len(others) - len(drills)} legitimate)")
    for what, n in sorted(by_drill.items()):
        print(f"  {n} x {what}")
    assert not false_alarms, ("incidents opened on evidence from legitimate tests (rule, host, address, "
                              f"[(evidence, when, test running)]): {false_alarms}")
