"""The attack drills of `make attack` against a local cluster (attack/local.py), run against the test
cluster: a regression in any control fails CI."""
from attack.local import run_all


def test_every_drill_holds(cluster, tmp_path):
    results = run_all(cluster, tmp_path)
    failed = [r.line() for r in results if not r.held]
    assert len(results) == 11 and not failed, failed
