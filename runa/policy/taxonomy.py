"""What the policy talks about: hazard categories, motif weights and actions.

The categories are the MLCommons hazard taxonomy as Llama Guard 3 numbers it (S1 to S14),
plus ``circumvention`` for attempts to talk the model out of its policy (jailbreaks).
Actions are ordered by strictness; the lock (runa.policy.lock) compares policy sets with
that order, cell by cell.
"""

from __future__ import annotations

import enum

#: Category name -> Llama Guard 3 code ("" for Runa's own).
CATEGORIES: dict[str, str] = {
    "violent_crimes": "S1",
    "non_violent_crimes": "S2",
    "sex_related_crimes": "S3",
    "child_sexual_exploitation": "S4",
    "defamation": "S5",
    "specialized_advice": "S6",
    "privacy": "S7",
    "intellectual_property": "S8",
    "indiscriminate_weapons": "S9",
    "hate": "S10",
    "suicide_self_harm": "S11",
    "sexual_content": "S12",
    "elections": "S13",
    "code_interpreter_abuse": "S14",
    "circumvention": "",
}


class Weight(enum.Enum):
    """How strongly a motif signals its category: light < medium < heavy."""

    LIGHT = "light"
    MEDIUM = "medium"
    HEAVY = "heavy"

    @property
    def rank(self) -> int:
        return _WEIGHT_RANK[self]

    @property
    def score(self) -> float:
        """The score of a verdict whose strongest motif has this weight (docs/policy.md)."""
        return _WEIGHT_SCORE[self]


_WEIGHT_RANK = {Weight.LIGHT: 0, Weight.MEDIUM: 1, Weight.HEAVY: 2}
_WEIGHT_SCORE = {Weight.LIGHT: 0.34, Weight.MEDIUM: 0.67, Weight.HEAVY: 1.0}
WEIGHTS: tuple[Weight, ...] = (Weight.LIGHT, Weight.MEDIUM, Weight.HEAVY)


class Action(enum.Enum):
    """What a policy set does with a match, from least to most strict.

    allow < flag < whisper < mask < delay < block: flag only records; whisper records and adds
    a note to the next turn; mask replaces the matched text; delay holds the stream for the
    semantic tier; block ends the answer with the policy's refusal.
    """

    ALLOW = "allow"
    FLAG = "flag"
    WHISPER = "whisper"
    MASK = "mask"
    DELAY = "delay"
    BLOCK = "block"

    @property
    def rank(self) -> int:
        return _ACTION_RANK[self]

    def stricter(self, other: Action) -> Action:
        """The stricter of the two."""
        return self if self.rank >= other.rank else other


_ACTION_RANK = {action: rank for rank, action in enumerate(Action)}
ACTIONS: tuple[Action, ...] = tuple(Action)

#: How a lock refusal says what a set does ("'off' allows …, which 'child-safe' blocks").
VERBS: dict[Action, str] = {
    Action.ALLOW: "allows",
    Action.FLAG: "only flags",
    Action.WHISPER: "only whispers on",
    Action.MASK: "masks",
    Action.DELAY: "delays",
    Action.BLOCK: "blocks",
}


def choices(kind: type[enum.Enum]) -> str:
    """``light, medium or heavy``: the values of an enum, for messages."""
    values = [member.value for member in kind]
    return ", ".join(values[:-1]) + " or " + values[-1]
