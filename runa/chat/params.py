"""This session's sampling settings, under llama.cpp's names, checked before they are sent.

splinfer checks every request too; checking here as well means a typo in ``/params`` is
answered at once with the allowed range, instead of after the next question.
The rules are splinfer's own (``runa.splinfer.params``, pure Python), so the two agree.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping

from runa.errors import UsageError
from runa.splinfer import ParamError, SamplingParams, canonical_name, parse_params

SAMPLING_NAMES = tuple(f.name for f in dataclasses.fields(SamplingParams))
DEFAULTS = SamplingParams()


class ChatParamError(UsageError):
    """A sampling setting that splinfer would refuse: unknown, mistyped or out of range."""


class SessionParams:
    """The sampling settings this session sends with every question (its overrides only).

    What is not set here comes from the persona, then from llama.cpp's defaults; both are
    applied by splinfer.
    """

    def __init__(self, initial: Mapping[str, object] | None = None) -> None:
        self.values: dict[str, object] = {}
        self.notes: list[str] = []
        if initial:
            self._apply(initial, source="command line")

    def payload(self) -> dict[str, object]:
        return dict(self.values)

    def update(self, assignments: Iterable[str]) -> list[str]:
        """Apply ``name=value`` words (``name=`` unsets one); all or nothing.

        Returns notes for the person (an upstream alias was used).
        """
        changes: dict[str, object] = {}
        for word in assignments:
            name, sep, value = word.partition("=")
            if not sep or not name.strip():
                raise ChatParamError(f"{word!r}: write name=value, e.g. temp=0.7 "
                                     "(name= goes back to the default)")
            changes[name.strip()] = value.strip()
        return self._apply(changes, source="/params")

    def reset(self) -> None:
        self.values.clear()

    def _apply(self, changes: Mapping[str, object], source: str) -> list[str]:
        notes: list[str] = []
        unset: list[str] = []
        to_check: dict[str, object] = {}
        try:
            for raw_name, raw in changes.items():
                name = canonical_name(raw_name, source=source, warn=notes.append)
                if name not in SAMPLING_NAMES:
                    raise ChatParamError(
                        f"{source}: {name} is fixed when the model is loaded (runa up takes "
                        f"it, e.g. -c for ctx_size); here only: {', '.join(SAMPLING_NAMES)}")
                if raw == "":
                    unset.append(name)
                else:
                    to_check[name] = raw
            _, checked = parse_params(to_check, source=source)
        except ParamError as error:
            raise ChatParamError(str(error)) from None
        for name in unset:
            self.values.pop(name, None)
        self.values.update({name: getattr(checked, name) for name in to_check})
        self.notes.extend(notes)
        return notes

    def rows(self, persona: str | None = None, persona_params: Mapping[str, object] | None = None,
             default_persona: bool = False) -> list[tuple[str, object, str]]:
        """(name, value in force, where it comes from) for every sampling setting, in order.

        This session's value wins, then the persona's, then llama.cpp's default: the order
        splinfer applies them in.
        """
        where = f"persona {persona}" + (" (splinfer.persona in the config)"
                                        if default_persona else "")
        rows: list[tuple[str, object, str]] = []
        for name in SAMPLING_NAMES:
            if name in self.values:
                rows.append((name, self.values[name], "this session"))
            elif persona_params and name in persona_params:
                rows.append((name, persona_params[name], where))
            else:
                rows.append((name, getattr(DEFAULTS, name), "llama.cpp's default"))
        return rows
