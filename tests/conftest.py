"""Shared by every test tier (unit, integration, deploy, teardown). Imports nothing but pytest:
tests/deploy and tests/teardown run in .venv-deploy, where the histo package is not installed."""
from __future__ import annotations

import pytest


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `disruptive` (they kill, stop or seal parts of a cluster that the session shares)
    run after every other test, in their collected order; the others keep theirs. trylast: after
    pytest's own reordering by fixture scope, so nothing moves them back."""
    calm = [item for item in items if item.get_closest_marker("disruptive") is None]
    disruptive = [item for item in items if item.get_closest_marker("disruptive") is not None]
    items[:] = calm + disruptive
