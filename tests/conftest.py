"""Shared by every test tier (unit, integration, deploy, teardown). Imports nothing but pytest:
tests/deploy and tests/teardown run in .venv-deploy, where the histo package is not installed."""
from __future__ import annotations

import pytest


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `disruptive` (they kill, stop or seal parts of a cluster that the session shares)
    run after every other test, in their collected order; the others keep theirs; tests marked
    `containing` (they leave a machine quarantined) after those. trylast: after pytest's own
    reordering by fixture scope, so nothing moves them back."""
    def rank(item: pytest.Item) -> int:
        return 2 if item.get_closest_marker("containing") else 1 if item.get_closest_marker("disruptive") else 0
    items[:] = sorted(items, key=rank)  # sorted() is stable: each group keeps its order
