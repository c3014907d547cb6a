"""What the policy reports: interventions (one event each) and verdicts on whole texts.

An intervention carries the rule, category, weight, action and where it happened (the token
index, the side, the conversation), never the text: it goes to the journal as fields
(``fields()``) and to the client in the final envelope (``to_dict()``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from runa.policy.taxonomy import Action


@dataclass(frozen=True)
class Intervention:
    """One thing the policy did (or recorded) about one motif match."""

    rule: str
    category: str
    weight: str
    action: str  # what was done: allow never appears; flag, whisper, mask, block
    side: str  # prompt | output
    policy: str  # the policy set's name
    token_index: int | None = None  # the first token of the match (output side)
    conversation: str = ""
    #: Why ``action`` differs from the set's cell, when it does: "delay without the
    #: semantic tier: fail closed", "already streamed".
    reason: str = ""

    def fields(self) -> dict[str, str]:
        """journald fields of the event (runa.log passes RUNA_* extras through)."""
        out = {
            "RUNA_EVENT": "policy_intervention",
            "RUNA_RULE": self.rule,
            "RUNA_CATEGORY": self.category,
            "RUNA_WEIGHT": self.weight,
            "RUNA_ACTION": self.action,
            "RUNA_SIDE": self.side,
            "RUNA_POLICY": self.policy,
        }
        if self.token_index is not None:
            out["RUNA_TOKEN_INDEX"] = str(self.token_index)
        if self.conversation:
            out["RUNA_CONVERSATION"] = self.conversation
        if self.reason:
            out["RUNA_REASON"] = self.reason
        return out

    def to_dict(self) -> dict[str, Any]:
        """The intervention in the final envelope (keys without a value are left out)."""
        return {key: value for key, value in asdict(self).items()
                if value not in (None, "")}


@dataclass(frozen=True)
class Verdict:
    """The policy's answer about a whole text (a prompt before generation, ``runa policy
    check``).

    ``action`` is the strictest action of the matches (allow when nothing matched or all are
    allowed); ``score`` the strongest matched weight (light 0.34, medium 0.67, heavy 1.0; 0.0
    when nothing matched); ``categories`` and ``rules`` every match, allowed ones included;
    ``text`` the masked text when a mask applied (else None).
    """

    action: Action
    categories: tuple[str, ...] = ()
    score: float = 0.0
    rules: tuple[str, ...] = ()
    interventions: tuple[Intervention, ...] = ()
    text: str | None = None
    whispers: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        """The shape ``runa policy check`` prints (without the id)."""
        return {"action": self.action.value, "categories": list(self.categories),
                "score": self.score, "rules": list(self.rules)}


class Checker(Protocol):
    """Judges whole texts, one shape for tier 1 in this process and for the stack's running
    splinfer (op ``policy_check``), as tieto's Local and Remote access are."""

    def check(self, text: str, side: str = "prompt") -> Verdict:
        ...
