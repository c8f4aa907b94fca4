"""`python -m attack`: the drills against the deployed cluster (`make up`), in the order below (the
disruptive one last), each posted as a `drill` SecOps event on every master.

Where the attacker stands: on the controller's bridge (histo-br0) for the capture (network.py); inside
worker1, a compromised worker, for the lateral-movement drills (lateral.py); inside worker2 or master2,
or on the controller, with credentials copied from worker1 (identity.py); in a network namespace of its
own on histo-br0 for the flood, and against Vault itself (availability.py).

How it runs: on the controller with the project's virtualenv (.venv: histo, hvac, kazoo, Pillow); the
code that runs inside a machine is attack/remote/inside.py (see target.py). Only the project's machines
(192.168.56.0/24), loopback and the namespace the flood makes are addressed."""
from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from pathlib import Path

from . import availability, identity, lateral, network
from .deployed import DeployedCluster, NotUp
from .outcome import Outcome, run_drills, summary
from .target import Target

FUNCTIONS = {"eavesdrop": network.eavesdrop, "stolen certificate": identity.stolen_certificate,
             "compromised worker": lateral.compromised_worker, "forged / replayed result": lateral.forged_result,
             "ssh lateral": lateral.ssh_lateral,
             "used secret_id": identity.used_secret_id, "copied secret_id": identity.copied_secret_id,
             "expired certificate": identity.expired_certificate, "revoked token": identity.revoked_token,
             "certificate without its address": identity.addressless_issuance,
             "revoked certificate": identity.revoked_certificate, "provisioner token": identity.provisioner_token,
             "flood": availability.flood, "connection flood": availability.connection_flood,
             "Vault sealed": availability.vault_sealed}
DRILLS = tuple(FUNCTIONS)


def post_event(d: Target, result: Outcome) -> str:
    """One `drill` SecOps event per drill, on every master (each serves its own dashboard)."""
    answers: dict[str, int | str] = {}
    for u in d.api.urls:
        try:
            answers[u] = d.api.request("POST", "/api/v1/events", token=d.api.token("admin"), body=result.event_body(),
                                       headers={"Content-Type": "application/json"}, url=u, timeout=10)[0]
        except OSError as exc:
            answers[u] = type(exc).__name__
    ok = [u for u, s in answers.items() if s == 201]
    if len(ok) == len(answers):
        return "drill event recorded on " + ", ".join(ok)
    hint = " (this master's histo predates POST /api/v1/events: redeploy)" if 405 in answers.values() else ""
    return f"drill event: {answers}{hint}"


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m attack", description=__doc__.split("\n")[0])
    ap.add_argument("--list", action="store_true", help="print the drills' names")
    ap.add_argument("--check-up", action="store_true", help="exit 0 when the deployed cluster is up")
    ap.add_argument("--only", action="append", choices=DRILLS, help="run only this drill (repeatable)")
    ap.add_argument("--json", help="also write the outcomes to this file")
    a = ap.parse_args()
    if a.list:
        print("\n".join(DRILLS))
        return
    try:
        cluster = DeployedCluster.open()
    except NotUp as exc:
        if a.check_up:
            sys.exit(1)
        print(f"attack: the deployed cluster is not up: {exc}", file=sys.stderr)
        sys.exit(2)
    if a.check_up:
        sys.exit(0)
    d = Target(cluster)
    names = a.only or list(DRILLS)
    print(f"attack: {len(names)} drill(s) against the deployed cluster ({d.profile} profile, {len(d.machines)} "
          f"machines); answers via {d.api.url}", flush=True)
    t0 = time.monotonic()
    results = run_drills([(n, functools.partial(FUNCTIONS[n], d)) for n in names], post=lambda r: post_event(d, r),
                         out=lambda line: print(line, flush=True))
    print(f"{summary(results)} (wall clock {time.monotonic() - t0:.0f}s)")
    if a.json:
        Path(a.json).write_text(json.dumps([r.as_dict() for r in results], indent=1))
    sys.exit(0 if all(r.held for r in results) else 1)
