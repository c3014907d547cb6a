"""tokenWhisper's semantic tier (tier 2): what a text means, not which words it holds.

A text is cut into windows the embedding model can read whole (``windows``: at most its
``max_tokens`` word-pieces each, overlapping, so a prompt far past 256 tokens is judged
whole, never truncated), each window is embedded, and a small classifier fitted with numpy
(``Classifier``: one logistic head per kind of concern, plus how much nearer the window is to
the concern's tune examples than to the others, ``Neighbours``; weights in a packaged file
built by ``tools/build_tier2.py``) scores it. A head's score over the text is its highest window
score (max pooling: a harmful request hidden in a long text is not diluted by the text
around it). The matrix's ``exemplar`` motifs take part beside the heads: a window whose
cosine similarity to an exemplar reaches the cutoff is a hit of that motif, and the
exemplars of the harm categories name the category of a ``harm`` hit.

The tier gives hits (rule, category, weight, score); the policy set turns them into
actions exactly as it does tier 1's motifs (``interventions``), so a set, the lock and the
fail rule mean the same for both tiers. This module loads no model: the embedder is
injected (``runa.models.embedder.Embedder``), so tests use a deterministic one and the whisper
service and the CLI load the shipped model. docs/policy.md, "Tier 2".
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import math
import re
import time
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from runa.errors import RunaError
from runa.policy.matrix import Motif
from runa.policy.sets import PolicySet
from runa.policy.taxonomy import WEIGHTS, Action, Weight
from runa.policy.verdict import Intervention, Verdict

#: The classifier's heads, each a kind of concern with its own right action under ``default``.
HEADS = ("harm", "care", "advice", "circumvention")
#: The category of each head's hits (``harm``: the nearest harm exemplar's, else HARM_FALLBACK).
HEAD_CATEGORY = {"care": "suicide_self_harm", "advice": "specialized_advice",
                 "circumvention": "circumvention"}
HARM_FALLBACK = "non_violent_crimes"
#: Categories a ``harm`` hit may take (the others belong to a head of their own).
NOT_HARM = frozenset(HEAD_CATEGORY.values())
#: The heads that judge an answer: the others read the person's request (distress, advice
#: sought, a jailbreak) and, fitted on prompts, misread a model's answer (a story flagged as
#: circumvention); an answer is judged for harm and against the exemplars only.
OUTPUT_HEADS = frozenset({"harm"})
#: The rule name of a head's hit in interventions and the journal.
RULE_PREFIX = "tier2."
#: The rule of the fail rule's intervention when the semantic tier cannot answer.
UNAVAILABLE_RULE = "tier2.unavailable"
#: The exemplar similarity cutoff of a classifier file that does not carry a tuned one.
DEFAULT_EXEMPLAR_CUTOFF = 0.8
WINDOW_OVERLAP = 32
"""Word-pieces two neighbouring windows share, so a phrase cut by one edge is whole in the
other."""


class Tier2Error(RunaError):
    """The semantic tier cannot be used: its weights file or its embedding model."""

    exit_code = 69  # EX_UNAVAILABLE


class Embedder(Protocol):
    """What tier 2 needs of the embedding model (``runa.models.embedder.Embedder``)."""

    model_id: str
    dim: int
    max_tokens: int

    def count_tokens(self, text: str) -> int: ...

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


def packaged_weights() -> Path:
    """The shipped classifier (``runa/data/policy/tier2.npz``)."""
    return Path(str(resources.files("runa") / "data" / "policy" / "tier2.npz"))


# -- windows ---------------------------------------------------------------------------------

def windows(text: str, count_tokens: Callable[[str], int], max_tokens: int,
            overlap: int = WINDOW_OVERLAP) -> list[str]:
    """``text`` as overlapping windows of at most ``max_tokens`` word-pieces, covering all of
    it (whitespace between words becomes one space). A run without spaces longer than a
    window (a script written without spaces, an encoded blob) is cut by characters into
    pieces of at most a quarter window, joined with spaces, so it is judged like any other
    text, never refused by the embedder. One window when the text fits."""
    words: list[str] = []
    sizes: list[int] = []
    for word in text.split():
        size = max(1, count_tokens(word))
        if size <= max_tokens:
            words.append(word)
            sizes.append(size)
            continue
        for piece in _cut(word, count_tokens, max(1, max_tokens // 4)):
            words.append(piece)
            sizes.append(max(1, count_tokens(piece)))
    if not words:
        return [""]
    if sum(sizes) <= max_tokens:
        return [" ".join(words)]
    out: list[str] = []
    start = 0
    while start < len(words):
        end, used = start, 0
        while end < len(words) and (used + sizes[end] <= max_tokens or end == start):
            used += sizes[end]
            end += 1
        out.append(" ".join(words[start:end]))
        if end >= len(words):
            break
        back, shared = end, 0  # step back by about ``overlap`` word-pieces
        while back - 1 > start and shared + sizes[back - 1] <= overlap:
            back -= 1
            shared += sizes[back]
        start = back
    return out


def _cut(word: str, count_tokens: Callable[[str], int], target: int) -> list[str]:
    """``word`` in consecutive pieces of at most ``target`` word-pieces each (by characters,
    halved until they fit; a single character is never cut)."""
    size = count_tokens(word)
    if size <= target or len(word) == 1:
        return [word]
    parts = -(-size // target)  # ceil: about this many pieces
    length = max(1, -(-len(word) // parts))
    out: list[str] = []
    for at in range(0, len(word), length):
        piece = word[at:at + length]
        if count_tokens(piece) <= target or len(piece) == 1:
            out.append(piece)
        else:
            half = len(piece) // 2
            out += _cut(piece[:half], count_tokens, target)
            out += _cut(piece[half:], count_tokens, target)
    return out


# -- lexical features ------------------------------------------------------------------------

LEXICAL_SCHEME = "words-1-2/blake2b-64-signed/sublinear-tf/l2"
"""How ``lexical_features`` reads a text; a classifier file names the scheme it was fitted on."""
_WORD = re.compile(r"\w+")


def lexical_grams(text: str) -> list[str]:
    """The casefolded text's words and pairs of neighbouring words."""
    words = _WORD.findall(text.casefold())
    return words + [f"{a} {b}" for a, b in itertools.pairwise(words)]


