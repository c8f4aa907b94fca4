"""A worker admits work by the bytes of its decoded pixels: held images are evicted oldest first to
make room, work that still does not fit is refused (Busy), and a task larger than the whole budget
never runs."""
import pytest

from histo.worker.admission import Busy, MemoryBudget


def test_reserve_release_and_refusal() -> None:
    b: MemoryBudget[str] = MemoryBudget(100)
    b.reserve(60)
    with pytest.raises(Busy):
        b.reserve(50)
    b.release(60)
    b.reserve(50)
    assert b.used == 50
    with pytest.raises(Busy, match="over this worker"):
        b.reserve(101)


def test_held_images_count_and_are_evicted_oldest_first_for_running_work() -> None:
    b: MemoryBudget[str] = MemoryBudget(100)
    b.hold(("j1", 0), "first", 40)
    b.hold(("j2", 0), "second", 40)
    assert b.used == 80
    b.reserve(50)  # evicts j1 only
    assert b.take(("j1", 0)) is None and b.take(("j2", 0)) == "second"
    assert b.used == 50 and b.take(("j2", 0)) is None


def test_a_held_image_taken_back_frees_its_bytes() -> None:
    b: MemoryBudget[str] = MemoryBudget(100)
    b.hold(("j", 0), "img", 30)
    b.hold(("j", 0), "img2", 30)  # held again: counted once
    assert b.used == 30 and b.take(("j", 0)) == "img2" and b.used == 0
