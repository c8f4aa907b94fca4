"""Token buckets and the authentication-failure throttle: refusals beside the legitimate path."""
import threading

import pytest

from histo.edge.ratelimit import AuthFailureTracker, RateLimiter


def test_token_bucket_refuses_past_burst_and_refills():
    now = [0.0]
    rl = RateLimiter(rate_per_s=2, burst=3, clock=lambda: now[0])
    assert [rl.check("a")[0] for _ in range(4)] == [True, True, True, False]
    ok, retry = rl.check("a")
    assert not ok and 0 < retry <= 0.5
    assert rl.check("b") == (True, 0.0)  # another key is unaffected
    now[0] += 0.5
    assert rl.check("a")[0]
    assert not rl.check("a")[0]


def test_a_cost_takes_that_many_tokens_and_never_more_than_the_burst():
    # every master counts the uploads it receives at the number of live masters
    now = [0.0]
    rl = RateLimiter(rate_per_s=2, burst=5, clock=lambda: now[0])
    assert [rl.check("a", cost=2)[0] for _ in range(3)] == [True, True, False]
    ok, retry = rl.check("a", cost=2)
    assert not ok and retry == pytest.approx(0.5)  # one token left, two needed, two a second
    assert rl.check("b", cost=99)[0]  # a cost over the burst is the burst: a key is never locked out
    assert not rl.check("b")[0]
    now[0] += 0.5
    assert rl.check("a", cost=2)[0]


def test_bucket_never_holds_more_than_the_burst():
    now = [0.0]
    rl = RateLimiter(rate_per_s=10, burst=2, clock=lambda: now[0])
    rl.check("a")
    now[0] += 3600  # a long quiet time refills to the burst, no further
    assert [rl.check("a")[0] for _ in range(3)] == [True, True, False]


def test_clock_going_backwards_grants_nothing():
    now = [100.0]
    rl = RateLimiter(rate_per_s=1, burst=1, clock=lambda: now[0])
    assert rl.check("a")[0]
    now[0] = 50.0
    assert not rl.check("a")[0]


def test_memory_is_bounded():
    rl = RateLimiter(rate_per_s=1, burst=1, max_keys=100)
    for i in range(1000):
        rl.check(f"10.0.{i // 256}.{i % 256}")
    assert len(rl) == 100


def test_limits_hold_under_threads():
    rl = RateLimiter(rate_per_s=0.001, burst=50)
    allowed = []

    def go():
        for _ in range(100):
            allowed.append(rl.check("shared")[0])
    threads = [threading.Thread(target=go) for _ in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert sum(allowed) == 50


def test_bad_parameters_refused():
    with pytest.raises(ValueError):
        RateLimiter(rate_per_s=0, burst=1)
    with pytest.raises(ValueError):
        RateLimiter(rate_per_s=1, burst=0)
    with pytest.raises(ValueError):
        AuthFailureTracker(threshold=0, window_s=1, block_s=1)


def test_auth_failures_block_one_address_for_a_while():
    now = [0.0]
    t = AuthFailureTracker(threshold=3, window_s=10, block_s=30, clock=lambda: now[0])
    assert [t.failure("x") for _ in range(3)] == [False, False, True]  # True once: raise one SecOps event
    assert t.blocked("x") == 30 and t.blocked("y") == 0
    assert t.failure("x") is False  # already blocked: no second event
    now[0] += 31
    assert t.blocked("x") == 0
    assert [t.failure("x") for _ in range(3)] == [False, False, True]  # a fresh count after the block


def test_failures_outside_the_window_do_not_count():
    now = [0.0]
    t = AuthFailureTracker(threshold=3, window_s=10, block_s=30, clock=lambda: now[0])
    for _ in range(10):
        assert not t.failure("x")
        now[0] += 6  # never 3 within 10 s
    assert t.blocked("x") == 0


def test_tracker_memory_is_bounded_and_blocks_survive_count_eviction():
    now = [0.0]
    t = AuthFailureTracker(threshold=2, window_s=10, block_s=30, clock=lambda: now[0], max_keys=50)
    t.failure("attacker")
    assert t.failure("attacker")
    for i in range(1000):
        t.failure(f"spray-{i}")
    assert len(t._fails) <= 50 and len(t._blocked) <= 50
    assert t.blocked("attacker") > 0
