"""Acceptance tests of the deployed cluster (`make up`, then `make deploy-test`).

They run only when the cluster is up (attack/deployed.py: DeployedCluster.open): .histo/vagrant/env
exists and every machine of the profile is a running lxc container. Every probe goes to the project's
own machines on histo-br0 (192.168.56.0/24) or to loopback; nothing else is ever addressed."""
from __future__ import annotations

import ipaddress
import time
from pathlib import Path
from typing import Generator

import pytest

from attack.deployed import CLUSTER_NET, DeployedCluster, NotUp

from . import ledger


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None, None, None]:
    """Every test's window, fixtures' setup and teardown included, for the false-alarm audit
    (ledger.py): a test marked `drill` attacks on purpose; every other one is legitimate traffic."""
    start = time.time()
    yield
    ledger.record(item.nodeid, start, item.get_closest_marker("drill") is not None)


@pytest.fixture(scope="session")
def cluster() -> DeployedCluster:
    try:
        return DeployedCluster.open()
    except NotUp as exc:
        pytest.skip(f"the Vagrant cluster is not up (make up): {exc}")


# The segmentation probe (probe.py), passed as `python3 -c` text to machines that have no copy of it.
PROBE = (Path(__file__).resolve().parent / "probe.py").read_text()


def check_targets(targets: list[tuple[str, int]]) -> None:
    for address, _port in targets:
        assert ipaddress.ip_address(address) in CLUSTER_NET, f"refusing to probe {address}"
