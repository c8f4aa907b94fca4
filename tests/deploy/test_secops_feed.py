"""Refusals provoked on the machines are *detected*: they reach the SecOps record on secops1, attributed to
the machine refused, and the collector's relay (histo-secops-relay.service) pushes them to every master,
where GET /api/v1/secops/events (viewer) shows them. The seconds each took are printed."""
from __future__ import annotations

import json
import secrets
import shlex
import time
from typing import Any, Callable

import pytest

from attack.deployed import ROOT, DeployedCluster

from .api import secops_find, secops_head, vault_read_without_token

WAIT = 90.0  # seconds: the shippers' queues, the collector, the relay and the master, end to end


@pytest.mark.drill
def test_a_vault_refusal_and_a_firewall_drop_on_worker1_reach_every_masters_secops_api(
        cluster: DeployedCluster) -> None:
    worker, other = cluster.group("workers")[:2]
    collector, vault = cluster.group("secops")[0], cluster.group("vault")[0]
    assert collector.run("systemctl is-active histo-secops-relay.service", check=False).stdout.strip() == "active"
    urls = cluster.env["HISTO_URLS"].split(",")
    heads = {url: secops_head(cluster, url) for url in urls}
    spiffe = f"spiffe://histo.internal/worker/{worker.name}"

    # 1. Vault: worker1 reads a secret with no token (refused; the Vault node's audit device records it)
    marker = f"histo-deploy-feed-{secrets.token_hex(6)}"
    t_vault = time.monotonic()
    assert vault_read_without_token(cluster, worker, vault, marker) == "403"

    # 2. nftables: worker1 probes worker2's internal port (only masters may: dropped and logged on worker2)
    port = cluster.ports["internal"]
    probe = ("import socket\ns = socket.socket()\ns.settimeout(2)\n"
             f"try:\n    s.connect(({other.address!r}, {port}))\n    print('open')\n"
             "except socket.timeout:\n    print('timeout')\nexcept OSError as e:\n    print('refused', e)\n")
    t_drop = time.monotonic()
    assert worker.run(f"python3 -c {shlex.quote(probe)}").stdout.strip() == "timeout"

    wanted: dict[str, tuple[float, str, Callable[[dict[str, Any]], bool]]] = {
        "vault": (t_vault, "layer=vault", lambda ev: marker in (ev.get("what") or "")),
        "firewall": (t_drop, f"layer=firewall&host={worker.name}",
                     lambda ev: ev.get("where") == other.name and ev.get("what") == f"port {port}/TCP"),
    }
    found: dict[tuple[str, str], tuple[dict[str, Any], float]] = {}
    deadline = time.monotonic() + WAIT
    while len(found) < len(wanted) * len(urls) and time.monotonic() < deadline:
        for url in urls:
            for layer, (t0, query, match) in wanted.items():
                if (url, layer) not in found:
                    ev = secops_find(cluster, url, heads[url], query, match)
                    if ev is not None:
                        found[(url, layer)] = (ev, time.monotonic() - t0)
        time.sleep(0.5)
    for (url, layer), (ev, took) in sorted(found.items()):
        print(f"a {layer} refusal of {worker.name} reached {url}'s SecOps API after {took:.1f} s "
              f"(record entry {ev['record_seq']}, {ev['kind']}, where {ev['where']})")
    missing = [f"{layer} on {url}" for url in urls for layer in wanted if (url, layer) not in found]
    assert not missing, f"not on the masters' SecOps API after {WAIT:.0f} s: {missing}"
    for (url, layer), (ev, _took) in found.items():
        assert (ev["layer"], ev["host"], ev["spiffe"], ev["collector"]) == (layer, worker.name, spiffe,
                                                                           collector.name), (url, ev)
        assert ev["severity"] in ("warning", "critical") and ev["why"], ev


# rsyslogd's CPU since it started (utime + stime, in clock ticks), its start (ticks after boot), the
# machine's uptime and the clock tick: the shipper's share of one core on each machine
_CPU = ("set -e; p=$(pidof -s rsyslogd); s=$(cat /proc/$p/stat); s=${s##*) }; set -- $s; "
        "echo $(( ${12} + ${13} )) ${20} $(cut -d' ' -f1 /proc/uptime) $(getconf CLK_TCK)")


def test_the_shippers_cpu_on_every_machine_is_measured(cluster: DeployedCluster) -> None:
    """Issue 17's figure: rsyslog's CPU over its life on each machine (the collector's includes the
    record's omprog child separately: not counted here). Written to test-artifacts/shipper-cpu.json for
    docs/PERFORMANCE.md; nothing about its size is asserted (a timed figure, not a test)."""
    figures: dict[str, dict[str, Any]] = {}
    for machine in cluster.machines.values():
        cpu, start, uptime, tick = machine.run(_CPU).stdout.split()
        alive = float(uptime) - int(start) / int(tick)
        seconds = int(cpu) / int(tick)
        assert alive > 0 and seconds >= 0, (machine.name, cpu, start, uptime)
        figures[machine.name] = {"group": machine.group, "cpu_s": round(seconds, 2), "alive_s": round(alive, 1),
                                 "share_of_a_core": round(seconds / alive, 5)}
    out = ROOT / "test-artifacts" / "shipper-cpu.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(figures, indent=1, sort_keys=True) + "\n")
    for name, f in sorted(figures.items()):
        print(f"rsyslogd on {name}: {f['cpu_s']} s of CPU in {f['alive_s']} s "
              f"({100 * f['share_of_a_core']:.2f} % of a core)")
    assert set(figures) == set(cluster.machines)
