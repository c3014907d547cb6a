"""``--filter`` expressions: parse them and turn them into SQL that narrows candidates.

Syntax: ``KEY OP VALUE`` with OP one of ``= != < <= > >= in``; ``in`` takes a
comma-separated list (``lang in fi,sv`` or ``lang in (fi, sv)``). A value is a
number if it reads as one, a date if it is ISO 8601 (``2021-06-01``,
``2021-06-01T12:00Z``), a boolean if ``true``/``false``, and text otherwise;
quotes force text (``code="007"``). Several filters all apply (AND).

Semantics, the same on every path: numbers and dates compare as such; a key
the document lacks never matches (``!=`` included); a list matches if any item
does; a value of another kind than the literal (text against a number) does not
match.

Every condition becomes a constraint of the nearest-neighbour query itself —
a vec0 metadata-column constraint for declared keys, ``chunk_id IN (…)`` over
the metadata table for the rest — so candidates are narrowed before the k
nearest are chosen, never after, and a filtered query returns k results
whenever at least k chunks match.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from runa.tieto.errors import FilterError
from runa.tieto.topic import TopicConfig
from runa.tieto.values import parse_date, parse_number

OPERATORS = ("=", "!=", "<", "<=", ">", ">=", "in")
_ORDERED = ("<", "<=", ">", ">=")
_EXPR = re.compile(
    r"^\s*(?P<key>[^\s=<>!~]+)(?:\s*(?P<sym>[=<>!~]+)|\s+(?P<word>[A-Za-z_]+)(?=\s))"
    r"\s*(?P<value>.*?)\s*$",
    re.S,
)
_HELP = "write KEY OP VALUE with OP one of = != < <= > >= in, e.g. 'year>=2020' or 'lang in fi,sv'"


@dataclass(frozen=True)
class Literal:
    """One value on the right of an operator, in every form it can be compared in."""

    text: str
    kind: str
    """``number``, ``date``, ``bool`` or ``text``."""
    number: float | None = None
    date: int | None = None

    @classmethod
    def read(cls, raw: str) -> Literal:
        raw = raw.strip()
        if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "'\"":
            return cls(raw[1:-1], "text")
        if raw.lower() in ("true", "false"):
            return cls(raw.lower(), "bool")
        number = parse_number(raw)
        if number is not None:
            return cls(raw, "number", number=number)
        date = parse_date(raw)
        if date is not None:
            return cls(raw, "date", date=date)
        return cls(raw, "text")


@dataclass(frozen=True)
class Condition:
    key: str
    op: str
    values: tuple[Literal, ...]
    expression: str


def parse(expression: str) -> Condition:
    """One ``--filter`` expression; FilterError saying what is wrong with it."""
    match = _EXPR.match(expression)
    if not match:
        raise FilterError(f"cannot read filter {expression!r}: {_HELP}")
    key, value = match["key"], match["value"]
    op = match["sym"] or match["word"].lower()
    if op not in OPERATORS:
        raise FilterError(
            f"filter {expression!r}: unknown operator {op!r}; use one of {' '.join(OPERATORS)}"
        )
    if not value:
        raise FilterError(f"filter {expression!r}: no value after {op!r}")
    if op == "in":
        items = _split_list(value, expression)
        return Condition(key, op, tuple(Literal.read(v) for v in items), expression)
    return Condition(key, op, (Literal.read(value),), expression)


def _split_list(text: str, expression: str) -> list[str]:
    if text[:1] in "([" and text[-1:] in ")]":
        text = text[1:-1]
    items: list[str] = []
    current = ""
    quote = ""
    for ch in text:
        if quote:
            current += ch
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
            current += ch
        elif ch == ",":
            items.append(current.strip())
            current = ""
        else:
            current += ch
    items.append(current.strip())
    if quote or any(not item for item in items):
        raise FilterError(f"filter {expression!r}: 'in' needs a list such as a,b,c")
    return items


@dataclass(frozen=True)
class Clause:
    """A SQL boolean expression and its parameters."""

    sql: str
    params: tuple[Any, ...]


@dataclass(frozen=True)
class Compiled:
    """Filters as SQL for each search path."""

    native: tuple[Clause, ...]
    """vec0 metadata-column constraints (declared keys)."""
    fallback: tuple[Clause, ...]
    """Document conditions (``{doc}``: a document id) vec0 cannot express itself."""
    every: tuple[Clause, ...]
    """Every condition as a document condition (for the full-text path and counting)."""

    def vector(self) -> list[Clause]:
        """Constraints for the vec0 KNN query, whose key column is ``chunk_id``.

        vec0 takes a single ``IN`` on its key, so the fallback conditions share one.
        """
        out = list(self.native)
        if self.fallback:
            out.append(_chunks_in("chunk_id", self.fallback))
        return out

    def chunk_sql(self, column: str) -> Clause | None:
        """All conditions as one expression on a chunk id ``column`` (None: no filter)."""
        return _chunks_in(column, self.every) if self.every else None


def _chunks_in(column: str, conditions: Sequence[Clause]) -> Clause:
    tests = " AND ".join(c.sql.format(doc="c.doc_id") for c in conditions)
    return Clause(f"{column} IN (SELECT c.id FROM chunks c WHERE {tests})",
                  tuple(p for c in conditions for p in c.params))


def compile_filters(
    conditions: Sequence[Condition],
    topic: TopicConfig,
    key_exists: Callable[[str], bool],
    all_keys: Callable[[], Iterable[str]],
) -> Compiled:
    """SQL for ``conditions`` in ``topic``; FilterError for an unknown key or a bad value.

    ``key_exists`` tells whether any document of the topic has a key; ``all_keys``
    lists them for the "did you mean" hint.
    """
    native: list[Clause] = []
    fallback: list[Clause] = []
    every: list[Clause] = []
    for cond in conditions:
        declared = topic.declared_key(cond.key)
        if declared is None and not key_exists(cond.key):
            raise _unknown_key(cond, topic, all_keys)
        if declared is not None:
            literals = tuple(_coerce(cond, lit, declared.type) for lit in cond.values)
            meta = _meta_clause(cond, literals)
            vec0 = _vec0_clause(cond, literals, declared.type, declared.column, declared.flag)
        else:
            meta = _meta_clause(cond, cond.values)
            vec0 = None
        every.append(meta)
        if vec0 is not None:
            native.append(vec0)
        else:
            fallback.append(meta)
    return Compiled(tuple(native), tuple(fallback), tuple(every))


def _unknown_key(cond: Condition, topic: TopicConfig,
                 all_keys: Callable[[], Iterable[str]]) -> FilterError:
    known = sorted(set(all_keys()) | {d.key for d in topic.declared})
    close = difflib.get_close_matches(cond.key, known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    listing = ", ".join(known[:20]) if known else "none"
    return FilterError(
        f"filter {cond.expression!r}: no document in topic {topic.name!r} has the key "
        f"{cond.key!r}{hint}; keys: {listing}"
    )


#: What an integer key holds (SQLite's INTEGER): a value beyond cannot be compared with it.
_INT64 = (-(2**63), 2**63 - 1)


def _beyond_float(text: str) -> bool:
    """A numeral too large even for a float (parse_number gives None for it)."""
    try:
        return not math.isfinite(float(text))
    except ValueError:
        return False


def _coerce(cond: Condition, lit: Literal, kind: str) -> Literal:
    """A literal in the form a declared key of type ``kind`` compares it in."""
    def bad(what: str) -> FilterError:
        return FilterError(f"filter {cond.expression!r}: {cond.key!r} is declared {kind}; "
                           f"{lit.text!r} is not {what}")

    if kind in ("integer", "float"):
        number = lit.number if lit.kind == "number" else parse_number(lit.text)
        too_large = _beyond_float(lit.text) if number is None else \
            kind == "integer" and not _INT64[0] <= number <= _INT64[1]
        if too_large:
            span = f" ({_INT64[0]} to {_INT64[1]})" if kind == "integer" else ""
            raise FilterError(f"filter {cond.expression!r}: {cond.key!r} is declared {kind}; "
                              f"{lit.text} is out of its range{span}")
        if number is None:
            raise bad("a number")
        return Literal(lit.text, "number", number=number)
    if kind == "date":
        date = lit.date if lit.kind == "date" else parse_date(lit.text)
        if date is None:
            raise bad("a date (YYYY-MM-DD)")
        return Literal(lit.text, "date", date=date)
    if kind == "boolean":
        if lit.text.lower() not in ("true", "false"):
            raise bad("true or false")
        return Literal(lit.text.lower(), "bool")
    return Literal(lit.text, "text")


def _compare(lit: Literal, op: str, expression: str) -> tuple[str, Any]:
    """The metadata-table column and parameter a literal is compared with."""
    if lit.kind == "number":
        return "n", lit.number
    if lit.kind == "date":
        return "d", lit.date
    if lit.kind == "bool" and op in _ORDERED:
        raise FilterError(f"filter {expression!r}: true/false only compare with = or !=")
    return "t", lit.text


def _meta_clause(cond: Condition, literals: Sequence[Literal]) -> Clause:
    """A document (``{doc}``) whose metadata satisfies ``cond``."""
    op = "=" if cond.op == "in" else cond.op
    parts: list[str] = []
    params: list[Any] = [cond.key]
    for lit in literals:
        column, value = _compare(lit, op, cond.expression)
        parts.append(f"{column} {op} ?")
        params.append(value)
    test = parts[0] if len(parts) == 1 else "(" + " OR ".join(parts) + ")"
    return Clause(f"{{doc}} IN (SELECT doc_id FROM meta WHERE key = ? AND {test})",
                  tuple(params))


def _vec0_clause(cond: Condition, literals: Sequence[Literal], kind: str, column: str,
                 flag: str) -> Clause | None:
    """A vec0 metadata constraint, or None where vec0 cannot express it (float/boolean IN)."""
    values = [_column_value(lit, kind) for lit in literals]
    if cond.op == "in":
        if kind in ("float", "boolean"):
            return None
        marks = ", ".join("?" for _ in values)
        return Clause(f"{flag} = 1 AND {column} IN ({marks})", tuple(values))
    if kind == "boolean" and cond.op in _ORDERED:
        raise FilterError(f"filter {cond.expression!r}: true/false only compare with = or !=")
    return Clause(f"{flag} = 1 AND {column} {cond.op} ?", tuple(values))


def _column_value(lit: Literal, kind: str) -> Any:
    if kind == "integer":
        return lit.number if lit.number is not None and not lit.number.is_integer() \
            else int(lit.number or 0)
    if kind == "float":
        return lit.number
    if kind == "date":
        return lit.date
    if kind == "boolean":
        return 1 if lit.text == "true" else 0
    return lit.text