def lexical_features(texts: Sequence[str], buckets: int) -> np.ndarray:
    """(n, buckets) hashed word unigrams and bigrams of each text: each gram's 1 + log(count)
    added, with a sign, into the bucket a stable hash (blake2b, never Python's salted
    ``hash``) gives it; rows L2-normalised. Lexical cues (a named person's records, a quiet
    request for figures) that a small sentence embedding blurs."""
    out = np.zeros((len(texts), buckets), dtype=np.float32)
    for row, text in enumerate(texts):
        counts: dict[str, int] = {}
        for gram in lexical_grams(text):
            counts[gram] = counts.get(gram, 0) + 1
        for gram, count in counts.items():
            code = int.from_bytes(hashlib.blake2b(gram.encode("utf-8"), digest_size=8).digest(),
                                  "big")
            sign = -1.0 if code >> 63 else 1.0
            out[row, code % buckets] += sign * (1.0 + math.log(count))
        norm = float(np.linalg.norm(out[row]))
        if norm > 0:
            out[row] /= norm
    return out


@dataclass(frozen=True)
class Lexical:
    """Each head's weights over ``lexical_features`` (added to its logit): what the words
    say beside what the embedding says."""

    weights: np.ndarray  # (len(heads), buckets) float32
    scheme: str = LEXICAL_SCHEME

    @property
    def buckets(self) -> int:
        return int(self.weights.shape[1])

    def logits(self, texts: Sequence[str]) -> np.ndarray:
        """(n, len(heads)) each text's lexical part of each head's logit."""
        return lexical_features(texts, self.buckets) @ self.weights.T


# -- the classifier --------------------------------------------------------------------------

