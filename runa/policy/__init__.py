"""tokenWhisper's policy: the Token Impact Matrix, policy sets and the inline tier (tier 1).

A shared library, so splinfer (on every token), the whisper service and the CLI
(``runa policy``) use one implementation. See docs/policy.md.
"""

from runa.policy.files import PolicyFileError
from runa.policy.lock import Lock, PolicyLibrary, PolicyLocked, UnknownPolicyError
from runa.policy.matrix import Matrix, MatrixError, MatrixLibrary, Motif, parse_matrix
from runa.policy.sets import PolicySet, PolicySetError, SetLibrary, parse_set
from runa.policy.stream import HOLD, RELEASE_ONE, GateStep, StreamGate
from runa.policy.taxonomy import CATEGORIES, Action, Weight
from runa.policy.tier1 import (
    OutputGate,
    PassGate,
    Tier1,
    Tokenizer,
    exact_tokens,
    fingerprint_of,
    fold,
)
from runa.policy.verdict import Checker, Intervention, Verdict

__all__ = [
    "CATEGORIES",
    "HOLD",
    "RELEASE_ONE",
    "Action",
    "Checker",
    "GateStep",
    "Intervention",
    "Lock",
    "Matrix",
    "MatrixError",
    "MatrixLibrary",
    "Motif",
    "OutputGate",
    "PassGate",
    "PolicyFileError",
    "PolicyLibrary",
    "PolicyLocked",
    "PolicySet",
    "PolicySetError",
    "SetLibrary",
    "StreamGate",
    "Tier1",
    "Tokenizer",
    "UnknownPolicyError",
    "Verdict",
    "Weight",
    "exact_tokens",
    "fingerprint_of",
    "fold",
    "parse_matrix",
    "parse_set",
]
