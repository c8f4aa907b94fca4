"""Shared by every test tier (unit, integration, deploy, teardown). Imports nothing but pytest:
tests/deploy and tests/teardown run in .venv-deploy, where the histo package is not installed."""
from __future__ import annotations

import pytest


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `disruptive` (they kill, stop or seal parts of a cluster that the session shares)
    run after every other test, in their collected order; the others keep theirs; tests marked
    `containing` (they leave a machine quarantined) after those, and tests marked `audit` (they judge
    the whole run, tests/deploy/test_zz_false_alarms.py) at the very end. trylast: after pytest's own
    reordering by fixture scope, so nothing moves them back. In a pytest-xdist worker, modules marked
    `long` come first within their group: the workers are handed files in this order
    (tests/xdist_order.py), and a long one handed out last would run alone at the end."""
    long_first = hasattr(config, "workerinput")  # set in pytest-xdist's workers only

    def rank(item: pytest.Item) -> tuple[int, int]:
        group = (3 if item.get_closest_marker("audit") else 2 if item.get_closest_marker("containing")
                 else 1 if item.get_closest_marker("disruptive") else 0)
        return group, 0 if long_first and item.get_closest_marker("long") else 1
    items[:] = sorted(items, key=rank)  # sorted() is stable: each group keeps its order


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """Under pytest-xdist (`make test-python`: -n with --dist loadfile), each worker is a session with
    its own session cluster, and the order above must hold on each: tests/xdist_order.py. Other --dist
    modes are xdist's own, which do not keep it."""
    if config.getoption("dist", None) != "loadfile":
        return None
    from .xdist_order import OrderedLoadFile
    return OrderedLoadFile(config, log)
