"""Which policy set an answer runs under, and tier 1 with the loaded model's tokenizer.

The choice, strongest first: the chat request's ``policy`` (kept by the conversation from
that turn on) > the conversation's kept policy > the persona's ``policy:`` > ``policy.default``.
Every choice goes through ``PolicyLibrary.resolve``, so nothing goes below the lock; a
refusal (PolicyLocked) says who asked and why. A ``policy.default`` below the lock does not
stop splinfer (nobody could chat at all): it starts with the minimum set and says so in the
log and in its status. A conversation's kept set or ``policy.default`` that falls below the
lock later (a raised lock, an edited set file) gives way to the minimum set the same way,
with a notice in the log and in the answer's final envelope; a request's own set below the
lock stays refused. docs/policy.md, "In splinfer".
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
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
    """The set an answer runs under."""

    policy: PolicySet
    notice: str = ""
    """Why it is not the set asked for (a kept or configured set now below the lock)."""


def note(text: str) -> dict[str, str]:
    """A whisper's note as the system-labelled message the model reads before the turn."""
    return {"role": "system", "content": NOTE_LABEL + text}


def fold_notes(notes: Sequence[Mapping[str, str]], user: Mapping[str, str]) -> dict[str, str]:
    """``user`` with the notes as a labelled prefix, for a chat template that refuses a
    system message after the first (Mistral's, Gemma's)."""
    prefix = "".join(f"[{n['content']}]\n" for n in notes)
    return {"role": "user", "content": f"{prefix}\n{user['content']}" if prefix
            else user["content"]}


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
        self._problems: dict[str, int] = {}
        """Motifs each set used with the loaded model could not compile (status)."""

    @classmethod
    def for_stack(cls, paths: Paths, config: Config, logger: logging.Logger) -> SplinferPolicy:
        return cls(PolicyLibrary.for_stack(paths, config, logger=logger), config, logger)

    def start(self) -> None:
        """Check ``policy.default`` against the lock once at start."""
        try:
            self.library.configured(self.config)
        except (PolicyLocked, UnknownPolicyError) as error:
            self.problem = f"{error}; using {self._minimum_name()!r} instead"
            log.event(self.logger, "policy_default_refused", self.problem,
                      level=logging.WARNING, policy=self._minimum_name())

    def _minimum_name(self) -> str:
        return self.library.lock.minimum or "default"

    def _fallback(self, error: RunaError, *, say: bool = True) -> Choice:
        """The lock's minimum set instead of one now below the lock (``say``: in the log)."""
        name = self._minimum_name()
        notice = f"{error}; using {name!r} instead"
        if say:
            log.event(self.logger, "policy_fallback", notice, level=logging.WARNING,
                      policy=name)
        return Choice(self.library.get(name), notice)

    def default(self, *, say: bool = True) -> Choice:
        if self.problem:
            return Choice(self.library.get(self._minimum_name()), self.problem)
        origin = f"policy.default in {self.config.origin('policy.default')}"
        try:
            return Choice(self.library.resolve(self.config["policy.default"], origin))
        except PolicyLocked as error:  # a set file edited since start
            return self._fallback(error, say=say)

    def choose(self, requested: str | None, kept: str, persona: Persona) -> Choice:
        """The set for this answer (module docstring); PolicyLocked, UnknownPolicyError or
        PersonaError (a persona naming an unknown set) when it cannot be used. A kept set
        or ``policy.default`` now below the lock gives the lock's minimum with a notice
        (nobody would be able to go on otherwise); a request's set below it is refused."""
        if requested:
            return Choice(self.library.resolve(requested, "the chat request"))
        if kept:
            try:
                return Choice(self.library.resolve(kept, "the conversation's policy"))
            except PolicyLocked as error:  # the lock was raised since it was chosen
                return self._fallback(error)
        if persona.policy:
            by = f"persona {persona.name!r} ({persona.source})"
            try:
                return Choice(self.library.resolve(persona.policy, by))
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
            self._problems = {}
        tier1 = self.library.tier1(policy, tokenizer)
        self._problems[policy.name] = len(tier1.problems)  # the library logs them, once a compile
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
        out: dict[str, Any] = {"default": None, "minimum": self.library.lock.minimum or None,
                               "motif_problems": sum(self._problems.values())}
        try:
            choice = self.default(say=False)
            out["default"] = choice.policy.name
            if choice.notice:
                out["problem"] = choice.notice
        except RunaError as error:
            out["problem"] = str(error)
        return out
