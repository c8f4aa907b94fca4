"""A worker's memory budget: work is admitted by the bytes its decoded pixels take, never by count.

A task reserves its peak (compute/work.py PEAK_BYTES_PER_PIXEL) while it runs; between the two steps
the prepared image stays held (HELD_BYTES_PER_PIXEL) until its table arrives or it is evicted, oldest
first, to make room. Work that would not fit even then is refused, and the scheduler places it on
another worker."""
from __future__ import annotations

from collections import OrderedDict
from typing import Generic, TypeVar

V = TypeVar("V")
Key = tuple[str, int]


class Busy(Exception):
    """This worker cannot take that much work now."""


class MemoryBudget(Generic[V]):
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.reserved = 0  # bytes of tasks running now
        self._held: OrderedDict[Key, tuple[V, int]] = OrderedDict()
        self._held_bytes = 0

    @property
    def used(self) -> int:
        return self.reserved + self._held_bytes

    def reserve(self, cost: int) -> None:
        """Take `cost` bytes for a running task, evicting held images if that makes it fit; Busy else."""
        if cost > self.limit:
            raise Busy(f"a task of {cost >> 20} MiB is over this worker's {self.limit >> 20} MiB budget")
        while self.used + cost > self.limit and self._held:
            _, (_, size) = self._held.popitem(last=False)
            self._held_bytes -= size
        if self.used + cost > self.limit:
            raise Busy(f"{self.used >> 20} of {self.limit >> 20} MiB in use; a task of {cost >> 20} MiB waits")
        self.reserved += cost

    def release(self, cost: int) -> None:
        self.reserved = max(0, self.reserved - cost)

    def hold(self, key: Key, value: V, size: int) -> None:
        """Keep a prepared image for its second step (counted in the budget until taken or evicted)."""
        self.take(key)
        self._held[key] = (value, size)
        self._held_bytes += size

    def take(self, key: Key) -> V | None:
        item = self._held.pop(key, None)
        if item is None:
            return None
        self._held_bytes -= item[1]
        return item[0]
