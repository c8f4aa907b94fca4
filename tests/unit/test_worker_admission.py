"""A worker admits work by the bytes of its decoded pixels: work that does not fit beside what runs is
refused (Busy) until it ends, and a task larger than the whole budget never runs."""
import pytest

from histo.worker.admission import Busy, MemoryBudget


def test_reserve_release_and_refusal() -> None:
    b = MemoryBudget(100)
    b.reserve(60)
    with pytest.raises(Busy):
        b.reserve(50)
    b.release(60)
    b.reserve(50)
    assert b.reserved == 50
    with pytest.raises(Busy, match="over this worker"):
        b.reserve(101)
    b.reserve(50)  # exactly full
    with pytest.raises(Busy, match="in use"):
        b.reserve(1)
    b.release(50)
    b.release(50)
    b.release(50)  # released more than reserved: never below zero
    assert b.reserved == 0
