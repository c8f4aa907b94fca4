"""Token buckets per key (principal or address), with bounded memory."""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Callable

MAX_KEYS = 10_000


class RateLimiter:
    def __init__(self, rate_per_s: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate, self.burst, self.clock = rate_per_s, burst, clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def check(self, key: str) -> tuple[bool, float]:
        """(allowed, seconds until a request would be allowed)."""
        now = self.clock()
        with self._lock:
            tokens, last = self._buckets.pop(key, (float(self.burst), now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            allowed = tokens >= 1
            if allowed:
                tokens -= 1
            self._buckets[key] = (tokens, now)
            while len(self._buckets) > MAX_KEYS:
                self._buckets.popitem(last=False)
        return allowed, 0.0 if allowed else (1 - tokens) / self.rate


class AuthFailureTracker:
    """Counts authentication failures per address; past the threshold the address is blocked a while."""

    def __init__(self, threshold: int, window_s: float, block_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.threshold, self.window, self.block, self.clock = threshold, window_s, block_s, clock
        self._fails: OrderedDict[str, list[float]] = OrderedDict()
        self._blocked: dict[str, float] = {}
        self._lock = threading.Lock()

    def failure(self, addr: str) -> bool:
        """Record a failure; True exactly when this one crosses the threshold."""
        now = self.clock()
        with self._lock:
            times = [t for t in self._fails.pop(addr, []) if now - t < self.window] + [now]
            self._fails[addr] = times
            while len(self._fails) > MAX_KEYS:
                self._fails.popitem(last=False)
            if len(times) >= self.threshold and self._blocked.get(addr, 0) <= now:
                self._blocked[addr] = now + self.block
                return True
        return False

    def blocked(self, addr: str) -> float:
        left = self._blocked.get(addr, 0) - self.clock()
        return left if left > 0 else 0.0
