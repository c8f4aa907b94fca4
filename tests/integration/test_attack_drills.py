"""The attack drills of `make attack` against a local cluster (attack/local.py), run against the test
cluster: a regression in any control fails CI. Marked disruptive: the drills seal Vault and throttle
addresses of the shared cluster, so tests/conftest.py runs them last."""
import pytest

from attack.local import run_all

pytestmark = pytest.mark.disruptive


def test_every_drill_holds(cluster, tmp_path):
    results = run_all(cluster, tmp_path)
    failed = [r.line() for r in results if not r.held]
    assert len(results) == 21 and not failed, failed
