"""Metadata values as tieto compares them: numbers as numbers, dates as dates.

Front matter (YAML) and JSONL ``meta`` give strings, numbers, booleans, dates
and lists. Each scalar is stored as one row of three comparable forms — text
``t``, number ``n`` and instant ``d`` (seconds since the epoch, UTC) — so that
``year>=2020`` compares numbers and ``published<2021-06-01`` compares dates,
whichever way the document wrote them. A list is one row per item (a list
matches if any item does); a mapping is flattened to dotted keys; null is the
same as a missing key.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?$")


@dataclass(frozen=True)
class Row:
    """One comparable value of one key."""

    t: str | None
    n: float | None
    d: int | None


def parse_number(text: str) -> float | None:
    """``text`` as a finite number, or None."""
    if not _NUMBER.match(text.strip()):
        return None
    value = float(text)
    return value if math.isfinite(value) else None


def parse_date(text: str) -> int | None:
    """An ISO 8601 date or date-time as seconds since the epoch (UTC when no zone), or None."""
    text = text.strip()
    if not _DATE.match(text):
        return None
    try:
        if len(text) == 10:
            moment = dt.datetime.combine(dt.date.fromisoformat(text), dt.time())
        else:
            moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return int(moment.timestamp())


def to_row(value: Any) -> Row | None:
    """The comparable forms of one scalar (None for null and for nested containers)."""
    if value is None or isinstance(value, dict | list | tuple):
        return None
    if isinstance(value, bool):
        return Row("true" if value else "false", None, None)
    if isinstance(value, int | float):
        if isinstance(value, float) and not math.isfinite(value):
            return Row(str(value), None, None)
        return Row(_number_text(value), float(value), None)
    if isinstance(value, dt.datetime | dt.date):
        value = value.isoformat()
    text = str(value)
    return Row(text, parse_number(text), parse_date(text))


def _number_text(value: int | float) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def rows(meta: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Row]]:
    """(key, row) for every scalar in ``meta``: list items each, mappings as dotted keys."""
    for key, value in meta.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            yield from rows(value, name + ".")
        elif isinstance(value, list | tuple):
            for item in value:
                if isinstance(item, Mapping):
                    yield from rows(item, name + ".")
                else:
                    row = to_row(item)
                    if row is not None:
                        yield name, row
        else:
            row = to_row(value)
            if row is not None:
                yield name, row
