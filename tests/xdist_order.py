"""The scheduler of `pytest -n N --dist loadfile` for this suite (tests/conftest.py hands it to
pytest-xdist): xdist's loadfile, which sends each file's tests to one worker (so a module's fixture,
such as its own cluster, starts once), except that the order tests/conftest.py gives the tests holds
on every worker: no test runs on a worker after a `disruptive` one there, except a `disruptive` or
`containing` one, and so on. Each worker has its own session cluster (a session per process), so
that is all the ordering rule needs.

xdist's loadfile alone would break it twice: it groups a file's tests into one unit wherever the
ordering put them, and it sends the units largest first, so a worker could run a disruptive file
and then a calm one on the same cluster. Here a unit is a run of one file's tests that are next to
each other in the collected order (a file whose tests are all calm, or all disruptive, as every one
is today, stays one unit), and units go out in that order: the calm ones first, the disruptive
ones once no calm one is left to hand out. The controller cannot see markers (it collects nothing;
the workers send node ids in their collected order), so the order is what it goes by.

Imported only when xdist runs: tests/deploy and tests/teardown run where xdist is not installed."""
from __future__ import annotations

import pytest
from xdist.remote import Producer
from xdist.scheduler import LoadFileScheduling


class OrderedLoadFile(LoadFileScheduling):  # type: ignore[misc]  # xdist is untyped: its classes are Any
    def __init__(self, config: pytest.Config, log: Producer | None = None) -> None:
        super().__init__(config, log)
        # LoadScopeScheduling.schedule sends the units largest first unless told (--no-loadscope-reorder);
        # this scheduler is the one reader of the option
        config.option.loadscopereorder = False
        self._unit: dict[str, str] = {}  # node id -> its unit

    def schedule(self) -> None:
        if self.collection is None and self.collection_is_completed and self.registered_collections:
            # LoadScopeScheduling.schedule checks that every worker collected the same list and groups
            # it by _split_scope: the first worker's list is the list
            runs: dict[str, int] = {}
            last = None
            for nodeid in next(iter(self.registered_collections.values())):
                path = nodeid.split("::", 1)[0]
                if path != last:
                    runs[path] = runs.get(path, 0) + 1
                    last = path
                self._unit[nodeid] = path if runs[path] == 1 else f"{path} (run {runs[path]})"
        super().schedule()

    def _split_scope(self, nodeid: str) -> str:
        return self._unit.get(nodeid) or super()._split_scope(nodeid)