@dataclass(frozen=True)
class Neighbours:
    """The windows the heads were fitted on, for what a linear head over a small embedding
    cannot draw: how much nearer a window is to a head's concern than to the rest (the mean
    similarity of its ``k`` nearest examples of each, the "margin"), added to the head's
    logit times ``mix[head]``."""

    vectors: np.ndarray  # (m, dim) float16, unit length
    labels: np.ndarray  # (len(heads), m) int8: 1 the head's concern, -1 not, 0 left out
    mix: np.ndarray  # (len(heads),) float32
    k: int = 3

    def margins(self, vectors: np.ndarray) -> np.ndarray:
        """(n, len(heads)) margin of each row of ``vectors``."""
        similarity = np.asarray(vectors, dtype=np.float32) @ self.vectors.astype(np.float32).T
        out = np.zeros((similarity.shape[0], self.labels.shape[0]), dtype=np.float32)
        for head, labels in enumerate(self.labels):
            near = [np.sort(similarity[:, labels == side], axis=1)[:, -self.k:].mean(axis=1)
                    if np.any(labels == side) else np.zeros(similarity.shape[0])
                    for side in (1, -1)]
            out[:, head] = near[0] - near[1]
        return out


@dataclass(frozen=True)
class Classifier:
    """One logistic head per concern over an embedding: p = sigmoid(W·x + b), plus, with
    ``neighbours``, ``mix`` times the window's nearest-example margin inside the sigmoid.

    ``cutoffs[head][weight]`` is the least score at which the head reports a hit of that
    weight (a weight absent from the mapping is never reported); the strongest weight whose
    cutoff the score reaches wins. ``contrast[head][other]`` (optional) is ``k`` when the
    head's hit is decided on its text's score less ``k`` times ``other``'s (``decided``): a
    harm score that an advice score explains away reports nothing. ``meta`` says how the file
    was built (the script, the data's hashes, the embedding model) and is kept as it was read.
    """

    heads: tuple[str, ...]
    weights: np.ndarray  # (len(heads), dim) float32
    bias: np.ndarray  # (len(heads),) float32
    cutoffs: Mapping[str, Mapping[str, float]]
    embedding_model: str  # the embedder's model_id the heads were fitted on
    meta: Mapping[str, Any] = field(default_factory=dict)
    neighbours: Neighbours | None = None
    lexical: Lexical | None = None
    contrast: Mapping[str, Mapping[str, float]] = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return int(self.weights.shape[1])

    def scores(self, vectors: np.ndarray, texts: Sequence[str] | None = None) -> np.ndarray:
        """(n, len(heads)) scores in 0..1 of each row of ``vectors`` (n, dim), the embeddings
        of ``texts`` (needed when the classifier has ``lexical`` weights)."""
        logits = np.asarray(vectors, dtype=np.float32) @ self.weights.T + self.bias
        if self.neighbours is not None:
            logits = logits + self.neighbours.mix * self.neighbours.margins(vectors)
        if self.lexical is not None:
            if texts is None or len(texts) != len(logits):
                raise ValueError("a classifier with lexical weights scores texts with their "
                                 "vectors")
            logits = logits + self.lexical.logits(texts)
        return (1.0 / (1.0 + np.exp(-np.clip(logits, -60.0, 60.0)))).astype(np.float32)

    def decided(self, head: str, pooled: Mapping[str, float]) -> float:
        """The score ``head``'s cutoffs are compared with: its pooled score less each
        ``contrast`` head's pooled score times its factor."""
        return pooled[head] - sum(k * pooled[other]
                                  for other, k in self.contrast.get(head, {}).items())

    def weight_of(self, head: str, score: float) -> Weight | None:
        """The weight a ``score`` of ``head`` reports (None: below every cutoff)."""
        found = None
        for weight in WEIGHTS:
            cutoff = self.cutoffs.get(head, {}).get(weight.value)
            if cutoff is not None and score >= cutoff:
                found = weight
        return found

    @property
    def exemplar_cutoff(self) -> float:
        """The cosine similarity at which an exemplar motif hits, tuned with the heads (meta
        ``exemplar_cutoff``; DEFAULT_EXEMPLAR_CUTOFF in a file without one)."""
        return float(self.meta.get("exemplar_cutoff", DEFAULT_EXEMPLAR_CUTOFF))

    def save(self, path: Path) -> None:
        """Write the classifier as an ``.npz`` (no pickles: ``meta`` is JSON). The same
        classifier always gives the same bytes (fixed member order and timestamps), so a
        rebuild can be compared with the committed file."""
        header: dict[str, Any] = {
            "heads": list(self.heads),
            "cutoffs": {h: dict(c) for h, c in self.cutoffs.items()},
            "embedding_model": self.embedding_model, "meta": dict(self.meta)}
        if self.contrast:
            header["contrast"] = {h: dict(c) for h, c in self.contrast.items()}
        members = {"weights": self.weights.astype(np.float32),
                   "bias": self.bias.astype(np.float32)}
        if self.neighbours is not None:
            header["neighbour_k"] = self.neighbours.k
            members.update(neighbour_vectors=self.neighbours.vectors.astype(np.float16),
                           neighbour_labels=self.neighbours.labels.astype(np.int8),
                           neighbour_mix=self.neighbours.mix.astype(np.float32))
        if self.lexical is not None:
            header["lexical_scheme"] = self.lexical.scheme
            members["lexical_weights"] = self.lexical.weights.astype(np.float32)
        members["header"] = np.array(json.dumps(header, sort_keys=True))
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
            for name, array in members.items():
                member = io.BytesIO()
                np.lib.format.write_array(member, array, allow_pickle=False)
                info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
                info.external_attr = 0o644 << 16
                archive.writestr(info, member.getvalue())
        path.write_bytes(buffer.getvalue())

    @classmethod
    def load(cls, path: Path) -> Classifier:
        """Read a classifier file; Tier2Error naming the file and what is wrong."""
        try:
            with zipfile.ZipFile(path) as archive:  # an .npz; never unpickles
                names = {"weights", "bias", "header"} | ({
                    "neighbour_vectors", "neighbour_labels", "neighbour_mix", "lexical_weights"}
                    & {n.removesuffix(".npy") for n in archive.namelist()})
                data = {name: np.lib.format.read_array(io.BytesIO(archive.read(name + ".npy")),
                                                       allow_pickle=False)
                        for name in sorted(names)}
            weights = np.asarray(data["weights"], dtype=np.float32)
            bias = np.asarray(data["bias"], dtype=np.float32)
            header = json.loads(str(data["header"]))
            if not isinstance(header, dict):
                raise ValueError("its header is not a JSON object")
        except (OSError, KeyError, ValueError, zipfile.BadZipFile) as error:
            raise Tier2Error(f"{path}: not a tier-2 classifier file: {error}") from None
        heads = tuple(header.get("heads", ()))
        if weights.ndim != 2 or weights.shape[0] != len(heads) or bias.shape != (len(heads),):
            raise Tier2Error(f"{path}: weights {weights.shape} and bias {bias.shape} do not "
                             f"match its {len(heads)} heads")
        unknown = set(heads) - set(HEADS)
        if unknown:
            raise Tier2Error(f"{path}: unknown heads {sorted(unknown)} (known: {HEADS})")
        neighbours = None
        if "neighbour_vectors" in data:
            neighbours = Neighbours(data["neighbour_vectors"], data["neighbour_labels"],
                                    np.asarray(data["neighbour_mix"], dtype=np.float32),
                                    int(header.get("neighbour_k", 3)))
            m = neighbours.vectors.shape[0]
            if (neighbours.vectors.shape != (m, weights.shape[1])
                    or neighbours.labels.shape != (len(heads), m)
                    or neighbours.mix.shape != (len(heads),)):
                raise Tier2Error(f"{path}: its neighbours do not match its heads and weights")
        lexical = None
        if "lexical_scheme" in header or "lexical_weights" in data:
            scheme = header.get("lexical_scheme")
            if scheme != LEXICAL_SCHEME:
                raise Tier2Error(f"{path}: lexical features {scheme!r}, this version reads "
                                 f"{LEXICAL_SCHEME!r}")
            if "lexical_weights" not in data:
                raise Tier2Error(f"{path}: names lexical features but has no lexical weights")
            lexical = Lexical(np.asarray(data["lexical_weights"], dtype=np.float32))
            if lexical.weights.ndim != 2 or lexical.weights.shape[0] != len(heads):
                raise Tier2Error(f"{path}: lexical weights {lexical.weights.shape} do not match "
                                 f"its {len(heads)} heads")
        contrast = header.get("contrast", {})
        if not (isinstance(contrast, dict) and all(
                head in heads and isinstance(others, dict)
                and all(other in heads and isinstance(k, (int, float))
                        for other, k in others.items())
                for head, others in contrast.items())):
            raise Tier2Error(f"{path}: its contrast does not name its heads with factors")
        cutoffs = header.get("cutoffs", {})
        weight_names = {weight.value for weight in WEIGHTS}
        if not (isinstance(cutoffs, dict) and all(
                head in heads and isinstance(levels, dict)
                and all(level in weight_names and _is_number(cut)
                        for level, cut in levels.items())
                for head, levels in cutoffs.items())):
            raise Tier2Error(f"{path}: its cutoffs do not map its heads to weights "
                             f"({', '.join(sorted(weight_names))}) and numbers")
        meta = header.get("meta", {})
        if not isinstance(meta, dict) or not _is_number(meta.get("exemplar_cutoff", 0.0)):
            raise Tier2Error(f"{path}: its meta is not a JSON object with a numeric "
                             "exemplar_cutoff")
        return cls(heads, weights, bias, cutoffs, str(header.get("embedding_model", "")), meta,
                   neighbours, lexical, contrast)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# -- judging ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Hit:
    """One concern tier 2 found: a head's (rule ``tier2.<head>``) or an exemplar motif's."""

    rule: str
    category: str
    weight: Weight
    score: float  # the head's pooled probability, or the exemplar's cosine similarity
    window: int  # the window that scored highest

    def to_dict(self) -> dict[str, Any]:
        return {"rule": self.rule, "category": self.category, "weight": self.weight.value,
                "score": round(float(self.score), 4), "window": self.window}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Hit:
        return cls(str(data["rule"]), str(data["category"]), Weight(data["weight"]),
                   float(data["score"]), int(data["window"]))


