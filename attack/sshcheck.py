"""SSH and the management network, as root on one machine and as the controller sees them (issue 13):
one implementation for the `ssh lateral` drill (attack/lateral.py) and tests/deploy/test_ssh.py.

Standard library only (tests/deploy runs under .venv-deploy). Addressed: only the project's machines —
their cluster addresses (192.168.56.0/24), and the management (eth0) and IPv6 link-local addresses that
their own running containers report — and loopback."""
from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import shlex
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .deployed import CLUSTER_NET, DeployedCluster, Machine

# Every TCP port a machine might listen on: SSH, the service ports of the inventory, OpenBao's cluster
# port, the SecOps shipper port. Probed on every other machine's management address.
EXTRA_PORTS = (22, 8201, 6514)
SSH_OPTS = ["-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=5", "-o", "LogLevel=ERROR"]
# Runs inside a machine with its system python3: TCP connects in parallel to [[address, port], ...]
# (IPv4, or IPv6 link-local with %interface), each answered open / refused / timeout / error:...
PROBE = r"""
import json, socket, sys
from concurrent.futures import ThreadPoolExecutor
def probe(t):
    try:
        family, kind, proto, _, sa = socket.getaddrinfo(t[0], t[1], 0, socket.SOCK_STREAM)[0]
    except OSError as e:
        return "error:" + type(e).__name__
    s = socket.socket(family, kind, proto); s.settimeout(float(sys.argv[1]))
    try:
        s.connect(sa); return "open"
    except ConnectionRefusedError:
        return "refused"
    except (socket.timeout, TimeoutError):
        return "timeout"
    except OSError as e:
        return "error:" + type(e).__name__
    finally:
        s.close()
with ThreadPoolExecutor(64) as ex:
    print(json.dumps(list(ex.map(probe, json.loads(sys.stdin.read())))))
"""


@dataclass(frozen=True)
class Addresses:
    cluster: str           # eth1, the inventory's histo_address
    management: str        # eth0, DHCP on LXC's NAT bridge
    link_local: dict[str, str]  # interface -> fe80::... (IPv6, when the kernel gave one)


def addresses(m: Machine) -> Addresses:
    """The machine's own addresses, as its container reports them (`ip -j addr`)."""
    links = json.loads(m.run("ip -j addr show", timeout=30).stdout)
    mgmt, ll = "", {}
    for link in links:
        for a in link.get("addr_info", []):
            if link["ifname"] == "eth0" and a["family"] == "inet":
                mgmt = a["local"]
            if link["ifname"] in ("eth0", "eth1") and a["family"] == "inet6" and a.get("scope") == "link":
                ll[link["ifname"]] = a["local"]
    if not mgmt or ipaddress.ip_address(mgmt) in CLUSTER_NET:
        raise RuntimeError(f"{m.name}: no management address on eth0")
    return Addresses(m.address, mgmt, ll)


def all_addresses(cluster: DeployedCluster) -> dict[str, Addresses]:
    return {name: addresses(m) for name, m in cluster.machines.items()}


Target = tuple[str, str, list[object]]  # (machine, what, [address, port])


def reach_targets(cluster: DeployedCluster, src: str, addrs: dict[str, Addresses]) -> list[Target]:
    """What root in `src` tries against every other machine: SSH on every address it has (cluster,
    management, IPv6 link-local of eth0 and eth1), and every known port on its management address.
    Each target: (machine, what, [address, port])."""
    ports = sorted(set(cluster.ports.values()) | set(EXTRA_PORTS))
    out: list[Target] = []
    for name, a in addrs.items():
        if name == src:
            continue
        out.append((name, "ssh, cluster address", [a.cluster, 22]))
        out += [(name, f"management address, port {p}", [a.management, p]) for p in ports]
        out += [(name, f"ssh, IPv6 link-local of {ifname}", [f"{ll}%{ifname}", 22])
                for ifname, ll in a.link_local.items()]
    return out


def probe_from(m: Machine, targets: list[list[object]], timeout: float = 2.0) -> list[str]:
    """TCP connects from inside `m` (as root there), in parallel."""
    proc = m.attach(["python3", "-c", PROBE, str(timeout)], input=json.dumps(targets), timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"{m.name}: probe exited {proc.returncode}: {proc.stderr.strip()[-300:]}")
    answers: list[str] = json.loads(proc.stdout)
    return answers


def cluster_key(cluster: DeployedCluster) -> Path:
    return cluster.state / "ssh" / "id_ed25519"


def insecure_key() -> Path:
    """Vagrant's public insecure private key, as Debian's vagrant package ships it."""
    found = sorted(Path("/usr/share/rubygems-integration/all/gems").glob("vagrant-*/keys/vagrant"))
    if not found:
        raise RuntimeError("no Vagrant insecure key (Debian package vagrant)")
    return found[-1]


def ssh(address: str, key: Path, user: str = "vagrant", command: str = "true") -> subprocess.CompletedProcess[str]:
    """An SSH login from the controller to a machine's management address with exactly `key`."""
    return subprocess.run(["ssh", *SSH_OPTS, "-i", str(key), f"{user}@{address}", command], capture_output=True,
                          text=True, timeout=30)


def login_result(proc: subprocess.CompletedProcess[str]) -> str:
    if proc.returncode == 0:
        return "logged in"
    err = proc.stderr.strip().splitlines()
    return (err[-1] if err else f"exit {proc.returncode}")[:120]


@contextlib.contextmanager
def planted_key(m: Machine, user: str = "vagrant") -> Iterator[tuple[Path, str]]:
    """What root in `m` can do: make a key pair there and add its public half to `user`'s authorized_keys
    in `m` (the machine it already owns). Yields the private half copied to a 0600 file on the controller,
and the private half's path in `m`;
    on exit the planted line is taken out of `m` and the copies on both sides are removed."""
    tag = "histo-drill-planted-" + os.urandom(4).hex()
    home = m.run(f"getent passwd {shlex.quote(user)} | cut -d: -f6").stdout.strip()
    keys = f"{home}/.ssh/authorized_keys"
    tmp = f"/root/.{tag}"
    m.run(f"umask 077; ssh-keygen -q -t ed25519 -N '' -C {tag} -f {tmp} && cat {tmp}.pub >> {keys}")
    d = Path(tempfile.mkdtemp(prefix="histo-drill-"))
    try:
        local = d / "key"
        local.touch(mode=0o600)
        local.write_text(m.run(f"cat {tmp}").stdout)
        yield local, tmp
    finally:
        for f in d.iterdir():
            f.unlink()
        d.rmdir()
        m.run(f"rm -f {tmp} {tmp}.pub; sed -i '/ {tag}$/d' {keys}", check=False)


def self_login(m: Machine, key_in_machine: str, address: str, user: str = "vagrant") -> str:
    """From inside `m`, an SSH login to its own `address` with a key file that lives in `m`."""
    opts = " ".join(shlex.quote(o) for o in SSH_OPTS)
    proc = m.run(f"ssh {opts} -i {shlex.quote(key_in_machine)} {user}@{address} true", check=False, timeout=60)
    return login_result(proc)
