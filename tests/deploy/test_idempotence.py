"""A second provisioning run changes nothing (changed=0 on every machine), and when `make provision`
returns the cluster accepts an upload at once (it waits for live members, as `make up` does)."""
from __future__ import annotations

import os
import re
import subprocess

import pytest

from attack.deployed import DeployedCluster

from .api import upload


@pytest.mark.skipif(os.environ.get("HISTO_DEPLOY_SKIP_REPROVISION") == "1", reason="HISTO_DEPLOY_SKIP_REPROVISION=1")
def test_second_provision_changes_nothing(cluster: DeployedCluster):
    env = dict(os.environ, HISTO_PROFILE=cluster.profile)
    proc = subprocess.run(["make", "-s", "provision"], cwd=cluster.root, env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    recap = re.findall(r"^(\S+)\s+: ok=\d+\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", proc.stdout, re.M)
    assert {name for name, *_ in recap} == set(cluster.machines), proc.stdout[-2000:]
    changed = {name: int(c) for name, c, _u, _f in recap if int(c)}
    assert not changed, f"changed on a second run: {changed}\n" + proc.stdout[-4000:]
    token = cluster.env.get("HISTO_TOKEN_UPLOADER")
    if token:
        status, raw = upload(cluster, token)
        assert status == 202, raw
