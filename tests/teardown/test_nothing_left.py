"""After `make down` (the last step of the cluster stage, scripts/cluster-test.sh): no machine, no
bridge, no process and no secret of the cluster is left behind. Skipped unless HISTO_EXPECT_DOWN=1,
so it never judges a cluster an operator left up on purpose."""
from __future__ import annotations

import os
import re
import subprocess

import pytest

from attack.deployed import ROOT, SECRETS, container_pattern, machine_names, recorded_containers, state_dir

pytestmark = pytest.mark.skipif(os.environ.get("HISTO_EXPECT_DOWN") != "1",
                                reason="only right after make down (scripts/cluster-test.sh)")


def _lxc(*args: str) -> str:
    return subprocess.run(["lxc-ls", *args], capture_output=True, text=True, check=True).stdout


def test_inventory_parsing_finds_the_machines():
    # guards the checks below against passing vacuously on an empty host list
    assert {"vault1", "zk1", "master1", "worker1"} <= machine_names()


def test_no_machine_left():
    name = container_pattern()
    ours = [c for c in _lxc("-1").split() if name.match(c)]
    assert ours == [], f"machines left behind: {ours}"
    assert not recorded_containers(), "vagrant still records a machine"


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
    left = [name for name in SECRETS if (state_dir() / name).exists()]
    assert left == [], f"secrets of the removed cluster left on the controller: {left}"
