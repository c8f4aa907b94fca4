"""Acceptance tests of the deployed cluster (`make up`, then `make deploy-test`).

They run only when the cluster is up: .histo/vagrant/env exists and every machine of the profile is a
running lxc container. Every probe goes to the project's own machines on histo-br0 (192.168.56.0/24)
or to loopback; nothing else is ever addressed."""
from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STATE = ROOT / ".histo" / "vagrant"
CLUSTER_NET = ipaddress.ip_network("192.168.56.0/24")


def read_env() -> dict[str, str]:
    path = STATE / "env"
    if not path.exists():
        return {}
    out = {}
    for line in path.read_text().splitlines():
        if "=" in line:
            k, v = line.split("=", 1)
            out[k] = v
    return out


@dataclass(frozen=True)
class Host:
    name: str
    group: str
    address: str
    container: str

    def run(self, command: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess:
        """A command inside the machine (lxc-attach: same network namespace as an SSH session)."""
        proc = subprocess.run(["lxc-attach", "-n", self.container, "--clear-env", "--", "/bin/sh", "-c", command],
                              capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"{self.name}: {command!r} exited {proc.returncode}: {proc.stderr.strip()[-400:]}")
        return proc


@dataclass(frozen=True)
class Cluster:
    profile: str
    inventory: dict = field(repr=False)
    hosts: dict[str, Host] = field(repr=False)
    env: dict[str, str] = field(repr=False)  # holds tokens: never in a failure report

    @property
    def ports(self) -> dict[str, int]:
        return self.inventory["all"]["vars"]["histo_ports"]

    @property
    def controller(self) -> str:
        return self.inventory["all"]["vars"]["histo_controller_address"]

    def group(self, name: str) -> list[Host]:
        return [h for h in self.hosts.values() if h.group == name]


def _container_running(name: str) -> bool:
    out = subprocess.run(["lxc-info", "-n", name, "-s"], capture_output=True, text=True)
    return "RUNNING" in out.stdout


@pytest.fixture(scope="session")
def cluster() -> Cluster:
    env = read_env()
    if not env or shutil.which("lxc-attach") is None or os.geteuid() != 0:
        pytest.skip("the Vagrant cluster is not up (make up), or not root on the controller")
    yaml = pytest.importorskip("yaml")  # in .venv-deploy (make deploy-test), not in the app's .venv
    profile = env.get("HISTO_PROFILE", os.environ.get("HISTO_PROFILE", "default"))
    inventory = yaml.safe_load((ROOT / "inventory" / profile / "hosts.yml").read_text())
    hosts = {}
    for group, body in inventory["all"]["children"].items():
        for name, hv in body["hosts"].items():
            assert ipaddress.ip_address(hv["histo_address"]) in CLUSTER_NET
            id_file = ROOT / ".vagrant" / "machines" / name / "lxc" / "id"
            if not id_file.exists() or not _container_running(id_file.read_text().strip()):
                pytest.skip(f"machine {name} of profile {profile} is not running (make up)")
            hosts[name] = Host(name, group, hv["histo_address"], id_file.read_text().strip())
    return Cluster(profile, inventory, hosts, env)


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
