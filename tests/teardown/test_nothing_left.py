"""After `make down` (the last step of the cluster stage, scripts/cluster-test.sh): no machine, no
bridge, no process and no secret of the cluster is left behind. Skipped unless HISTO_EXPECT_DOWN=1,
so it never judges a cluster an operator left up on purpose."""
from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(os.environ.get("HISTO_EXPECT_DOWN") != "1",
                                reason="only right after make down (scripts/cluster-test.sh)")


def _inventory_hosts() -> set[str]:
    names: set[str] = set()
    for inv in (ROOT / "inventory").glob("*/hosts.yml"):
        # hosts are the keys indented under a group's `hosts:`; plain parsing keeps this test free of PyYAML
        names.update(re.findall(r"^\s{8}([a-z0-9-]+):", inv.read_text(), re.M))
    return names


def _lxc(*args: str) -> str:
    return subprocess.run(["lxc-ls", *args], capture_output=True, text=True, check=True).stdout


def test_inventory_parsing_finds_the_machines():
    # guards the checks below against passing vacuously on an empty host list
    assert {"vault1", "zk1", "master1", "worker1"} <= _inventory_hosts()


def test_no_machine_left():
    # vagrant-lxc names containers <project dir>_<machine>_<timestamp>
    name = re.compile(rf"^{re.escape(ROOT.name)}_({'|'.join(map(re.escape, _inventory_hosts()))})_\d+$")
    ours = [c for c in _lxc("-1").split() if name.match(c)]
    assert ours == [], f"machines left behind: {ours}"
    assert not list((ROOT / ".vagrant" / "machines").glob("*/lxc/id")), "vagrant still records a machine"


def test_no_molecule_instance_left():
    # the role tests (make molecule) run before the cluster stage in make test and clean up after themselves
    assert [c for c in _lxc("-1").split() if c.startswith("mol-")] == [], "Molecule instances left behind"


def test_no_bridge_left():
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True).stdout
    assert "histo-br0" not in links, "the cluster bridge histo-br0 is still there"
    assert "histo-mol0" not in links, "the Molecule bridge histo-mol0 is still there"
    if not _lxc("--running", "-1").split():  # lxcbr0 stays only while someone else's container uses it
        assert " lxcbr0:" not in links, "LXC's NAT bridge lxcbr0 is still there"


def test_no_process_left():
    procs = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True, check=True).stdout
    left = [line.strip() for line in procs.splitlines()
            if re.search(r"\bvagrant\b|lxc-start .*" + re.escape(ROOT.name) + r"_|dnsmasq .*lxcbr0", line)
            and "pytest" not in line]
    if _lxc("--running", "-1").split():
        left = [p for p in left if "dnsmasq" not in p]
    assert left == [], f"processes left behind: {left}"


def test_no_cluster_secret_left():
    state = ROOT / ".histo" / "vagrant"
    left = [p.name for p in (state / "root-token", state / "vault-init.json", state / "issuer-token", state / "env",
                             state / "provision") if p.exists()]
    assert left == [], f"secrets of the removed cluster left on the controller: {left}"
