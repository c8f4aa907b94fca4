"""The CLI's retry rule (client/http.py): what a master asked to be asked later, or a connection
refused before anything was sent, is sent again within the deadline; nothing else is."""
from __future__ import annotations

from typing import Callable

import pytest

from histo.client.http import REFUSED_WAIT, RETRY_AFTER_CAP, ApiError, retrying


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def sleep(self, s: float) -> None:
        self.slept.append(s)
        self.now += s


def failing(errors: list[ApiError], result: str = "ok") -> tuple[Callable[[], str], list[int]]:
    calls: list[int] = []

    def fn() -> str:
        calls.append(1)
        if errors:
            raise errors.pop(0)
        return result
    return fn, calls


def test_a_503_with_retry_after_and_a_refused_connection_are_asked_again() -> None:
    clock = Clock()
    fn, calls = failing([ApiError(503, "vault away", retry_after=5), ApiError(0, "refused", refused=True),
                         ApiError(503, "long", retry_after=600)])
    assert retrying(fn, deadline=100, sleep=clock.sleep, clock=lambda: clock.now) == "ok"
    assert len(calls) == 4 and clock.slept == [5, REFUSED_WAIT, RETRY_AFTER_CAP]


@pytest.mark.parametrize("error", [ApiError(400, "bad image"), ApiError(401, "expired token"),
                                   ApiError(503, "no Retry-After"), ApiError(429, "slow down", retry_after=1),
                                   ApiError(0, "reset mid-upload: it may have been accepted")])
def test_anything_else_is_not_sent_again(error: ApiError) -> None:
    clock = Clock()
    fn, calls = failing([error])
    with pytest.raises(ApiError) as raised:
        retrying(fn, deadline=100, sleep=clock.sleep, clock=lambda: clock.now)
    assert raised.value is error and len(calls) == 1 and clock.slept == []


def test_a_read_is_asked_again_after_any_failure_to_reach_a_master() -> None:
    clock = Clock()
    fn, calls = failing([ApiError(0, "connection reset")])
    assert retrying(fn, deadline=100, idempotent=True, sleep=clock.sleep, clock=lambda: clock.now) == "ok"
    assert len(calls) == 2


def test_the_deadline_ends_the_retries_with_the_last_error() -> None:
    clock = Clock()
    errors = [ApiError(503, f"away {i}", retry_after=10) for i in range(20)]
    fn, calls = failing(errors)
    with pytest.raises(ApiError, match="away 3"):
        retrying(fn, deadline=35, sleep=clock.sleep, clock=lambda: clock.now)
    assert clock.now <= 35 and len(calls) == 4
