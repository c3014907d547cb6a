"""``--since WHEN``: how far back a command looks (``runa audit``, ``runa memory list``)."""

from __future__ import annotations

import math
import re
from datetime import datetime

from runa.errors import UsageError

_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
#: What ``--since`` takes, as its help says it.
FORMS = "30s, 15m, 2h, 1d ago, an ISO date or date-time (local time unless it names a zone), " \
    "or @EPOCH-SECONDS"


def parse_since(text: str | None, now: float) -> float | None:
    """Unix seconds of ``text`` (None: no limit); a usage error naming the forms taken."""
    if text is None:
        return None
    if text.startswith("@"):
        try:
            stamp = float(text[1:])
            if math.isfinite(stamp):
                return stamp
        except ValueError:
            pass
    elif match := _RELATIVE.match(text):
        return now - float(match.group(1)) * _UNITS[match.group(2)]
    else:
        try:
            return datetime.fromisoformat(text).timestamp()
        except ValueError:
            pass
    raise UsageError(f"--since {text!r} is not 30s/15m/2h/1d, an ISO date-time "
                     "or @EPOCH-SECONDS")
