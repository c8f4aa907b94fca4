"""Plain Vagrant on this host (issue 22): with no environment variable, `vagrant` picks the lxc provider
by itself; an explicit choice still wins; a missing prerequisite is one readable line, not a Ruby
backtrace. Run against a copy of the Vagrantfile and the inventory in a folder of their own, so no
machine, network or secret of the running cluster is touched (nothing is booted)."""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from attack.deployed import ROOT, DeployedCluster, running

from .api import incidents, upload

pytestmark = pytest.mark.skipif(shutil.which("vagrant") is None, reason="no vagrant on this host (make up)")


def _copy(tmp: Path) -> Path:
    project = tmp / "histo"
    project.mkdir()
    shutil.copy(ROOT / "Vagrantfile", project / "Vagrantfile")
    shutil.copytree(ROOT / "inventory", project / "inventory")
    (project / "vagrant").mkdir()
    shutil.copy(ROOT / "vagrant" / "prepare.sh", project / "vagrant" / "prepare.sh")
    (project / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "lib.sh", project / "scripts" / "lib.sh")
    return project


def _vagrant(project: Path, *argv: str, env: dict[str, str] | None = None,
             user: str | None = None) -> subprocess.CompletedProcess[str]:
    base = {"PATH": os.environ["PATH"], "HOME": str(project / "home"), "HISTO_PROFILE": "small"}
    cmd = ["vagrant", *argv]
    if user:
        cmd = ["runuser", "-u", user, "--", "env", *(f"{k}={v}" for k, v in {**base, **(env or {})}.items()), *cmd]
    return subprocess.run(cmd, cwd=project, env={**base, **(env or {})}, capture_output=True, text=True, timeout=120)


def _providers(out: str) -> set[str]:
    return {line.split(",")[3] for line in out.splitlines() if ",provider-name," in line}


def test_plain_vagrant_picks_lxc_on_this_host(tmp_path: Path) -> None:
    project = _copy(tmp_path)
    out = _vagrant(project, "status", "--machine-readable")
    assert out.returncode == 0, out.stderr[-800:]
    assert _providers(out.stdout) == {"lxc"}, out.stdout[-800:]
    # an explicit choice wins over the Vagrantfile's
    out = _vagrant(project, "status", "--machine-readable", env={"VAGRANT_DEFAULT_PROVIDER": "libvirt"})
    assert _providers(out.stdout) == {"libvirt"}, out.stdout[-800:]


def test_a_missing_prerequisite_is_one_readable_line() -> None:
    with tempfile.TemporaryDirectory(prefix="histo-vagrant-") as tmp:  # pytest's tmp_path is root-only
        os.chmod(tmp, 0o755)
        project = _copy(Path(tmp))
        # Debian's Vagrant ships its insecure key root-only: give nobody's Vagrant home its own copy.
        key = project / "home" / ".vagrant.d" / "insecure_private_key"
        key.parent.mkdir(parents=True)
        shipped = sorted(Path("/usr/share/rubygems-integration/all/gems").glob("vagrant-2*/keys/vagrant"))
        if not shipped:
            pytest.skip("not Debian's Vagrant (no shipped insecure key to copy)")
        shutil.copy(shipped[-1], key)
        for path in (project / "home", key.parent, key):
            shutil.chown(path, "nobody")
        os.chmod(project, 0o777)
        out = _vagrant(project, "up", user="nobody")
        made = (project / ".vagrant" / "machines").exists() or (project / ".histo").exists()
    assert out.returncode != 0
    text = out.stdout + out.stderr
    assert "needs root on this host" in text, text[-1500:]
    assert ".rb:" not in text and "Traceback" not in text, text[-1500:]
    assert not made  # no machine, no state folder


@pytest.mark.disruptive
def test_halt_then_up_comes_back_ready_and_serves(cluster: DeployedCluster) -> None:
    """`vagrant halt` of the whole cluster and a plain `vagrant up`: Vault comes back sealed and the
    Vagrantfile's after-up step unseals it with the keys; every service gets a fresh certificate by
    itself; `vagrant up` returns only once the cluster is ready, and an upload is accepted at once."""
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root"), "HISTO_PROFILE": cluster.profile}
    halted = time.time()
    out = subprocess.run(["vagrant", "halt"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-800:]
    assert not any(running(m.container) for m in cluster.machines.values())
    out = subprocess.run(["vagrant", "up"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=1500)
    assert out.returncode == 0, (out.stdout[-1500:], out.stderr[-800:])
    assert "ready:" in out.stdout and "up: the cluster is at" in out.stdout, out.stdout[-1500:]
    token = cluster.env.get("HISTO_TOKEN_UPLOADER")
    assert token
    status, raw = upload(cluster, token)
    assert status == 202, raw
    # no false alarm (issue 18): a whole cluster stopping and starting again is legitimate traffic, so
    # whatever the restart made each layer refuse (late packets, DHCP, handshakes against a server still
    # starting) must open no incident in the SecOps record (the shippers' queues delivered by now)
    secops = cluster.group("secops")
    if secops:
        time.sleep(10)
        opened = [(e.get("rule"), e.get("host"), e.get("evidence")) for e in incidents(secops[0])
                  if e.get("kind") in ("incident_opened", "incident_escalated")
                  and float(e.get("first_seen") or 0) >= halted]  # type: ignore[arg-type]
        assert not opened, opened
