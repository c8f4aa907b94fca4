"""The attack drills of issue 7 against the deployed cluster, one test per drill: a control that stops
holding fails `make deploy-test` (and the cluster stage of `make test`).

Why a subprocess: this suite runs under .venv-deploy (Ansible, PyYAML, pytest), which has none of the
app's packages; the drills need hvac, kazoo, Pillow and histo on the controller, so each one runs as
`.venv/bin/python attack/cluster_drills.py --only NAME --json FILE`, and the code that plays the
compromised machines runs inside them with their own /opt/histo/bin/python (through lxc-attach).
The drills print no secret, so their output is safe in a failure report."""
from __future__ import annotations

import json
import subprocess

import pytest

from .conftest import ROOT, Cluster

APP_PYTHON = ROOT / ".venv" / "bin" / "python"
SCRIPT = ROOT / "attack" / "cluster_drills.py"
# The drills, in the order `make attack` runs them (the disruptive one last); checked against --list.
DRILLS = ["eavesdrop", "stolen certificate", "compromised worker", "forged / replayed result", "used secret_id",
          "copied secret_id", "expired certificate", "revoked token", "flood", "Vault sealed"]


@pytest.fixture(scope="module")
def app_python(cluster: Cluster):
    if not APP_PYTHON.exists():
        pytest.skip("no .venv (make bootstrap): the drills need the app's packages on the controller")
    return str(APP_PYTHON)


def test_the_list_of_drills_is_complete(app_python):
    out = subprocess.run([app_python, str(SCRIPT), "--list"], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.split("\n")[:-1] == DRILLS


@pytest.mark.parametrize("drill", DRILLS)
def test_drill_holds(app_python, drill: str, tmp_path):
    report = tmp_path / "outcome.json"
    proc = subprocess.run([app_python, str(SCRIPT), "--only", drill, "--json", str(report)], capture_output=True,
                          text=True, timeout=600, cwd=ROOT)
    printed = proc.stdout.strip() + ("\n" + proc.stderr.strip()[-1500:] if proc.returncode else "")
    assert report.exists(), printed
    (outcome,) = json.loads(report.read_text())
    assert outcome["drill"] == drill, printed
    assert outcome["held"], printed
    assert "drill event recorded" in proc.stdout, f"not on the SecOps dashboard:\n{printed}"
