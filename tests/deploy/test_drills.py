"""The attack drills against the deployed cluster, one test per drill: a control that stops holding
fails `make deploy-test` (and the cluster stage of `make test`).

Why a subprocess: this suite runs under .venv-deploy (Ansible, PyYAML, pytest), which has none of the
app's packages; the drills need hvac, kazoo, Pillow and histo on the controller, so each one runs as
`.venv/bin/python -m attack --only NAME --json FILE` from the repository root, and the code that plays
the compromised machines runs inside them with their own /opt/histo/bin/python (through lxc-attach).
The drills print no secret, so their output is safe in a failure report."""
from __future__ import annotations

import json
import subprocess

import pytest

from attack.deployed import DeployedCluster

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
