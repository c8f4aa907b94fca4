"""The deployed cluster (`make up`) as the controller sees it: the operator's env file, the inventory of
its profile, and its machines (name, group, address on histo-br0, running lxc container). One handle for
`make attack` (attack/), the acceptance tests (tests/deploy) and the teardown check (tests/teardown).

Standard library only: tests/deploy and tests/teardown run under .venv-deploy (Ansible, PyYAML, pytest;
no histo), attack/ under .venv (histo; no PyYAML). The inventory is parsed with PyYAML where it is
installed, else by .venv-deploy's Python. Only the project's machines (192.168.56.0/24) are addressed."""
from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CLUSTER_NET = ipaddress.ip_network("192.168.56.0/24")
BRIDGE = "histo-br0"
# What `make up` leaves under .histo/vagrant that belongs to the cluster alone (gone after `make down`).
SECRETS = ("root-token", "vault-init.json", "vault-seal.key", "provisioner-token", "root-accessors", "issuer-token",
           "env", "provision", "ssh", "inventory")


class NotUp(Exception):
    """The deployed cluster is not up (the message says why)."""


def state_dir(root: Path = ROOT) -> Path:
    return root / ".histo" / "vagrant"


def read_env(root: Path = ROOT) -> dict[str, str]:
    """The operator's env file (HISTO_URL, HISTO_URLS, HISTO_CA, HISTO_PROFILE, tokens); {} when absent."""
    path = state_dir(root) / "env"
    if not path.exists():
        return {}
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


def load_inventory(profile: str, root: Path = ROOT) -> dict[str, Any]:
    """inventory/<profile>/hosts.yml as a dict."""
    path = root / "inventory" / profile / "hosts.yml"
    try:
        import yaml  # type: ignore[import-untyped]  # PyYAML ships no type information
    except ImportError:  # the app's .venv: ask the deployment's virtualenv for JSON
        out = subprocess.run([str(root / ".venv-deploy" / "bin" / "python"), "-c",
                              "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))",
                              str(path)], capture_output=True, text=True, timeout=30, check=True)
        doc: dict[str, Any] = json.loads(out.stdout)
        return doc
    try:
        loaded: dict[str, Any] = yaml.safe_load(path.read_text())
        return loaded
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: {exc}") from exc


def machine_names(root: Path = ROOT) -> set[str]:
    """Every machine of every profile's inventory."""
    names: set[str] = set()
    for hosts in (root / "inventory").glob("*/hosts.yml"):
        inventory = load_inventory(hosts.parent.name, root)
        for body in inventory["all"]["children"].values():
            names.update(body["hosts"])
    return names


def recorded_containers(root: Path = ROOT) -> dict[str, str]:
    """The lxc container of each machine Vagrant records (.vagrant/machines/<name>/lxc/id)."""
    return {p.parts[-3]: p.read_text().strip() for p in (root / ".vagrant" / "machines").glob("*/lxc/id")}


def container_pattern(root: Path = ROOT, names: set[str] | None = None) -> re.Pattern[str]:
    """The names of this checkout's containers (of `names`, default every inventory's machines): vagrant-lxc
    calls them <project dir>_<machine>_<timestamp>_<random>, e.g. histo_worker1_1796153384417_92504."""
    machines = sorted(machine_names(root) if names is None else names)
    return re.compile(rf"^{re.escape(root.name)}_({'|'.join(map(re.escape, machines))})(_\d+)+$")


def running(container: str) -> bool:
    out = subprocess.run(["lxc-info", "-n", container, "-s"], capture_output=True, text=True)
    return "RUNNING" in out.stdout


@dataclass(frozen=True)
class Machine:
    name: str
    group: str
    address: str
    container: str

    def attach(self, argv: list[str], *, input: str | None = None,
               timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """`argv` inside the machine (lxc-attach: the same network namespace an SSH session would have)."""
        return subprocess.run(["lxc-attach", "-n", self.container, "--clear-env", "--", *argv], input=input,
                              capture_output=True, text=True, timeout=timeout)

    def run(self, command: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess[str]:
        """A shell command inside the machine; with `check`, a non-zero exit fails the calling test."""
        proc = self.attach(["/bin/sh", "-c", command], timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"{self.name}: {command!r} exited {proc.returncode}: {proc.stderr.strip()[-400:]}")
        return proc


@dataclass(frozen=True)
class DeployedCluster:
    profile: str
    inventory: dict[str, Any] = field(repr=False)
    machines: dict[str, Machine] = field(repr=False)
    env: dict[str, str] = field(repr=False)  # holds tokens: never in a failure report
    root: Path = ROOT

    @classmethod
    def open(cls, root: Path = ROOT) -> DeployedCluster:
        """The cluster when it is up: the env file exists, we are root with lxc-attach, and every machine of
        the profile is a running container. Else NotUp, saying why."""
        env = read_env(root)
        if not env:
            raise NotUp(f"no {state_dir(root) / 'env'} (make up)")
        if os.geteuid() != 0 or shutil.which("lxc-attach") is None:
            raise NotUp("not root on the controller, or no lxc-attach")
        profile = env.get("HISTO_PROFILE", os.environ.get("HISTO_PROFILE", "default"))
        try:
            inventory = load_inventory(profile, root)
        except (OSError, subprocess.SubprocessError, ValueError) as exc:
            raise NotUp(f"inventory unreadable: {type(exc).__name__}") from exc
        containers = recorded_containers(root)
        machines = {}
        for group, body in inventory["all"]["children"].items():
            for name, hostvars in body["hosts"].items():
                address = hostvars["histo_address"]
                if ipaddress.ip_address(address) not in CLUSTER_NET:
                    raise ValueError(f"refusing machine {name} at {address}, outside {CLUSTER_NET}")
                container = containers.get(name)
                if container is None or not running(container):
                    raise NotUp(f"machine {name} of profile {profile} is not running (make up)")
                machines[name] = Machine(name, group, address, container)
        return cls(profile, inventory, machines, env, root)

    @property
    def state(self) -> Path:
        return state_dir(self.root)

    @property
    def ports(self) -> dict[str, int]:
        ports: dict[str, int] = self.inventory["all"]["vars"]["histo_ports"]
        return ports

    @property
    def controller(self) -> str:
        address: str = self.inventory["all"]["vars"]["histo_controller_address"]
        return address

    def group(self, name: str) -> list[Machine]:
        return [m for m in self.machines.values() if m.group == name]


@contextlib.contextmanager
def outsider(namespace: str, veth: str, addresses: tuple[str, ...]) -> Iterator[str]:
    """A client on histo-br0 that is not a cluster machine: a network namespace of our own, with
    `addresses` on its eth0; removed on exit (and first, if a previous run left it)."""
    def sh(*argv: str) -> None:
        subprocess.run(argv, check=True, capture_output=True)

    def remove() -> None:
        subprocess.run(["ip", "link", "del", veth], capture_output=True)
        subprocess.run(["ip", "netns", "del", namespace], capture_output=True)
    remove()
    sh("ip", "netns", "add", namespace)
    try:
        sh("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", namespace)
        sh("ip", "link", "set", veth, "master", BRIDGE, "up")
        for address in addresses:
            sh("ip", "-n", namespace, "addr", "add", f"{address}/24", "dev", "eth0")
        sh("ip", "-n", namespace, "link", "set", "eth0", "up")
        sh("ip", "-n", namespace, "link", "set", "lo", "up")
        yield namespace
    finally:
        remove()
