"""In-memory token buckets per key (principal or address) and a throttle for repeated
authentication failures. Memory is bounded: the least recently seen keys are evicted first."""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Callable

MAX_KEYS = 10_000


class RateLimiter:
    """`burst` requests at once, refilled at `rate_per_s`."""

    def __init__(self, rate_per_s: float, burst: int, clock: Callable[[], float] = time.monotonic,
                 max_keys: int = MAX_KEYS) -> None:
        if rate_per_s <= 0 or burst < 1:
            raise ValueError("rate_per_s must be > 0 and burst >= 1")
        self.rate, self.burst, self.clock, self.max_keys = float(rate_per_s), int(burst), clock, max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, last seen)
        self._lock = threading.Lock()

    def check(self, key: str, cost: float = 1.0) -> tuple[bool, float]:
        """Take `cost` tokens (at most the burst) for `key`: (allowed, seconds until it would be allowed)."""
        cost = min(float(self.burst), max(1.0, cost))
        now = self.clock()
        with self._lock:
            tokens, last = self._buckets.pop(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + max(0.0, now - last) * self.rate)
            allowed = tokens >= cost
            if allowed:
                tokens -= cost
            self._buckets[key] = (tokens, now)  # most recently seen last
            while len(self._buckets) > self.max_keys:
                # evicting a key only forgets its debt; a full bucket is what a new key gets anyway
                self._buckets.popitem(last=False)
        return allowed, 0.0 if allowed else (cost - tokens) / self.rate

    def __len__(self) -> int:
        return len(self._buckets)


class AuthFailureTracker:
    """Counts authentication failures per address in a sliding window; at `threshold` failures the
    address is blocked for `block_s` seconds."""

    def __init__(self, threshold: int, window_s: float, block_s: float,
                 clock: Callable[[], float] = time.monotonic, max_keys: int = MAX_KEYS) -> None:
        if threshold < 1:
            raise ValueError("threshold must be >= 1")
        self.threshold, self.window, self.block, self.clock = threshold, window_s, block_s, clock
        self.max_keys = max_keys
        self._fails: OrderedDict[str, list[float]] = OrderedDict()
        # blocks are kept apart from the counts so that evicting counts never lifts a block early
        self._blocked: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def failure(self, addr: str) -> bool:
        """Record a failure; True exactly when this one crosses the threshold (emit one SecOps event)."""
        now = self.clock()
        with self._lock:
            times = [t for t in self._fails.pop(addr, ()) if now - t < self.window]
            times.append(now)
            self._fails[addr] = times[-self.threshold:]  # more than the threshold is never needed
            while len(self._fails) > self.max_keys:
                self._fails.popitem(last=False)
            if len(times) < self.threshold or self._blocked.get(addr, 0.0) > now:
                return False
            self._fails.pop(addr, None)  # a fresh count once the block ends
            self._blocked.pop(addr, None)
            self._blocked[addr] = now + self.block
            self._prune_blocks(now)
            return True

    def blocked(self, addr: str) -> float:
        """Seconds this address stays blocked (0.0 when it is not)."""
        now = self.clock()
        with self._lock:
            until = self._blocked.get(addr)
            if until is None:
                return 0.0
            if until <= now:
                del self._blocked[addr]
                return 0.0
            return until - now

    def _prune_blocks(self, now: float) -> None:
        for addr in [a for a, until in self._blocked.items() if until <= now]:
            del self._blocked[addr]
        while len(self._blocked) > self.max_keys:
            self._blocked.popitem(last=False)  # the oldest block goes first
