"""Waiting for a condition in tests, drills and benchmarks: poll, and fail with what was awaited."""
from __future__ import annotations

import time
from typing import Callable


def wait_until(pred: Callable[[], object], timeout: float, what: str, step: float = 0.2) -> None:
    """Poll `pred` every `step` seconds until it is truthy; AssertionError naming `what` after `timeout`."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return
        time.sleep(step)
    raise AssertionError(f"timed out waiting for {what}")
