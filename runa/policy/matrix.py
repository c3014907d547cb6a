"""The Token Impact Matrix: the motifs the policy watches for, as layered YAML files.

Each file of ``matrix.d`` is a YAML list of motifs (docs/policy.md, "The matrix")::

    - id: self-harm.end-my-life        # the rule name interventions carry
      category: suicide_self_harm      # runa.policy.taxonomy.CATEGORIES
      weight: heavy                    # light | medium | heavy
      side: both                       # prompt | output | both (default both)
      phrase: end my life              # exactly one of phrase, regex, tokens, exemplar
      replacement: "[…]"               # optional: the mask text of this motif

``phrase`` is case-insensitive literal text matched on word boundaries; ``regex`` a Python
regular expression (case-insensitive); ``tokens`` a token-id sequence bound to a tokenizer,
``{tokenizer: <fingerprint>, ids: [...], phrase: "..."}``, rebuilt from its phrase when the
model's tokenizer differs; ``exemplar`` text for the semantic tier (kept, not matched here).

An administrator's motif with the id of a packaged one replaces it; a user's motif may only
add an id (one reusing a packaged or administrator's id is refused, so the lock holds).
``MatrixLibrary`` re-reads the files when one changes and keeps a file's last good motifs
while it is malformed, reporting the problem (with the file, line and field).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import regex
import yaml

from runa.policy import files
from runa.policy.files import Layer, PolicyFileError, line, plain
from runa.policy.taxonomy import CATEGORIES, Weight, choices

RULE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
SIDES = ("prompt", "output", "both")
KINDS = ("phrase", "regex", "tokens", "exemplar")
_FIELDS = {"id", "category", "weight", "side", "replacement", *KINDS}
_WORD = re.compile(r"\w")


class MatrixError(PolicyFileError):
    """A matrix file (or one motif in it) cannot be used: the file, line and field."""


@dataclass(frozen=True)
class TokenBinding:
    """A ``tokens`` motif: ids valid for the tokenizer with this fingerprint."""

    tokenizer: str
    ids: tuple[int, ...]
    phrase: str | None


@dataclass(frozen=True)
class Motif:
    """One row of the matrix."""

    id: str
    category: str
    weight: Weight
    side: str
    kind: str
    pattern: str  # the phrase, regex or exemplar text ("" for tokens without a phrase)
    source: Path
    line: int
    tokens: TokenBinding | None = None
    replacement: str | None = None

    def on(self, side: str) -> bool:
        """Whether this motif watches ``side`` (prompt or output)."""
        return self.side in ("both", side)


@dataclass(frozen=True)
class Matrix:
    """The motifs in effect (each id once) and the problems found reading them."""

    motifs: tuple[Motif, ...]
    problems: tuple[PolicyFileError, ...] = ()

    def by_id(self) -> dict[str, Motif]:
        return {motif.id: motif for motif in self.motifs}


def parse_matrix(path: Path, text: str | None = None) -> list[Motif]:
    """The motifs of one file; MatrixError names the file, line and field of a problem."""
    try:
        root = files.compose(path, text)
    except PolicyFileError as error:
        raise MatrixError(error.path, error.line, error.field, error.problem) from None
    if root is None:
        return []
    if not isinstance(root, yaml.SequenceNode):
        raise MatrixError(path, line(root), None, "must be a list of motifs (each '- id: …')")
    motifs: list[Motif] = []
    seen: dict[str, int] = {}
    for node in root.value:
        motif = _motif(path, node)
        if motif.id in seen:
            raise MatrixError(path, motif.line, "id", f"{motif.id!r} is already used on line "
                              f"{seen[motif.id]} of this file")
        seen[motif.id] = motif.line
        motifs.append(motif)
    return motifs


def _motif(path: Path, node: yaml.Node) -> Motif:
    if not isinstance(node, yaml.MappingNode):
        raise MatrixError(path, line(node), None, "a motif must be a mapping (id, category, …)")
    values: dict[str, yaml.Node] = {}
    try:
        for key, key_node, value_node in files.items(path, node, None):
            if key not in _FIELDS:
                raise MatrixError(path, line(key_node), key, "is not a motif field (known: "
                                  f"{', '.join(sorted(_FIELDS))})")
            values[key] = value_node
    except MatrixError:
        raise
    except PolicyFileError as error:
        raise MatrixError(error.path, error.line, error.field, error.problem) from None
    here = line(node)
    for required in ("id", "category", "weight"):
        if required not in values:
            raise MatrixError(path, here, required, "is missing")
    rule = _scalar(path, values["id"], "id")
    if not RULE_ID.match(rule):
        raise MatrixError(path, line(values["id"]), "id", f"{rule!r} is not a rule name: use "
                          "letters, digits, '_', '.', ':', '-' (at most 128)")
    category = _scalar(path, values["category"], "category")
    if category not in CATEGORIES:
        raise MatrixError(path, line(values["category"]), "category",
                          f"{category!r} is not a category (known: {', '.join(CATEGORIES)})")
    weight_text = _scalar(path, values["weight"], "weight")
    try:
        weight = Weight(weight_text)
    except ValueError:
        raise MatrixError(path, line(values["weight"]), "weight",
                          f"{weight_text!r} is not {choices(Weight)}") from None
    side = _scalar(path, values["side"], "side") if "side" in values else "both"
    if side not in SIDES:
        raise MatrixError(path, line(values["side"]), "side",
                          f"{side!r} is not prompt, output or both")
    kinds = [kind for kind in KINDS if kind in values]
    if len(kinds) != 1:
        what = "none" if not kinds else " and ".join(kinds)
        raise MatrixError(path, here, "phrase", "a motif has exactly one of phrase, regex, "
                          f"tokens or exemplar (this one has {what})")
    kind = kinds[0]
    replacement = (_scalar(path, values["replacement"], "replacement")
                   if "replacement" in values else None)
    binding = None
    if kind == "tokens":
        binding = _binding(path, values["tokens"])
        pattern = binding.phrase or ""
    else:
        pattern = _scalar(path, values[kind], kind)
        _check_pattern(path, values[kind], kind, pattern)
    return Motif(id=rule, category=category, weight=weight, side=side, kind=kind,
                 pattern=pattern, source=path, line=here, tokens=binding,
                 replacement=replacement)


def _scalar(path: Path, node: yaml.Node, name: str) -> str:
    try:
        value = files.text(path, node, name)  # explains a bare no/off read as false
    except PolicyFileError as error:
        raise MatrixError(error.path, error.line, error.field, error.problem) from None
    if not value.strip():
        raise MatrixError(path, line(node), name, "must be text")
    return value


def _check_pattern(path: Path, node: yaml.Node, kind: str, pattern: str) -> None:
    if kind == "phrase" and not _WORD.search(pattern):
        raise MatrixError(path, line(node), kind, f"{pattern!r} has no letter or digit to match")
    if kind == "regex":
        try:
            regex.compile(pattern, regex.IGNORECASE | regex.VERSION0)
        except regex.error as error:
            raise MatrixError(path, line(node), kind,
                              f"{pattern!r} is not a regular expression: {error}") from None


def _binding(path: Path, node: yaml.Node) -> TokenBinding:
    values: dict[str, yaml.Node] = {}
    try:
        for key, key_node, value_node in files.items(path, node, "tokens"):
            if key not in ("tokenizer", "ids", "phrase"):
                raise MatrixError(path, line(key_node), f"tokens.{key}",
                                  "is not a tokens field (known: tokenizer, ids, phrase)")
            values[key] = value_node
    except MatrixError:
        raise
    except PolicyFileError as error:
        raise MatrixError(error.path, error.line, error.field, error.problem) from None
    for required in ("tokenizer", "ids"):
        if required not in values:
            raise MatrixError(path, line(node), f"tokens.{required}", "is missing")
    fingerprint = _scalar(path, values["tokenizer"], "tokens.tokenizer")
    ids = plain(values["ids"])
    if (not isinstance(ids, list) or not ids
            or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ids)):
        raise MatrixError(path, line(values["ids"]), "tokens.ids",
                          "must be a non-empty list of token ids (whole numbers from 0)")
    phrase = _scalar(path, values["phrase"], "tokens.phrase") if "phrase" in values else None
    return TokenBinding(fingerprint, tuple(ids), phrase)


@dataclass
class _Loaded:
    signature: tuple = ("never",)
    matrix: Matrix = field(default_factory=lambda: Matrix(()))


class MatrixLibrary:
    """The matrix of a stack, layered; re-read when a file changes.

    A file that becomes malformed keeps contributing its last good motifs (if it had any)
    until it is fixed; the problem is in ``matrix().problems`` and logged (no text).
    """

    def __init__(self, dirs: Sequence[Layer], logger: logging.Logger | None = None) -> None:
        self.dirs = list(dirs)
        self.log = logger or logging.getLogger(__name__)
        self._loaded = _Loaded()
        self._good: dict[Path, list[Motif]] = {}

    def matrix(self) -> Matrix:
        """The motifs in effect now (re-read if a file changed)."""
        paths = files.yaml_files(self.dirs)
        stamp = files.signature(paths)
        if stamp == self._loaded.signature:
            return self._loaded.matrix
        merged: dict[str, Motif] = {}
        problems: list[PolicyFileError] = []
        owners = files.owners(self.dirs)
        for path in paths:
            user = owners.get(path.parent) == "user"
            try:
                motifs = parse_matrix(path)
            except MatrixError as error:
                problems.append(error)
                motifs = self._good.get(path, [])
                self.log.warning("policy matrix file not usable (%s); %s", error,
                                 "its last good motifs stay" if motifs else "it adds nothing",
                                 extra={"RUNA_EVENT": "policy_matrix_error"})
            else:
                self._good[path] = motifs
            for motif in motifs:
                kept = merged.get(motif.id)
                if user and kept is not None and owners.get(kept.source.parent) != "user":
                    refused = MatrixError(path, motif.line, "id", (
                        f"{motif.id!r} replaces the motif of {kept.source} line {kept.line}: "
                        "a user's matrix files may add motifs, not replace them; rename it"))
                    problems.append(refused)
                    self.log.warning("policy matrix motif not usable (%s)", refused,
                                     extra={"RUNA_EVENT": "policy_matrix_error"})
                    continue
                merged[motif.id] = motif
        self._loaded = _Loaded(stamp, Matrix(tuple(merged.values()), tuple(problems)))
        return self._loaded.matrix
