"""Who may do what with a secret: the registry's read policy, decided without I/O.

The person (``runa secret``) may do every operation. A component may only read: ``get`` a
secret its registry entry names in ``secrets`` (``["alethia.*"]``: exact names, or prefixes
ending in ``*``), ``create`` one of those same names (coven makes its value of random bytes
the first time, so a component makes its own keys without a person), ``list`` (answered with
only the names it may read) and ``status``. A
component the registry does not know may read nothing, and a process a component left behind
(``UNKNOWN``) may do nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from runa.gilgul.requesters import Requester
from runa.protocol import secret_wire
from runa.registry import Component, Registry

#: What a component may ask; ``get`` and ``create`` also need the name to be its to read.
COMPONENT_OPS = frozenset({"get", "create", "list", "status"})
_NAMED_OPS = frozenset({"get", "create"})


@dataclass(frozen=True)
class Decision:
    allowed: bool
    why: str = ""  # a sentence for the refusal, naming no value


class ReadPolicy:
    """Decides each request from the registry's ``secrets`` entries."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    def _component(self, name: str) -> Component | None:
        try:
            return self.registry.get(name)
        except KeyError:
            return None

    def decide(self, requester: Requester, op: str, secret: str | None) -> Decision:
        if requester.is_person:
            return Decision(True)
        if requester.is_unknown:
            return Decision(False, f"pid {requester.pid} was left behind by a component (it "
                            "descends from the supervisor through no running child)")
        if op not in COMPONENT_OPS:
            return Decision(False, f"only a person ('runa secret') may {op} secrets; "
                            f"{requester.name} may only read")
        if op not in _NAMED_OPS:
            return Decision(True)
        component = self._component(requester.name)
        if component is None or secret is None or not component.may_read(secret):
            verb = "read" if op == "get" else op
            return Decision(False, f"{requester.name} may not {verb} the secret {secret!r}: "
                            f"its registry entry does not name it in 'secrets'")
        return Decision(True)

    def readable(self, requester: Requester,
                 entries: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
        """The entries of a ``list`` answer that ``requester`` may read."""
        if requester.is_person:
            return list(entries)
        component = self._component(requester.name)
        return [entry for entry in entries if component is not None
                and component.may_read(str(entry.get(secret_wire.ENTRY_NAME, "")))]
