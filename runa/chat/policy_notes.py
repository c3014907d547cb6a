"""What an answer's final envelope says about the policy, as lines for the person.

splinfer's final envelope carries ``policy`` (the set the answer ran under),
``interventions`` (what the policy did: rule, category, action, ... never text) and
``whispers`` (system notes such as support resources). ``runa chat`` and ``runa ask`` show
them the same way: each whisper as a note clearly from Runa, not from the model, and the
interventions as one count per action.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

from runa.policy import Action

#: How a count of each action reads, the strictest first.
_DONE = {Action.BLOCK: "blocked", Action.DELAY: "delayed", Action.MASK: "masked",
         Action.WHISPER: "whispered", Action.FLAG: "flagged"}


def whisper_lines(final: Mapping[str, Any]) -> list[str]:
    """One line per whisper note of the answer: ``[Runa note: …]``; first, if the conversation's
    set gave way to the administrator's minimum, why (``policy_notice``)."""
    notice = str(final.get("policy_notice") or "").strip()
    return ([f"[Runa note: {notice}]"] if notice else []) + [
        f"[Runa note: {str(note).strip()}]" for note in final.get("whispers") or []
        if str(note).strip()]


def intervention_summary(final: Mapping[str, Any]) -> str | None:
    """``[policy default: 1 masked, 2 flagged]``, or None when the policy did nothing."""
    interventions = [i for i in final.get("interventions") or [] if isinstance(i, Mapping)]
    if not interventions:
        return None
    counts = Counter(str(i.get("action", "")) for i in interventions)
    parts = [f"{counts.pop(action.value)} {done}" for action, done in _DONE.items()
             if action.value in counts]
    parts += [f"{n} {action or 'unnamed'}" for action, n in sorted(counts.items())]
    policy = final.get("policy") or interventions[0].get("policy") or "?"
    return f"[policy {policy}: {', '.join(parts)}]"
