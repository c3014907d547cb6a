"""runa.testing.FakeClock: the one clock tests hand to every clock seam."""

from __future__ import annotations

import pytest

from runa.testing import FakeClock


def test_seconds_and_nanoseconds_are_one_time_that_moves_only_when_told() -> None:
    clock = FakeClock(1.0)
    assert (clock(), clock.now(), clock.ns()) == (1.0, 1.0, 1_000_000_000)
    clock.advance(0.150)
    assert (clock(), clock.ns()) == (1.15, 1_150_000_000)
    clock.sleep(2)
    assert clock.ns() == 3_150_000_000


def test_milliseconds_add_up_exactly() -> None:
    clock = FakeClock(0.0)
    for _ in range(1000):
        clock.advance(0.001)
    assert clock.ns() == 1_000_000_000 and clock() == 1.0


def test_a_ticking_clock_moves_at_every_read_by_the_code_but_not_when_the_test_looks() -> None:
    clock = FakeClock(10.0, tick=1.0)
    assert [clock(), clock(), clock.ns()] == [10.0, 11.0, 12_000_000_000]
    assert clock.now() == clock.now() == 13.0


def test_it_never_goes_back() -> None:
    with pytest.raises(ValueError, match="does not go back"):
        FakeClock().advance(-1)
