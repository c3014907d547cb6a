"""One fake monotonic clock for every clock seam in Runa's tests.

Every component takes its clock as a parameter: ``Callable[[], float]`` for seconds
(the service base, gilgul's policy, splinfer's streams and store, tieto's ingests …) and
``Callable[[], int]`` for nanoseconds (the splinter bus and the keeper). A FakeClock is the
first itself and hands out the second as ``ns``; it moves only when a test moves it, by
``advance`` or by the code under test calling ``sleep``. It keeps integer nanoseconds, so a
test stepping by milliseconds lands exactly on a TTL's boundary.
"""

from __future__ import annotations

_NS = 1_000_000_000


class FakeClock:
    """A clock that moves only when told to (monotonic or wall-clock seams alike)."""

    def __init__(self, start: float = 1000.0, *, tick: float = 0.0) -> None:
        """Start at ``start`` seconds; ``tick`` > 0 moves the clock that far after each read,
        for code that must see time pass between two reads (timestamps that differ)."""
        self._ns = round(start * _NS)
        self._tick_ns = round(tick * _NS)

    def __call__(self) -> float:
        """Seconds, as ``time.monotonic`` gives them."""
        return self._read() / _NS

    def now(self) -> float:
        """Seconds, for the test to look at: unlike a read by the code under test, never ticks."""
        return self._ns / _NS

    def ns(self) -> int:
        """Nanoseconds, as ``time.monotonic_ns`` gives them."""
        return self._read()

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass."""
        if seconds < 0:
            raise ValueError(f"a monotonic clock does not go back ({seconds} s)")
        self._ns += round(seconds * _NS)

    def sleep(self, seconds: float) -> None:
        """What ``time.sleep`` would do, at once: the time passes, nobody waits."""
        self.advance(max(seconds, 0.0))

    def _read(self) -> int:
        now = self._ns
        self._ns += self._tick_ns
        return now
