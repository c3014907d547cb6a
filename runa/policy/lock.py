"""The lock: a minimum policy set the administrator sets, and the library that honours it.

``policy.minimum`` (read only from /etc/runa, runa.config refuses it elsewhere) names a set.
A set is *at or above* the minimum when, in every cell (category x weight), its action is at
least as strict as the minimum's (runa.policy.taxonomy.Action's order). ``PolicyLibrary``
hands out policy sets by name and refuses any below the minimum, whoever asks: ``/policy`` in
chat, a persona, a user's configuration.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from runa.config import Config
from runa.errors import ConfigError, RunaError
from runa.paths import Paths
from runa.policy.files import PACKAGED, layers
from runa.policy.matrix import Matrix, MatrixLibrary
from runa.policy.sets import PolicySet, PolicySetError, SetLibrary
from runa.policy.taxonomy import CATEGORIES, VERBS, WEIGHTS
from runa.policy.tier1 import Tier1, Tokenizer


class PolicyLocked(RunaError):
    """A policy set was asked for that is below the administrator's minimum; says why."""

    exit_code = 77  # EX_NOPERM

    def __init__(self, requested_by: str, name: str, message: str) -> None:
        self.requested_by = requested_by
        self.name = name
        super().__init__(f"{requested_by} asks for {name!r}, but {message}")


class UnknownPolicyError(RunaError):
    """No policy set of that name; the message lists the known ones."""

    exit_code = 66  # EX_NOINPUT: names something absent

    def __init__(self, name: str, known: Sequence[str]) -> None:
        self.name = name
        self.known = list(known)
        super().__init__(f"unknown policy set {name!r}; known sets: "
                         f"{', '.join(self.known) or 'none'}")


@dataclass(frozen=True)
class Lock:
    """The minimum policy set and where it was set."""

    minimum: str = ""
    origin: str = ""

    def shortfall(self, candidate: PolicySet, minimum: PolicySet) -> str | None:
        """Why ``candidate`` is below ``minimum`` (the first cell that is), or None."""
        for category in CATEGORIES:
            for weight in WEIGHTS:
                mine = candidate.action(category, weight)
                floor = minimum.action(category, weight)
                if mine.rank < floor.rank:
                    where = f" ({self.origin})" if self.origin else ""
                    return (f"the administrator locked the policy at {minimum.name!r}{where}; "
                            f"{candidate.name!r} {VERBS[mine]} {category}/{weight.value}, "
                            f"which {minimum.name!r} {VERBS[floor]}")
        return None


class PolicyLibrary:
    """The policy sets and the matrix of a stack, behind the lock."""

    def __init__(self, sets: SetLibrary, matrix: MatrixLibrary, lock: Lock | None = None,
                 logger: logging.Logger | None = None) -> None:
        self._sets = sets
        self._matrix = matrix
        self.lock = lock or Lock()
        self.log = logger or logging.getLogger(__name__)
        #: (set name, tokenizer fingerprint) -> the compile and what it was made from.
        self._compiled: dict[tuple[str, str], tuple[Matrix, PolicySet, Tier1]] = {}

    @classmethod
    def for_stack(cls, paths: Paths, config: Config, *, packaged: str | None = None,
                  logger: logging.Logger | None = None) -> PolicyLibrary:
        """The layered files of ``paths`` and the lock ``policy.minimum`` sets."""
        base = PACKAGED if packaged is None else type(PACKAGED)(packaged)
        minimum = config["policy.minimum"]
        lock = Lock(minimum, config.origin("policy.minimum") if minimum else "")
        return cls(SetLibrary(layers(paths, "sets", packaged=base), logger),
                   MatrixLibrary(layers(paths, "matrix.d", packaged=base), logger), lock,
                   logger)

    def matrix(self) -> Matrix:
        return self._matrix.matrix()

    def names(self) -> list[str]:
        return sorted(self._sets.sets())

    def problems(self) -> dict[Path, PolicySetError]:
        """The set files that cannot be used now, by path."""
        return self._sets.problems()

    def minimum_problems(self) -> list[PolicySetError]:
        """What is wrong with the files of the locked minimum set (say it loudly: a broken
        administrator's file leaves the packaged or last good version of the set in force)."""
        return self._sets.problems_of(self.lock.minimum) if self.lock.minimum else []

    def get(self, name: str) -> PolicySet:
        """The set ``name`` regardless of the lock; UnknownPolicyError lists the known ones,
        PolicySetError says what is wrong with a file that never read well."""
        sets = self._sets.sets()
        if name in sets:
            return sets[name]
        problems = self._sets.problems_of(name)
        if problems:
            raise problems[-1]
        raise UnknownPolicyError(name, sorted(sets))

    def minimum(self) -> PolicySet | None:
        """The locked minimum set, or None when there is no lock."""
        if not self.lock.minimum:
            return None
        try:
            return self.get(self.lock.minimum)
        except (UnknownPolicyError, PolicySetError) as error:
            raise ConfigError(self.lock.origin, "policy.minimum", self.lock.minimum,
                              str(error)) from None

    def below_lock(self, name: str) -> str | None:
        """Why set ``name`` is below the minimum, or None when it may be used."""
        floor = self.minimum()
        return None if floor is None else self.lock.shortfall(self.get(name), floor)

    def resolve(self, name: str, requested_by: str) -> PolicySet:
        """The set ``name`` if the lock allows it; PolicyLocked says why not.

        ``requested_by`` says who asks, for the refusal: ``/policy in chat``,
        ``persona 'x'``, ``user config ~/.config/runa/runa.toml``.
        """
        policy = self.get(name)
        reason = self.below_lock(name)
        if reason is not None:
            raise PolicyLocked(requested_by, name, reason)
        return policy

    def tier1(self, policy: PolicySet, tokenizer: Tokenizer | None) -> Tier1:
        """Tier 1 for ``policy`` and ``tokenizer`` over the current matrix, compiled once and
        kept until the matrix, the set or the tokenizer changes (so making a gate stays
        cheap). A new compile's unusable motifs are logged once (file, line, field)."""
        matrix = self.matrix()
        key = (policy.name, tokenizer.fingerprint if tokenizer else "")
        kept = self._compiled.get(key)
        if kept is not None and kept[0] is matrix and kept[1] is policy:
            return kept[2]
        tier = Tier1(matrix, policy, tokenizer)
        self._compiled[key] = (matrix, policy, tier)
        for problem in tier.problems:
            self.log.warning("policy motif not usable (%s)", problem, extra={
                "RUNA_EVENT": "policy_motif_unusable", "RUNA_POLICY": policy.name,
                "RUNA_FILE": str(problem.path), "RUNA_LINE": str(problem.line or ""),
                "RUNA_FIELD": problem.field or ""})
        return tier

    def configured(self, config: Config) -> PolicySet:
        """The set new conversations start with (``policy.default``), behind the lock."""
        return self.resolve(config["policy.default"],
                            f"policy.default in {config.origin('policy.default')}")
