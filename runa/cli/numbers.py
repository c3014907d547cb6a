"""Range checks for numeric command-line options.

argparse turns ``--interval nan`` or ``--ttl 99999999999999999999`` into a number happily; used
as given they fail much later (``time.sleep(-1)``, a 64-bit field overflowing) with a traceback.
Each command checks its numbers here first, so any value out of range is one usage error
naming the option and its range.
"""

from __future__ import annotations

import math
from typing import TypeVar

from runa.errors import UsageError

Number = TypeVar("Number", int, float)


def in_range(option: str, value: Number, low: Number, high: Number | None = None,
             unit: str = "") -> Number:
    """``value`` if it is a finite number from ``low`` to ``high`` (no upper bound: None)."""
    if math.isfinite(value) and low <= value and (high is None or value <= high):
        return value
    allowed = f"at least {low}" if high is None else f"from {low} to {high}"
    raise UsageError(f"{option} {value}: must be {allowed}{' ' + unit if unit else ''}")


def timeout_seconds(value: float) -> float:
    """``--timeout``: how long a command waits for a service (a request lives a day at most)."""
    return in_range("--timeout", value, 0.1, 86400, "seconds")
