"""Acceptance tests of the deployed cluster (`make up`, then `make deploy-test`).

They run only when the cluster is up (attack/deployed.py: DeployedCluster.open): .histo/vagrant/env
exists and every machine of the profile is a running lxc container. Every probe goes to the project's
own machines on histo-br0 (192.168.56.0/24) or to loopback; nothing else is ever addressed."""
from __future__ import annotations

import ipaddress

import pytest

from attack.deployed import CLUSTER_NET, DeployedCluster, NotUp


@pytest.fixture(scope="session")
def cluster() -> DeployedCluster:
    try:
        return DeployedCluster.open()
    except NotUp as exc:
        pytest.skip(f"the Vagrant cluster is not up (make up): {exc}")


# The probe that runs inside a machine (or in the test's own namespace): TCP connects in parallel,
# each answered "open", "refused" (reached the host, nothing listening) or "timeout" (dropped).
PROBE = r'''
import json, socket, sys
from concurrent.futures import ThreadPoolExecutor
src, timeout, targets = sys.argv[1], float(sys.argv[2]), json.loads(sys.argv[3])
def probe(t):
    s = socket.socket()
    s.settimeout(timeout)
    try:
        if src:
            s.bind((src, 0))
        s.connect((t[0], t[1]))
        return "open"
    except ConnectionRefusedError:
        return "refused"
    except (socket.timeout, TimeoutError):
        return "timeout"
    except OSError as e:
        return "error:" + str(e)
    finally:
        s.close()
with ThreadPoolExecutor(32) as ex:
    print(json.dumps(list(ex.map(probe, targets))))
'''


def check_targets(targets: list[tuple[str, int]]) -> None:
    for address, _port in targets:
        assert ipaddress.ip_address(address) in CLUSTER_NET, f"refusing to probe {address}"