@dataclass(frozen=True)
class Judgement:
    """Tier 2's answer about one text: its hits, each head's pooled score, and the cost."""

    hits: tuple[Hit, ...]
    scores: Mapping[str, float]
    windows: int
    elapsed_ms: float

    def to_dict(self) -> dict[str, Any]:
        return {"hits": [hit.to_dict() for hit in self.hits],
                "scores": {k: round(float(v), 4) for k, v in self.scores.items()},
                "windows": self.windows, "elapsed_ms": round(self.elapsed_ms, 3)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Judgement:
        return cls(tuple(Hit.from_dict(hit) for hit in data.get("hits", ())),
                   {str(k): float(v) for k, v in data.get("scores", {}).items()},
                   int(data.get("windows", 0)), float(data.get("elapsed_ms", 0.0)))


class SemanticTier:
    """Tier 2 with one embedder, one classifier and the matrix's exemplars."""

    def __init__(self, embedder: Embedder, classifier: Classifier,
                 exemplars: Sequence[Motif] = (), *, exemplar_cutoff: float | None = None,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        if classifier.dim != embedder.dim:
            raise Tier2Error(f"the classifier reads {classifier.dim}-d vectors, the "
                             f"embedding model {embedder.model_id} gives {embedder.dim}")
        self.embedder = embedder
        self.classifier = classifier
        self.exemplar_cutoff = (classifier.exemplar_cutoff if exemplar_cutoff is None
                                else exemplar_cutoff)
        self._clock = clock
        self.exemplars = tuple(m for m in exemplars if m.kind == "exemplar")
        self._exemplar_vectors = (embedder.embed([m.pattern for m in self.exemplars])
                                  if self.exemplars else np.zeros((0, embedder.dim),
                                                                  dtype=np.float32))

    def windows(self, text: str) -> list[str]:
        return windows(text, self.embedder.count_tokens, self.embedder.max_tokens)

    def judge(self, text: str, side: str = "prompt") -> Judgement:
        """Every hit in ``text`` (the whole of it, in windows) on ``side``."""
        if side not in ("prompt", "output"):
            raise ValueError(f"side must be prompt or output, not {side!r}")
        started = self._clock()
        parts = self.windows(text)
        vectors = self.embedder.embed(parts)
        scores = self.classifier.scores(vectors, parts)  # (windows, heads)
        similarity = vectors @ self._exemplar_vectors.T  # (windows, exemplars)
        hits: list[Hit] = []
        heads = self.classifier.heads
        pooled = {head: float(np.max(scores[:, column])) for column, head in enumerate(heads)}
        for column, head in enumerate(heads):
            if side == "output" and head not in OUTPUT_HEADS:
                continue
            best = int(np.argmax(scores[:, column]))
            score = self.classifier.decided(head, pooled)
            weight = self.classifier.weight_of(head, score)
            if weight is not None:
                category = HEAD_CATEGORY.get(head) or self._harm_category(similarity[best])
                hits.append(Hit(RULE_PREFIX + head, category, weight, score, best))
        for column, motif in enumerate(self.exemplars):
            if not motif.on(side):
                continue
            best = int(np.argmax(similarity[:, column]))
            if similarity[best, column] >= self.exemplar_cutoff:
                hits.append(Hit(motif.id, motif.category, motif.weight,
                                float(similarity[best, column]), best))
        return Judgement(tuple(hits), pooled, len(parts),
                         (self._clock() - started) * 1000.0)

    def _harm_category(self, similarity: np.ndarray) -> str:
        """The category of the harm exemplar nearest the window (HARM_FALLBACK without one)."""
        best, category = -2.0, HARM_FALLBACK
        for column, motif in enumerate(self.exemplars):
            if motif.category not in NOT_HARM and similarity[column] > best:
                best, category = float(similarity[column]), motif.category
        return category


# -- what the policy set does with it ---------------------------------------------------------

def interventions(judgement: Judgement, policy: PolicySet, side: str,
                  token_index: int | None = None, conversation: str = "") -> list[Intervention]:
    """The interventions ``policy`` makes of tier 2's hits (allowed hits leave none). A hit in
    a ``delay`` cell blocks: tier 2 is the tier a delay waits for, and it found the concern."""
    out = []
    for hit in judgement.hits:
        action = policy.action(hit.category, hit.weight)
        reason = ""
        if action is Action.DELAY:
            action, reason = Action.BLOCK, "delay: the semantic tier confirmed it"
        if action is Action.ALLOW:
            continue
        if action is Action.MASK:  # tier 2 has no span to mask: the window is the match
            action, reason = Action.BLOCK, "the semantic tier cannot mask a meaning"
        out.append(Intervention(rule=hit.rule, category=hit.category, weight=hit.weight.value,
                                action=action.value, side=side, policy=policy.name,
                                token_index=token_index, conversation=conversation,
                                reason=reason))
    return out


def unavailable(policy: PolicySet, side: str, why: str, conversation: str = "") -> Intervention:
    """The fail rule's intervention when tier 2 cannot answer: block when the set fails
    closed, flag when it fails open; the reason says which and why."""
    action = Action.BLOCK if policy.fail == "closed" else Action.FLAG
    return Intervention(rule=UNAVAILABLE_RULE, category="", weight="", action=action.value,
                        side=side, policy=policy.name, conversation=conversation,
                        reason=f"semantic tier unavailable ({why}): fail {policy.fail}")


def merge(verdict: Verdict, extra: Sequence[Intervention], policy: PolicySet,
          judgement: Judgement | None = None) -> Verdict:
    """Tier 1's verdict with tier 2's interventions (and its whispers) added: the action is
    the strictest of both, categories and rules the union, the score the highest."""
    if not extra and judgement is None:
        return verdict
    strictest = verdict.action
    whispers = list(verdict.whispers)
    for item in extra:
        action = Action(item.action)
        strictest = strictest.stricter(action)
        if action is Action.WHISPER:
            note = policy.whisper(item.category)
            if note and note not in whispers:
                whispers.append(note)
    hits = judgement.hits if judgement is not None else ()
    categories = tuple(dict.fromkeys([*verdict.categories, *(h.category for h in hits)]))
    rules = tuple(dict.fromkeys([*verdict.rules, *(h.rule for h in hits)]))
    score = max([verdict.score, *(h.weight.score for h in hits)])
    return Verdict(action=strictest, categories=categories, score=score, rules=rules,
                   interventions=(*verdict.interventions, *extra), text=verdict.text,
                   whispers=tuple(whispers))

