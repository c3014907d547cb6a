"""A request as the wire carries it: an op and its fields, declared once.

Each service declares its ops here (``runa.protocol.splinfer``, ``runa.protocol.tieto``):
the fields, their wire types, which are required, their defaults and ranges. A client
builds a payload with :meth:`Op.request` (never a dict by hand), a service reads its
fields with :meth:`Op.read`, and docs/protocol.md carries the tables :func:`field_table`
renders from the same declarations (a test compares them).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

#: The wire types a field may have, as the docs name them, and how a value is recognised.
KINDS: Mapping[str, Callable[[Any], bool]] = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "object": lambda v: isinstance(v, dict),
    "list of strings": lambda v: isinstance(v, list) and all(isinstance(s, str) for s in v),
    "list of objects": lambda v: isinstance(v, list) and all(isinstance(o, dict) for o in v),
}


class PayloadError(ValueError):
    """A request payload a service cannot serve as sent; names the field."""

    def __init__(self, op: str, name: str, message: str) -> None:
        self.op = op
        self.field = name
        super().__init__(message)


@dataclass(frozen=True)
class Field:
    """One payload field: its wire type, whether it is required, its default and range."""

    name: str
    kind: str
    doc: str
    required: bool = False
    default: str = ""
    """What the service uses when the field is absent, as the docs say it ("" : nothing)."""
    allowed: str = ""
    """The values the service accepts, as the docs say it ("" : any of its kind)."""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"field {self.name}: unknown wire type {self.kind!r}")


@dataclass(frozen=True)
class Op:
    """One request a service answers: ``{"op": name, ...}`` (its answers: docs/protocol.md)."""

    service: str
    name: str
    doc: str
    fields: tuple[Field, ...] = ()
    checks: Mapping[str, Callable[[Any], str | None]] = field(default_factory=dict)
    """Rules beyond the wire type, by field: what is wrong (a sentence naming the field,
    as the service answers it) or None."""

    def field(self, name: str) -> Field:
        for candidate in self.fields:
            if candidate.name == name:
                return candidate
        raise KeyError(f"{self.service} {self.name} has no field {name!r}")

    def request(self, **values: Any) -> dict[str, Any]:
        """The payload of this request; fields given as None are left out (the service's
        default applies). A name the op does not declare is a programming error."""
        unknown = [name for name in values if name not in {f.name for f in self.fields}]
        if unknown:
            raise TypeError(f"{self.service} {self.name} has no field {', '.join(unknown)}")
        return {"op": self.name, **{k: v for k, v in values.items() if v is not None}}

    def read(self, payload: Mapping[str, Any], name: str) -> Any:
        """Field ``name`` of ``payload``, of its wire type and within its rules (None when
        absent and optional); PayloadError naming it otherwise."""
        spec = self.field(name)
        value = payload.get(name)
        if value is None:
            if spec.required:
                raise PayloadError(self.name, name,
                                   f"{self.name} needs {name!r}: {_a(spec.kind)}")
            return None
        if not KINDS[spec.kind](value):
            raise PayloadError(self.name, name, f"{name!r} must be {_a(spec.kind)}")
        check = self.checks.get(name)
        problem = check(value) if check is not None else None
        if problem:
            raise PayloadError(self.name, name, problem)
        return value


def _a(kind: str) -> str:
    return {"integer": "an integer", "object": "an object", "list of strings": "a list of "
            "strings"}.get(kind, f"a {kind}")


def field_table(ops: Mapping[str, Op]) -> str:
    """The request fields of ``ops`` as a Markdown table (docs/protocol.md carries it)."""
    rows = ["| op | field | type | required | default | allowed | meaning |",
            "|---|---|---|---|---|---|---|"]
    for op in ops.values():
        if not op.fields:
            rows.append(f"| `{op.name}` | — | | | | | {op.doc} |")
        for f in op.fields:
            rows.append(f"| `{op.name}` | `{f.name}` | {f.kind} | {'yes' if f.required else ''}"
                        f" | {f.default} | {f.allowed} | {f.doc} |")
    return "\n".join(rows)
