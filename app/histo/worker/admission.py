"""A worker's memory budget: work is admitted by the bytes its decoded pixels take, never by count.

A task reserves its peak (compute/work.py PEAK_BYTES_PER_PIXEL) while it runs and gives it back when
it ends; nothing is held between tasks. Work that would not fit is refused, and the scheduler places it
on another worker."""
from __future__ import annotations


class Busy(Exception):
    """This worker cannot take that much work now."""


class MemoryBudget:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.reserved = 0  # bytes of tasks running now

    def reserve(self, cost: int) -> None:
        """Take `cost` bytes for a running task; Busy if they do not fit."""
        if cost > self.limit:
            raise Busy(f"a task of {cost >> 20} MiB is over this worker's {self.limit >> 20} MiB budget")
        if self.reserved + cost > self.limit:
            raise Busy(f"{self.reserved >> 20} of {self.limit >> 20} MiB in use; a task of {cost >> 20} MiB waits")
        self.reserved += cost

    def release(self, cost: int) -> None:
        self.reserved = max(0, self.reserved - cost)
