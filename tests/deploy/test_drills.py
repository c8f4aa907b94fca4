"""The attack drills against the deployed cluster, one test per drill: a control that stops holding
fails `make deploy-test` (and the cluster stage of `make test`).

Why a subprocess: this suite runs under .venv-deploy (Ansible, PyYAML, pytest), which has none of the
app's packages; the drills need hvac, kazoo, Pillow and histo on the controller, so each one runs as
`.venv/bin/python -m attack --only NAME --json FILE` from the repository root, and the code that plays
the compromised machines runs inside them with their own /opt/histo/bin/python (through lxc-attach).
The drills print no secret, so their output is safe in a failure report."""
from __future__ import annotations

import json
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
from typing import Callable

import pytest

from attack.deployed import DeployedCluster, Machine

from .api import request, upload, wait_ready

# The drills, in the order `make attack` runs them (the disruptive one last); checked against --list.
DRILLS = ["eavesdrop", "stolen certificate", "compromised worker", "forged / replayed result", "ssh lateral",
          "used secret_id", "copied secret_id", "expired certificate", "revoked token",
          "certificate without its address", "revoked certificate", "provisioner token", "flood", "connection flood",
          "Vault sealed"]


@pytest.fixture(scope="module")
def attack(cluster: DeployedCluster):
    """The command line of `python -m attack` with the app's virtualenv, and where to run it."""
    app_python = cluster.root / ".venv" / "bin" / "python"
    if not app_python.exists():
        pytest.skip("no .venv (make bootstrap): the drills need the app's packages on the controller")
    return [str(app_python), "-m", "attack"], cluster.root


def test_the_list_of_drills_is_complete(attack):
    argv, cwd = attack
    out = subprocess.run([*argv, "--list"], capture_output=True, text=True, timeout=60, check=True, cwd=cwd)
    assert out.stdout.split("\n")[:-1] == DRILLS


@pytest.mark.parametrize("drill", DRILLS)
def test_drill_holds(attack, drill: str, tmp_path):
    argv, cwd = attack
    report = tmp_path / "outcome.json"
    proc = subprocess.run([*argv, "--only", drill, "--json", str(report)], capture_output=True, text=True,
                          timeout=600, cwd=cwd)
    printed = proc.stdout.strip() + ("\n" + proc.stderr.strip()[-1500:] if proc.returncode else "")
    assert report.exists(), printed
    (outcome,) = json.loads(report.read_text())
    assert outcome["drill"] == drill, printed
    assert outcome["held"], printed
    assert "drill event recorded" in proc.stdout, f"not on the SecOps dashboard:\n{printed}"


# -- OpenBao raft: the active node killed during uploads (issue 16 item 6) ----------------------------

def _vault_health(cluster: DeployedCluster, node: Machine) -> int | None:
    """sys/health's status code from the controller: 200 active, 429 standby, 503 sealed; None: no answer."""
    ctx = ssl.create_default_context(cafile=str(cluster.state / "vault-tls" / "ca.pem"))
    url = f"https://{node.address}:{cluster.ports['vault']}/v1/sys/health"
    try:
        with urllib.request.urlopen(url, context=ctx, timeout=3) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return None


def _until(pred: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out ({timeout:.0f} s) waiting for {what}")


def test_active_vault_node_killed_during_uploads(cluster: DeployedCluster) -> None:
    """The active OpenBao node is killed (SIGKILL) while uploads run: every upload is accepted and every
    job completes, the masters are ready again; systemd starts the node again and it rejoins raft and
    unseals itself (static seal), without a key typed."""
    nodes = cluster.group("vault")
    if len(nodes) < 3:
        pytest.skip(f"profile {cluster.profile} has {len(nodes)} Vault node(s); the drill needs a raft cluster")
    wait_ready(cluster)
    active = [n for n in nodes if _vault_health(cluster, n) == 200]
    assert len(active) == 1, {n.name: _vault_health(cluster, n) for n in nodes}
    victim = active[0]
    token = cluster.env["HISTO_TOKEN_UPLOADER"]
    results: list[tuple[int, bytes]] = []
    stop = threading.Event()

    def uploads() -> None:
        while not stop.is_set() and len(results) < 80:
            results.append(upload(cluster, token))

    loader = threading.Thread(target=uploads, daemon=True)
    loader.start()
    _until(lambda: len(results) >= 3, 120, "the first uploads")
    victim.run("systemctl kill --signal=SIGKILL openbao")  # Restart=on-failure brings it back
    killed_at = len(results)
    _until(lambda: any(_vault_health(cluster, n) == 200 for n in nodes if n is not victim), 60, "a new active node")
    _until(lambda: len(results) >= killed_at + 5, 120, "uploads after the election")
    stop.set()
    loader.join(120)
    refused = [(s, raw[:200]) for s, raw in results if s != 202]
    assert not refused, refused
    def state(job_id: str) -> str:
        return str(json.loads(request(cluster, "GET", f"/api/v1/jobs/{job_id}", token)[1]).get("state"))

    for _s, raw in results:
        job_id = json.loads(raw)["id"]
        _until(lambda j=job_id: state(j) in ("done", "failed"), 120, f"job {job_id}")  # type: ignore[misc]
        assert state(job_id) == "done", job_id
    wait_ready(cluster, timeout=60)
    # the killed node is back: unsealed by itself and a standby of the new active node
    _until(lambda: _vault_health(cluster, victim) == 429, 90, f"{victim.name} back as an unsealed standby")
