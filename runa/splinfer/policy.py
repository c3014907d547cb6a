"""Which policy set an answer runs under, and tier 1 with the loaded model's tokenizer.

The choice, strongest first: the chat request's ``policy`` (kept by the conversation from
that turn on) > the conversation's kept policy > the persona's ``policy:`` > ``policy.default``.
Every choice goes through ``PolicyLibrary.resolve``, so nothing goes below the lock; a
refusal (PolicyLocked) says who asked and why. A ``policy.default`` below the lock does not
stop splinfer (nobody could chat at all): it starts with the minimum set and says so in the
log and in its status. docs/policy.md, "In splinfer".
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from runa import log
from runa.config import Config
from runa.errors import RunaError
from runa.paths import Paths
from runa.policy import (
    Intervention,
    PolicyLibrary,
    PolicyLocked,
    PolicySet,
    Tier1,
    UnknownPolicyError,
    exact_tokens,
    fingerprint_of,
)
from runa.splinfer.personas import Persona, PersonaError
from runa.splinfer.vocab import Vocab

#: How a whisper's note is labelled in the model's context.
NOTE_LABEL = "Note from Runa (system): "


class VocabTokenizer:
    """A loaded model's vocabulary as runa.policy.Tokenizer (exact tokenize: no added space)."""

    def __init__(self, vocab: Callable[[], Vocab], fingerprint: str) -> None:
        self._vocab = vocab  # the current one: a compiled Tier1 outlives a model reload
        self.fingerprint = fingerprint

    def piece(self, token: int) -> bytes:
        return self._vocab().piece(token)

    def _raw(self, text: str) -> list[int]:
        return self._vocab().tokenize(text, special=False)

    def tokenize(self, text: str) -> list[int]:
        return exact_tokens(self._raw, self.piece, text)


@dataclass(frozen=True)
class Choice:
    """The set an answer runs under and who chose it."""

    policy: PolicySet
    requested_by: str


def note(text: str) -> dict[str, str]:
    """A whisper's note as the system-labelled message the model reads before the turn."""
    return {"role": "system", "content": NOTE_LABEL + text}


class SplinferPolicy:
    """splinfer's view of the stack's policy sets, behind the lock."""

    def __init__(self, library: PolicyLibrary, config: Config,
                 logger: logging.Logger) -> None:
        self.library = library
        self.config = config
        self.logger = logger
        self.problem = ""
        """Why the configured default is not in use (empty when it is)."""
        self._tokenizers: dict[Path, VocabTokenizer] = {}
        self._reported: dict[int, Tier1] = {}

    @classmethod
    def for_stack(cls, paths: Paths, config: Config, logger: logging.Logger) -> SplinferPolicy:
        return cls(PolicyLibrary.for_stack(paths, config, logger=logger), config, logger)

    def start(self) -> str:
        """Check ``policy.default`` against the lock once at start; the default set's name."""
        try:
            return self.library.configured(self.config).name
        except (PolicyLocked, UnknownPolicyError) as error:
            fallback = self.library.lock.minimum or "default"
            self.problem = f"{error}; using {fallback!r} instead"
            log.event(self.logger, "policy_default_refused", self.problem,
                      level=logging.WARNING, policy=fallback)
            return fallback

    def default(self) -> Choice:
        if self.problem:
            name = self.library.lock.minimum or "default"
            return Choice(self.library.get(name), f"the lock ({self.library.lock.origin})")
        origin = f"policy.default in {self.config.origin('policy.default')}"
        return Choice(self.library.resolve(self.config["policy.default"], origin), origin)

    def choose(self, requested: str | None, kept: str, persona: Persona) -> Choice:
        """The set for this answer (module docstring); PolicyLocked, UnknownPolicyError or
        PersonaError (a persona naming an unknown set) when it cannot be used."""
        if requested:
            by = "the chat request"
            return Choice(self.library.resolve(requested, by), by)
        if kept:
            by = "the conversation's policy"
            return Choice(self.library.resolve(kept, by), by)
        if persona.policy:
            by = f"persona {persona.name!r} ({persona.source})"
            try:
                return Choice(self.library.resolve(persona.policy, by), by)
            except UnknownPolicyError as error:
                raise PersonaError(persona.source, persona.policy_line,
                                   f"policy: {error}") from None
        return self.default()

    def tier1(self, policy: PolicySet, vocab: Callable[[], Vocab], model: Path) -> Tier1:
        """Tier 1 for ``policy`` with the loaded model's tokenizer (``vocab`` gives the
        current vocabulary; its fingerprint is computed once a model)."""
        tokenizer = self._tokenizers.get(model)
        if tokenizer is None:
            current = vocab()
            fingerprint = fingerprint_of(current.piece(i) for i in range(current.n_tokens))
            tokenizer = VocabTokenizer(vocab, fingerprint)
            self._tokenizers = {model: tokenizer}
        tier1 = self.library.tier1(policy, tokenizer)
        if self._reported.get(id(tier1)) is not tier1:  # a new compile: its problems, once
            if len(self._reported) > 16:
                self._reported.clear()
            self._reported[id(tier1)] = tier1
            for problem in tier1.problems:
                log.event(self.logger, "policy_motif_unusable", str(problem),
                          level=logging.WARNING, policy=policy.name)
        return tier1

    def report(self, interventions: list[Intervention], conversation: str) -> list[Intervention]:
        """Log one event per intervention (its fields, never the text); them, with the
        conversation filled in."""
        done = []
        for item in interventions:
            if conversation and not item.conversation:
                item = replace(item, conversation=conversation)
            self.logger.info("policy %s: %s %s (%s/%s, %s side)", item.policy, item.action,
                             item.rule, item.category, item.weight, item.side,
                             extra=item.fields())
            done.append(item)
        return done

    def describe(self) -> dict[str, Any]:
        """The policy part of splinfer's status (a problem with the sets is said, not raised)."""
        out: dict[str, Any] = {"default": None, "minimum": self.library.lock.minimum or None}
        try:
            out["default"] = self.default().policy.name
        except RunaError as error:
            out["problem"] = str(error)
        if self.problem:
            out["problem"] = self.problem
        return out
