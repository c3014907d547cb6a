"""How the two tiers' answers combine, for splinfer, whisper's clients and ``runa policy
check`` alike: tier 1's verdict with tier 2's judgement (``combine``: tier 1's ``delay``
cells decided by tier 2 when it answered), the fail rule's check when it could not
(``unavailable``, with the notice the person reads), and the judgements of a long text's
parts pooled into one (``pooled``). docs/policy.md, "Tier 2".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from runa.policy import tier2
from runa.policy.sets import PolicySet
from runa.policy.taxonomy import Action, Weight
from runa.policy.tier1 import DELAY_ALONE
from runa.policy.tier2 import Judgement
from runa.policy.verdict import Intervention, Verdict


def pooled(judgements: Sequence[Judgement]) -> Judgement:
    """The judgements of a text's parts as one: each rule's strongest hit (its window counted
    across the parts), each head's highest score."""
    if len(judgements) == 1:
        return judgements[0]
    best: dict[str, tier2.Hit] = {}
    scores: dict[str, float] = {}
    offset = 0
    for judgement in judgements:
        for hit in judgement.hits:
            kept = best.get(hit.rule)
            if kept is None or hit.score > kept.score:
                best[hit.rule] = replace(hit, window=hit.window + offset)
        for head, score in judgement.scores.items():
            scores[head] = max(score, scores.get(head, 0.0))
        offset += judgement.windows
    return Judgement(tuple(best.values()), scores, offset,
                     sum(j.elapsed_ms for j in judgements))


@dataclass(frozen=True)
class PromptCheck:
    """Tier 2 on a prompt: its interventions, its judgement (None: unavailable), and what
    the answer must say about it (empty when tier 2 answered)."""

    interventions: tuple[Intervention, ...]
    judgement: Judgement | None
    notice: str = ""


def answered(judgement: Judgement, policy: PolicySet, side: str = "prompt",
             conversation: str = "") -> PromptCheck:
    """Tier 2's check of a whole text it answered about: its judgement's interventions
    under ``policy`` (what ``combine`` takes)."""
    found = tier2.interventions(judgement, policy, side, conversation=conversation)
    return PromptCheck(tuple(found), judgement)


def unavailable(policy: PolicySet, why: str, conversation: str = "",
                side: str = "prompt") -> PromptCheck:
    """The fail rule's check when tier 2 cannot answer about a whole text."""
    failed = tier2.unavailable(policy, side, why, conversation)
    return PromptCheck((failed,), None, notice_of(failed))


def notice_of(failed: Intervention) -> str:
    """What the person reads when the fail rule applied."""
    done = "blocked" if failed.action == Action.BLOCK.value else "not checked by meaning"
    return f"{failed.reason}; the {failed.side} was {done}"


def join_notices(first: str, second: str) -> str:
    """Two notices of ``notice_of`` as one: the same reason for the prompt and the output
    is said once ("…; the prompt and the output were not checked by meaning")."""
    if not first or not second:
        return first or second
    reason, _, said = first.rpartition("; the ")
    other_reason, _, other_said = second.rpartition("; the ")
    side, _, done = said.partition(" was ")
    other_side, _, other_done = other_said.partition(" was ")
    if reason and reason == other_reason and done and done == other_done:
        return f"{reason}; the {side} and the {other_side} were {done}"
    return f"{first}; {second}"


def combine(verdict: Verdict, check: PromptCheck, policy: PolicySet) -> Verdict:
    """Tier 1's verdict with tier 2's: delays decided by tier 2 when it answered (a delay
    it did not confirm is recorded as a flag), then ``tier2.merge``. When tier 2 could not
    answer, the fail rule's rule (``tier2.unavailable``) is among the verdict's rules."""
    if check.judgement is not None:
        verdict = resolve_delays(verdict, check.judgement, policy)
    merged = tier2.merge(verdict, list(check.interventions), policy, check.judgement)
    if check.judgement is None and check.interventions:
        rules = (*merged.rules, *(item.rule for item in check.interventions))
        merged = replace(merged, rules=tuple(dict.fromkeys(rules)))
    return merged


def resolve_delays(verdict: Verdict, judgement: Judgement, policy: PolicySet) -> Verdict:
    """Tier 1's ``delay`` interventions, which applied the fail rule, decided by tier 2:
    blocked when tier 2 found the same category, else flagged."""
    confirmed = {hit.category for hit in judgement.hits}
    changed = False
    items = []
    for item in verdict.interventions:
        if item.reason in DELAY_ALONE.values() and _is_delay(item, policy):
            blocked = item.category in confirmed
            item = replace(item, action=(Action.BLOCK if blocked else Action.FLAG).value,
                           reason="delay: the semantic tier " +
                           ("confirmed it" if blocked else "did not confirm it"))
            changed = True
        items.append(item)
    if not changed:
        return verdict
    strictest = Action.ALLOW
    for item in items:
        strictest = strictest.stricter(Action(item.action))
    return replace(verdict, action=strictest, interventions=tuple(items))


def _is_delay(item: Intervention, policy: PolicySet) -> bool:
    try:
        return policy.action(item.category, Weight(item.weight)) is Action.DELAY
    except (KeyError, ValueError):
        return False


def has_delay(policy: PolicySet) -> bool:
    return any(action is Action.DELAY for action in policy.actions.values())


