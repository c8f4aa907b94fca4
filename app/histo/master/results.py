"""Finished results held by the master that ran the job (pixel data never goes to ZooKeeper)."""
from __future__ import annotations

import time
from collections import OrderedDict

from ..compute.equalize import Result


class ResultStore:
    def __init__(self, retention: float, max_items: int = 200) -> None:
        self.retention, self.max_items = retention, max_items
        self._items: OrderedDict[str, tuple[float, Result, bytes | None]] = OrderedDict()

    def put(self, job_id: str, result: Result) -> None:
        self._items[job_id] = (time.time(), result, None)
        self._prune()

    def get(self, job_id: str) -> Result | None:
        self._prune()
        item = self._items.get(job_id)
        return item[1] if item else None

    def drop(self, job_id: str) -> bool:
        """Forget a result (its job was deleted); True if it was held here."""
        return self._items.pop(job_id, None) is not None

    def plot(self, job_id: str, render) -> bytes | None:
        """The histogram plot, drawn on first request and kept with the result."""
        item = self._items.get(job_id)
        if item is None:
            return None
        if item[2] is None:
            item = (item[0], item[1], render(item[1]))
            self._items[job_id] = item
        return item[2]

    def _prune(self) -> None:
        cutoff = time.time() - self.retention
        while self._items and (len(self._items) > self.max_items or next(iter(self._items.values()))[0] < cutoff):
            self._items.popitem(last=False)
