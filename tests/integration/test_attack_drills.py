"""The attack drills of `make attack`, run against the test cluster: a regression in any control
fails CI. (The drills against deployed machines need `make up`, not built yet.) Marked disruptive:
the drills seal Vault and throttle addresses of the shared cluster, so tests/conftest.py runs them last."""
import importlib.util
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.disruptive

ROOT = Path(__file__).resolve().parents[2]


def _drills():
    spec = importlib.util.spec_from_file_location("histo_drills", ROOT / "attack" / "drills.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["histo_drills"] = module  # dataclasses look their module up while being created
    spec.loader.exec_module(module)
    return module


def test_every_drill_holds(cluster, tmp_path):
    results = _drills().run_all(cluster, tmp_path)
    failed = [r.line() for r in results if not r.held]
    assert len(results) == 11 and not failed, failed
