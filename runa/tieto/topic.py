"""A topic's settings: its name, the embedding model it was built with, its filterable keys.

Filterable keys are declared per topic (``runa ingest --filterable year:integer``)
and become sqlite-vec metadata columns, so the nearest-neighbour scan itself
skips rows that do not match. vec0 metadata columns hold exactly one non-null
value per row, so a declared key is single-valued: each column has a ``has``
flag beside it (a missing key never matches), and a list value is an error at
ingest. Keys that are not declared are still filterable, through the metadata
table (see runa.tieto.filters).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from runa.protocol.names import topic_name_problem
from runa.tieto.errors import TopicError
from runa.tieto.values import parse_date, parse_number

_KEY = re.compile(r"^[^\s<>=!,()'\"]{1,64}$")

#: Declared key type → vec0 metadata column type.
COLUMN_TYPES = {
    "integer": "integer",
    "float": "float",
    "text": "text",
    "date": "integer",  # seconds since the epoch, UTC
    "boolean": "boolean",
}
_PLACEHOLDER: dict[str, Any] = {"integer": 0, "float": 0.0, "text": "", "date": 0,
                                "boolean": False}


def check_topic_name(name: str) -> str:
    """``name`` if it can name a topic (the rule of ``runa.protocol.names``), else TopicError."""
    problem = topic_name_problem(name)
    if problem is not None:
        raise TopicError(problem)
    return name


class DeclaredValueError(ValueError):
    """A value that does not fit its declared key's type; ``key`` names the key."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


@dataclass(frozen=True)
class DeclaredKey:
    """A filterable key stored as a vec0 metadata column ``m<i>`` with flag ``h<i>``."""

    key: str
    type: str
    index: int

    @property
    def column(self) -> str:
        return f"m{self.index}"

    @property
    def flag(self) -> str:
        return f"h{self.index}"

    def column_value(self, value: Any) -> Any:
        """``value`` as this column stores it; DeclaredValueError saying why it does not fit."""
        if isinstance(value, list | tuple):
            raise DeclaredValueError(self.key,
                f"key {self.key!r} is declared filterable ({self.type}) and takes one value, "
                f"not a list; leave it undeclared to filter on any item"
            )
        if isinstance(value, dict):
            raise DeclaredValueError(self.key,
                                     f"key {self.key!r} is declared {self.type}, not a mapping")
        converted = _convert(self.type, value)
        if converted is None:
            raise DeclaredValueError(
                self.key, f"key {self.key!r} is declared {self.type}; {value!r} is not one")
        return converted

    def placeholder(self) -> Any:
        return _PLACEHOLDER[self.type]


def _convert(kind: str, value: Any) -> Any:
    if kind == "boolean":
        if isinstance(value, bool):
            return value
        lowered = str(value).strip().lower()
        return {"true": True, "false": False}.get(lowered)
    if isinstance(value, bool):
        return None
    if kind == "text":
        return value if isinstance(value, str) else (
            str(value) if isinstance(value, int | float) else None
        )
    if kind in ("integer", "float"):
        number = float(value) if isinstance(value, int | float) else parse_number(str(value))
        if number is None:
            return None
        if kind == "integer":
            return int(number) if number.is_integer() else None
        return number
    if kind == "date":
        return parse_date(str(value)) if isinstance(value, str) else None
    raise AssertionError(kind)


@dataclass(frozen=True)
class TopicConfig:
    """What a topic's index was built with; stored inside the index file itself."""

    name: str
    model_id: str
    dim: int
    declared: tuple[DeclaredKey, ...] = field(default_factory=tuple)

    def declared_key(self, key: str) -> DeclaredKey | None:
        for entry in self.declared:
            if entry.key == key:
                return entry
        return None

    def declared_values(self, meta: Mapping[str, Any]) -> list[Any]:
        """Column values of ``meta`` for every declared key (None: missing or null).

        Raises DeclaredValueError naming the key when a value does not fit its type.
        """
        out = []
        for declared in self.declared:
            value = lookup(meta, declared.key)
            out.append(None if value is None else declared.column_value(value))
        return out

    def to_json(self) -> str:
        return json.dumps({"name": self.name, "model_id": self.model_id, "dim": self.dim,
                           "declared": [[d.key, d.type] for d in self.declared]})

    @classmethod
    def from_json(cls, text: str) -> TopicConfig:
        raw = json.loads(text)
        return cls(raw["name"], raw["model_id"], int(raw["dim"]),
                   declare(raw.get("declared", [])))


def lookup(meta: Mapping[str, Any], key: str) -> Any:
    """``meta[key]``, following dots into nested mappings (``author.name``); None if absent."""
    if key in meta:
        return meta[key]
    head, dot, rest = key.partition(".")
    if dot and isinstance(meta.get(head), Mapping):
        return lookup(meta[head], rest)
    return None


def parse_declaration(text: str) -> tuple[str, str]:
    """``KEY:TYPE`` from the command line as (key, type); TopicError when malformed."""
    key, sep, kind = text.rpartition(":")
    if not sep or not key:
        raise TopicError(f"--filterable {text!r}: write KEY:TYPE, e.g. year:integer")
    if kind not in COLUMN_TYPES:
        raise TopicError(
            f"--filterable {text!r}: type {kind!r} is not one of {', '.join(COLUMN_TYPES)}"
        )
    if not _KEY.match(key):
        raise TopicError(f"--filterable {text!r}: {key!r} cannot be a filter key")
    return key, kind


def declare(pairs: Sequence[Sequence[str]] | Mapping[str, str]) -> tuple[DeclaredKey, ...]:
    """Declared keys, in order, from (key, type) pairs; duplicates are an error."""
    items = list(pairs.items()) if isinstance(pairs, Mapping) else [tuple(p) for p in pairs]
    seen: set[str] = set()
    out = []
    for i, (key, kind) in enumerate(items):
        if key in seen:
            raise TopicError(f"key {key!r} is declared twice")
        if kind not in COLUMN_TYPES:
            raise TopicError(f"key {key!r}: type {kind!r} is not one of {', '.join(COLUMN_TYPES)}")
        seen.add(key)
        out.append(DeclaredKey(key, kind, i))
    return tuple(out)
