"""Root on one machine is not root everywhere (issue 13, item 1): every machine authorizes exactly the
cluster key (made on the controller, 0600), for the admin user only, only from the controller's
management address; no machine reaches another's SSH or any port on its management address; the
controller's cluster key logs in everywhere, and plain `ansible-playbook site.yml` reaches every machine."""
from __future__ import annotations

import os
import re
import stat
import subprocess

import pytest

from attack import sshcheck
from attack.deployed import DeployedCluster, Machine

DENIED = "Permission denied"
Addrs = dict[str, sshcheck.Addresses]


@pytest.fixture(scope="module")
def addrs(cluster: DeployedCluster) -> dict[str, sshcheck.Addresses]:
    return sshcheck.all_addresses(cluster)


def test_the_cluster_key_is_private_to_the_controller(cluster: DeployedCluster) -> None:
    key = sshcheck.cluster_key(cluster)
    assert key.is_file() and stat.S_IMODE(key.stat().st_mode) == 0o600, key
    assert stat.S_IMODE(key.parent.stat().st_mode) == 0o700, key.parent
    ignored = subprocess.run(["git", "check-ignore", "-q", str(key)], cwd=cluster.root)
    assert ignored.returncode == 0, f"{key} is not git-ignored"


def test_every_machine_authorizes_exactly_the_cluster_key(cluster: DeployedCluster) -> None:
    pub = (sshcheck.cluster_key(cluster).parent / "id_ed25519.pub").read_text().split()[:2]
    insecure = subprocess.run(["ssh-keygen", "-y", "-f", str(sshcheck.insecure_key())], capture_output=True,
                              text=True, check=True).stdout.split()[:2]
    for m in cluster.machines.values():
        lines = [ln.split() for ln in m.run("cat /home/vagrant/.ssh/authorized_keys").stdout.splitlines() if ln.strip()]
        assert [ln[:2] for ln in lines] == [pub], f"{m.name}: {len(lines)} authorized key(s), not the cluster key"
        # every authorized_keys file anywhere on the machine: only the admin user's, and no insecure key
        found = m.run("find / -xdev -name 'authorized_keys*' -type f 2>/dev/null", check=False).stdout.split()
        assert found == ["/home/vagrant/.ssh/authorized_keys"], f"{m.name}: {found}"
        assert insecure[1] not in m.run("cat /home/vagrant/.ssh/authorized_keys").stdout, m.name


@pytest.mark.drill
def test_sshd_admits_only_the_admin_from_the_controller(cluster: DeployedCluster, addrs: Addrs) -> None:
    for m in cluster.machines.values():
        conf = m.run("sshd -T 2>/dev/null").stdout.lower()
        allow = re.findall(r"^allowusers (.+)$", conf, re.M)
        assert len(allow) == 1 and allow[0].split() == [f"vagrant@{_gateway(m)}"], f"{m.name}: {allow}"
        assert "authorizedkeysfile .ssh/authorized_keys\n" in conf, m.name


def _gateway(m: Machine) -> str:
    gateway: str = m.run("ip -4 route show default dev eth0").stdout.split()[2]
    return gateway


@pytest.mark.drill
def test_the_controller_logs_in_with_the_cluster_key_only(cluster: DeployedCluster, addrs: Addrs) -> None:
    key, insecure = sshcheck.cluster_key(cluster), sshcheck.insecure_key()
    wrong = []
    for name, a in addrs.items():
        ok = sshcheck.ssh(a.management, key, command="sudo -n true")
        if ok.returncode != 0:
            wrong.append(f"{name}: the cluster key: {sshcheck.login_result(ok)}")
        for user, k in (("root", key), ("vagrant", insecure), ("root", insecure)):
            r = sshcheck.login_result(sshcheck.ssh(a.management, k, user))
            if DENIED not in r:
                wrong.append(f"{name}: {user} with {k.name}: {r}")
    assert not wrong, wrong


@pytest.mark.drill
def test_no_machine_reaches_another_machines_ssh_or_management(cluster: DeployedCluster, addrs: Addrs) -> None:
    """From root in every machine: every other machine's SSH on every address, and every known port on its
    management address, is dropped (timeout); the controller's path (above) stays open."""
    wrong = []
    for src in cluster.machines.values():
        targets = sshcheck.reach_targets(cluster, src.name, addrs)
        answers = sshcheck.probe_from(src, [t for *_x, t in targets], timeout=1.5)
        for (name, what, _t), got in zip(targets, answers, strict=True):
            if got in ("open", "refused"):
                wrong.append(f"{src.name} -> {name} {what}: {got}")
    assert not wrong, wrong


@pytest.mark.drill
def test_a_key_planted_on_worker1_opens_nothing_else(cluster: DeployedCluster, addrs: Addrs) -> None:
    w1 = cluster.group("workers")[0]
    with sshcheck.planted_key(w1) as (key, inside):
        # root in worker1 owns worker1 (the planted key logs in there from the controller's position) ...
        assert sshcheck.ssh(addrs[w1.name].management, key).returncode == 0
        # ... and nowhere else, even from the one address SSH is accepted from
        for name, a in addrs.items():
            if name != w1.name:
                assert DENIED in sshcheck.login_result(sshcheck.ssh(a.management, key)), name
        # sshd itself refuses a valid key from any address but the controller's (here: worker1's own)
        assert DENIED in sshcheck.self_login(w1, inside, addrs[w1.name].management)
    assert "histo-drill-planted" not in w1.run("cat /home/vagrant/.ssh/authorized_keys").stdout


def test_plain_ansible_reaches_every_machine(cluster: DeployedCluster) -> None:
    """`ansible` / `ansible-playbook site.yml` from the project root with no arguments: ansible.cfg names the
    inventory make up writes (.histo/vagrant/inventory: the profile's inventory and the SSH endpoints)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env["PATH"] = f"{cluster.root / '.venv-deploy' / 'bin'}:{env['PATH']}"
    proc = subprocess.run(["ansible", "all", "-m", "ansible.builtin.ping", "-o"], cwd=cluster.root, env=env,
                          capture_output=True, text=True, timeout=300)
    ok = set(re.findall(r"^(\S+) \| SUCCESS", proc.stdout, re.M))
    assert ok == set(cluster.machines), proc.stdout[-2000:] + proc.stderr[-1000:]


@pytest.mark.skipif(os.environ.get("HISTO_DEPLOY_SKIP_REPROVISION") == "1", reason="HISTO_DEPLOY_SKIP_REPROVISION=1")
def test_plain_ansible_playbook_site_yml_changes_nothing(cluster: DeployedCluster) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env["PATH"] = f"{cluster.root / '.venv-deploy' / 'bin'}:{env['PATH']}"
    proc = subprocess.run(["ansible-playbook", "site.yml"], cwd=cluster.root, env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    recap = re.findall(r"^(\S+)\s+: ok=\d+\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", proc.stdout, re.M)
    assert {name for name, *_ in recap} >= set(cluster.machines), proc.stdout[-2000:]
    changed = {name: int(c) for name, c, _u, _f in recap if int(c)}
    assert not changed, f"changed: {changed}\n" + proc.stdout[-4000:]
