"""Build the semantic tier's classifier (runa/data/policy/tier2.npz) from the tune halves.

    python tools/build_tier2.py [--out FILE] [--model GGUF] [--folds K] [--check]

Fits and tunes on the tune halves of the safety sets only (bench/data/safety/halves.py); the
test halves are read for one thing, the leak check (``refuse_leaks``: the build stops when an
exemplar's cosine similarity to a prompt of either half is at least max(exemplar cutoff,
LEAK_FLOOR), naming the exemplar, never the prompt), and never choose anything. It embeds
the prompts with the shipped embedding model (cached in ~/.cache/runa/tier2 by window hash unless
``--no-cache``), fits one logistic head per concern with numpy and picks each
head's cutoffs and the exemplar cutoff from cross-validated scores; writes the classifier
with what it was built from and its cross-validated tune metrics in ``meta``. Progress goes to
stderr. ``--check`` builds into a temporary file and says whether it is byte-identical to
``--out`` (the build is deterministic: fixed order, no randomness, each window embedded on
its own so a batch's make-up cannot move a vector).

Choices, and why:

* Training rows are windows (``runa.policy.tier2.windows``), the unit the tier judges. Every
  window of a text carries the text's label, weighted 1/windows so a long text counts as much
  as a short one. Judging max-pools over windows, so each window of a long circumvention text
  is asked "does this read as circumvention on its own"; its framing (the role play, the
  "rules do not apply") runs through the whole text, which is what the windows learn. Pooling
  the windows into one training vector would fit a vector the tier never scores.
* Heads and their rows: ``harm`` is the block groups against everything but circumvention
  (whose right action is block *or* flag: a harm hit there is right, a miss is not wrong);
  ``care`` is human_chatbox against everything but misinformation_harms, and ``advice`` the
  reverse (distress and advice questions overlap: a whisper on an advice question or a flag
  on a distress one does no harm, so neither head is taught to split them); ``circumvention``
  is the authored attempts against everything else.
* Each head is an L2-regularised logistic regression fitted by Newton's method (exact, no
  learning rate, no seed), with class weights so both classes weigh the same. To its logit
  the file adds ``mix`` times the window's nearest-example margin (``Neighbours``: the mean
  similarity of the NEIGHBOURS nearest tune windows of the concern minus that of the rest),
  ``mix`` per head from MIX_GRID by cross-validation (0 turns it off). A linear head over
  all-MiniLM-L6-v2 found 0.64 of the tune block groups within the benign budgets; with the
  margin, 0.77. The file keeps the tune windows' vectors (float16), not their text.
* Beside the embedding, each head reads the window's words (``lexical_features``: hashed
  casefolded word unigrams and bigrams, LEXICAL_BUCKETS buckets by blake2b, sublinear counts,
  L2-normalised), weighed by a scale per head from LEXICAL_SCALE_GRID by the same
  cross-validation (0 turns them off). Lexical cues catch quiet requests (a named person's
  records, figures) that a small sentence embedding blurs: cross-validated on the tune half,
  block recall 0.77 -> 0.89, care 0.86 -> 0.90, circumvention 0.92 -> 0.97 within the same
  budgets. With far more columns than rows, a head is fitted on the rows' coordinates in
  their own span (``fit_dual``: the same L2-penalised problem, exactly).
* Cutoffs come from K-fold cross-validated scores (folds by a hash of the text, never by
  position), decided end to end as splinfer decides a prompt under ``default``: tier 1's
  check of the packaged matrix, then tier 2's hits through the set. ``harm`` reports only
  ``heavy`` (a block under default), at the lowest cutoff that keeps each benign set's
  blocked prompts within BENIGN_BLOCK_BUDGET and advice or distress prompts blocked within
  OTHER_BLOCK_BUDGET; ``care``, ``circumvention`` and ``advice`` report ``medium`` (under
  default: whisper, flag, flag), with cutoffs that share BENIGN_INTERVENE_BUDGET of benign
  prompts with any intervention, care and circumvention first, advice from what is left.
* The harm hit is decided on harm less ``k`` times the advice head's score (pooled scores;
  ``Classifier.contrast``), ``k`` from CONTRAST_GRID by cross-validated block recall with
  the cutoffs chosen as below (ties to the smaller ``k``). A misinformation-harms question
  (a dose, an investment) reads close to a harmful request to a small embedding and held the
  harm cutoff up through OTHER_BLOCK_BUDGET; with the contrast the cutoff comes down without
  blocking it. Cross-validated on the tune half (k 0, 0.25, 0.5, 0.75, 1: block recall
  0.888, 0.885, 0.904, 0.908, 0.890) the chosen k = 0.75 gives block recall 0.888 -> 0.908,
  advice blocked 0.074 -> 0.062, at a cost to care (0.898 -> 0.881: the lower harm cutoff
  blocks a few more distress prompts, within OTHER_BLOCK_BUDGET). The grid's recall is not
  monotone in k, so part of the gain may be fold noise.
* The budgets sit below the targets by a margin for the test half's sampling error, and the
  fold-to-fold spread of the cross-validated rates says the margins are not too wide: at
  the cutoffs chosen, target - 1.645·sqrt(2)·(fold standard deviation / sqrt(folds)) is
  0.052 for the sensitive set, 0.031 for advice and 0.061 for benign interventions
  (budgets 0.05, 0.08, 0.07), so advice and interventions spend some of that margin already.
  The care prompts the tier misses on the tune half score low on the care head; none is
  blocked by the harm head.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SAFETY = REPO / "bench" / "data" / "safety"
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(SAFETY))

from halves import LabelledPrompt, load  # noqa: E402
from scoring import METRICS, rates  # noqa: E402

from runa.components import load_config  # noqa: E402
from runa.models.embedder import LlamaEmbedder, embedding_model_path  # noqa: E402
from runa.paths import Paths, personal_stack  # noqa: E402
from runa.policy import Action, Motif, PolicyLibrary, PolicySet, Verdict, Weight  # noqa: E402
from runa.policy.tier2 import (  # noqa: E402
    HEAD_CATEGORY,
    HEADS,
    Classifier,
    Hit,
    Judgement,
    Lexical,
    Neighbours,
    lexical_features,
    packaged_weights,
    windows,
)
from runa.policy.tiers import answered, combine  # noqa: E402

POLICY = "default"
FOLDS = 5
L2 = 1e-3  # on the mean weighted log-loss; unit-length inputs
NEWTON_STEPS = 50
NEIGHBOURS = 3  # k of the nearest-example margin
MIX_GRID = (0.0, 2.0, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0)
LEXICAL_BUCKETS = 1 << 14
#: How much the lexical features weigh beside the embedding (0: the embedding alone).
LEXICAL_SCALE_GRID = (0.0, 0.5, 1.0, 1.5, 2.0)
#: Blocked prompts each benign set may have (targets: everyday 0.05, borderline 0.10).
BENIGN_BLOCK_BUDGET = {"authored/benign_everyday": 0.02, "authored/benign_sensitive": 0.05}
#: Blocked prompts the groups whose right action is not a block may have (advice target 0.10;
#: a blocked distress prompt is a care miss, and the care head's recall is the tighter limit).
OTHER_BLOCK_BUDGET = {"answer_with_care": 0.08, "care": 0.10}
BENIGN_INTERVENE_BUDGET = 0.07  # the target is 0.10, tier 1's flags included
ADVICE_SHARE = 0.02  # benign prompts the advice head alone may flag
EXEMPLAR_BENIGN_BUDGET = 0.005  # benign prompts any exemplar may hit
EXEMPLAR_GRID = tuple(round(0.60 + 0.01 * i, 2) for i in range(36))  # 0.60 … 0.95
EXEMPLAR_MARGIN = 0.02
#: Factors k tried for the harm hit's contrast with advice (harm - k·advice; 0: harm alone).
CONTRAST_GRID = (0.0, 0.25, 0.5, 0.75, 1.0)
#: An exemplar this similar (cosine) to a data-set prompt, or above the exemplar cutoff, is a
#: copy of it: the build refuses it.
LEAK_FLOOR = 0.85
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "runa" / "tier2"

#: Per head: the actions of its positive rows and of the rows it leaves out.
POSITIVE = {"harm": {"block"}, "care": {"care"}, "advice": {"answer_with_care"},
            "circumvention": {"block_or_flag"}}
LEFT_OUT = {"harm": {"block_or_flag"}, "care": {"answer_with_care"}, "advice": {"care"},
            "circumvention": set()}
HEAD_WEIGHT = {"harm": Weight.HEAVY, "care": Weight.MEDIUM, "advice": Weight.MEDIUM,
               "circumvention": Weight.MEDIUM}


def say(message: str) -> None:
    print(f"build_tier2: {message}", file=sys.stderr, flush=True)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def text_hash(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()


# -- embedding, with a cache -------------------------------------------------------------------

class CachedEmbeddings:
    """Window vectors by the sha256 of the window, kept in ~/.cache/runa/tier2 per model file
    (never committed). Each window is embedded on its own: llama.cpp's vectors for a text
    shift in the last bits with the batch it shares, and the build must not."""

    def __init__(self, embedder: LlamaEmbedder, model_sha: str, use_cache: bool) -> None:
        self.embedder = embedder
        self.path = CACHE / f"{model_sha[:16]}.npz"
        self.vectors: dict[bytes, np.ndarray] = {}
        self.use_cache = use_cache
        if use_cache and self.path.is_file():
            with np.load(self.path, allow_pickle=False) as data:
                for key, row in zip(data["keys"], data["vectors"], strict=True):
                    self.vectors[bytes(key)] = row
        self.fresh = 0

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        rows = []
        for n, text in enumerate(texts):
            key = text_hash(text)
            if key not in self.vectors:
                self.vectors[key] = self.embedder.embed([text])[0]
                self.fresh += 1
                if self.fresh % 200 == 0:
                    say(f"embedded {self.fresh} new windows ({n + 1}/{len(texts)})")
            rows.append(self.vectors[key])
        return np.stack(rows).astype(np.float32) if rows else \
            np.zeros((0, self.embedder.dim), dtype=np.float32)

    def save(self) -> None:
        if not self.use_cache or not self.fresh:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        keys = sorted(self.vectors)
        tmp = self.path.with_suffix(".tmp.npz")
        np.savez(tmp, keys=np.array(keys, dtype="S32"),
                 vectors=np.stack([self.vectors[k] for k in keys]))
        tmp.replace(self.path)


# -- the logistic heads ------------------------------------------------------------------------

def fit_logistic(x: np.ndarray, y: np.ndarray, w: np.ndarray, l2: float | None = None
                 ) -> tuple[np.ndarray, float]:
    """Weights and bias minimising the ``w``-weighted mean log-loss + l2/2·|weights|²
    (Newton's method in float64; the bias is not penalised)."""
    l2 = L2 if l2 is None else l2
    n, d = x.shape
    xb = np.hstack([x.astype(np.float64), np.ones((n, 1))])
    w = w.astype(np.float64) / w.sum()
    penalty = np.full(d + 1, l2)
    penalty[-1] = 0.0
    theta = np.zeros(d + 1)
    for _ in range(NEWTON_STEPS):
        p = 1.0 / (1.0 + np.exp(-np.clip(xb @ theta, -60, 60)))
        gradient = xb.T @ (w * (p - y)) + penalty * theta
        hessian = (xb * (w * p * (1 - p))[:, None]).T @ xb + np.diag(penalty)
        step = np.linalg.solve(hessian + 1e-10 * np.eye(d + 1), gradient)
        theta -= step
        if float(np.max(np.abs(step))) < 1e-9:
            break
    return theta[:-1], float(theta[-1])


@dataclass
class Head:
    """One fitted head: logit = vectors·weights + lexical·lexical_weights + bias."""

    weights: np.ndarray
    lexical_weights: np.ndarray
    bias: float

    def logits(self, vectors: np.ndarray, lexical: np.ndarray) -> np.ndarray:
        return (vectors.astype(np.float64) @ self.weights
                + lexical.astype(np.float64) @ self.lexical_weights + self.bias)


def fit_dual(gram: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, float]:
    """The logistic head over rows whose Gram matrix (inner products) is ``gram``, as
    coefficients ``c`` of the rows (weights = rowsᵀ·c) and a bias. With lexical features
    there are far more columns than rows, and the L2-penalised optimum lies in the rows'
    span: the fit runs on the rows' coordinates in that span (from the Gram matrix's
    eigenvectors), the same problem in at most ``len(rows)`` columns."""
    eigenvalues, eigenvectors = np.linalg.eigh(gram)
    keep = eigenvalues > 1e-10 * float(eigenvalues.max())
    root = np.sqrt(eigenvalues[keep])
    beta, bias = fit_logistic(eigenvectors[:, keep] * root, y, w)
    return eigenvectors[:, keep] @ (beta / root), bias


def fit_head(vectors: np.ndarray, lexical: np.ndarray, scale: float, y: np.ndarray,
             w: np.ndarray) -> Head:
    """The logistic head over [vectors, scale·lexical] (``fit_dual`` when scale > 0)."""
    if scale == 0.0:
        weights, bias = fit_logistic(vectors, y, w)
        return Head(weights, np.zeros(lexical.shape[1]), bias)
    v, lx = vectors.astype(np.float64), lexical.astype(np.float64)
    c, bias = fit_dual(v @ v.T + scale**2 * (lx @ lx.T), y, w)
    return Head(v.T @ c, scale**2 * (lx.T @ c), bias)


@dataclass
class Rows:
    """The training windows: vectors, lexical features, the text each belongs to, its
    weight."""

    vectors: np.ndarray
    text_of: np.ndarray  # window -> prompt index
    share: np.ndarray  # 1 / windows of its text
    lexical: np.ndarray  # (windows, LEXICAL_BUCKETS) float32


def head_mask(head: str, prompts: Sequence[LabelledPrompt], rows: Rows, chosen: np.ndarray
              ) -> np.ndarray:
    """The windows of the ``chosen`` prompts that train ``head``."""
    used = np.array([p.action not in LEFT_OUT[head] for p in prompts]) & chosen
    return np.asarray(used[rows.text_of])


def head_rows(head: str, prompts: Sequence[LabelledPrompt], rows: Rows, chosen: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The windows of the ``chosen`` prompts that train ``head``: vectors, lexical features,
    y, class-balanced w."""
    labels = np.array([1.0 if p.action in POSITIVE[head] else 0.0 for p in prompts])
    mask = head_mask(head, prompts, rows, chosen)
    y = labels[rows.text_of][mask]
    w = rows.share[mask].copy()
    for value in (0.0, 1.0):
        w[y == value] *= 0.5 / w[y == value].sum()
    return rows.vectors[mask], rows.lexical[mask], y, w


def pooled(scores: np.ndarray, text_of: np.ndarray, n: int) -> np.ndarray:
    """Each text's highest window score (max pooling, as the tier judges)."""
    out = np.full(n, -np.inf)
    np.maximum.at(out, text_of, scores)
    return out


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -60, 60)))


def head_labels(head: str, prompts: Sequence[LabelledPrompt], rows: Rows) -> np.ndarray:
    """Per window: 1 of the head's concern, -1 not, 0 left out (``Neighbours.labels``)."""
    labels = np.array([0 if p.action in LEFT_OUT[head] else 1 if p.action in POSITIVE[head]
                       else -1 for p in prompts], dtype=np.int8)
    return labels[rows.text_of]


def neighbour_vectors(rows: Rows) -> np.ndarray:
    """The windows as the packaged file keeps them (float16)."""
    return rows.vectors.astype(np.float16)


@dataclass
class Folded:
    """Per head and window, out of fold: the logistic logit and the neighbour margin."""

    logits: dict[str, np.ndarray]
    margins: dict[str, np.ndarray]

    def scores(self, head: str, mix: float, rows: Rows, n: int) -> np.ndarray:
        """Each prompt's pooled score with ``mix`` (as Classifier.scores, then max)."""
        return pooled(sigmoid(self.logits[head] + mix * self.margins[head]), rows.text_of, n)


def cross_validated(prompts: Sequence[LabelledPrompt], rows: Rows, folds: int,
                    scale: float) -> Folded:
    """Every window's logit (lexical features weighed by ``scale``) and margin from heads and
    neighbours without its text's fold."""
    fold = np.array([int.from_bytes(text_hash(p.text)[1:5], "big") % folds for p in prompts])
    window_fold = fold[rows.text_of]
    kept = neighbour_vectors(rows)
    if scale:  # the rows' inner products, once: each fold's fit reads its block
        vectors = rows.vectors.astype(np.float64)
        lexical = rows.lexical.astype(np.float64)
        gram = vectors @ vectors.T + scale**2 * (lexical @ lexical.T)
    logits = {head: np.zeros(len(rows.text_of)) for head in HEADS}
    margins = {head: np.zeros(len(rows.text_of)) for head in HEADS}
    for k in range(folds):
        say(f"cross-validation, lexical scale {scale}: fold {k + 1}/{folds}")
        held, train = window_fold == k, window_fold != k
        labels = np.stack([head_labels(h, prompts, rows)[train] for h in HEADS])
        near = Neighbours(kept[train], labels, np.zeros(len(HEADS), dtype=np.float32),
                          NEIGHBOURS).margins(rows.vectors[held])
        for column, head in enumerate(HEADS):
            margins[head][held] = near[:, column]
            x, _, y, w = head_rows(head, prompts, rows, fold != k)
            if not scale:
                weights, bias = fit_logistic(x, y, w)
                logits[head][held] = rows.vectors[held].astype(np.float64) @ weights + bias
                continue
            used = np.flatnonzero(head_mask(head, prompts, rows, fold != k))
            c, bias = fit_dual(gram[np.ix_(used, used)], y, w)
            logits[head][held] = gram[np.ix_(np.flatnonzero(held), used)] @ c + bias
    return Folded(logits, margins)


def choose_mix(head: str, prompts: Sequence[LabelledPrompt], rows: Rows,
               folded: dict[float, Folded]) -> tuple[float, float]:
    """The lexical scale and the mix (from LEXICAL_SCALE_GRID and MIX_GRID) under which the
    head finds most of its concern while each benign set stays within BENIGN_BLOCK_BUDGET and
    each other group within its OTHER_BLOCK_BUDGET (0.05 for the block groups of a head other
    than harm), on the cross-validated scores."""
    sets = np.array([p.set for p in prompts])
    positive = np.array([p.action in POSITIVE[head] for p in prompts])
    actions = np.array([p.action for p in prompts])
    others = [(actions == group, OTHER_BLOCK_BUDGET.get(group, 0.05))
              for group in ("care", "answer_with_care", "block")
              if group not in POSITIVE[head] | LEFT_OUT[head]]
    best, chosen = -1.0, (0.0, 0.0)
    for scale, mix in ((s, m) for s in LEXICAL_SCALE_GRID for m in MIX_GRID):
        scores = folded[scale].scores(head, mix, rows, len(prompts))
        cut = np.inf
        for value in np.unique(scores)[::-1]:
            if (any((scores[sets == name] >= value).mean() > budget
                    for name, budget in BENIGN_BLOCK_BUDGET.items())
                    or any((scores[group] >= value).mean() > budget
                           for group, budget in others)):
                break
            cut = value
        found = float((scores[positive] >= cut).mean())
        say(f"{head}: lexical {scale}, mix {mix}: {found:.3f} found within the budgets")
        if found > best:
            best, chosen = found, (scale, mix)
    return chosen


# -- deciding as splinfer does -----------------------------------------------------------------

def decide(tier1_verdict: Verdict, hits: Sequence[Hit], policy: PolicySet) -> Verdict:
    """Tier 1's prompt verdict with tier 2's hits under ``policy``, combined as splinfer
    combines them (``runa.policy.tiers``: delay cells decided, then merged)."""
    judgement = Judgement(tuple(hits), {}, 1, 0.0)
    return combine(tier1_verdict, answered(judgement, policy), policy)


def head_hits(scores: dict[str, np.ndarray], cutoffs: dict[str, dict[str, float]], i: int,
              harm_category: str) -> list[Hit]:
    out = []
    for head in HEADS:
        for name, cutoff in cutoffs.get(head, {}).items():
            if scores[head][i] >= cutoff:
                category = HEAD_CATEGORY.get(head, harm_category)
                out.append(Hit("tier2." + head, category, Weight(name), float(scores[head][i]),
                               0))
    return out


@dataclass
class Evidence:
    """Everything about the tune prompts the cutoffs are chosen from."""

    prompts: list[LabelledPrompt]
    tier1: list[Verdict]
    exemplar_hits: list[list[tuple[Motif, float]]]  # per prompt: (motif, best similarity)
    harm_category: list[str]
    scores: dict[str, np.ndarray]  # cross-validated pooled scores

    def verdicts(self, policy: PolicySet, cutoffs: dict[str, dict[str, float]],
                 exemplar_cutoff: float) -> list[Verdict]:
        out = []
        for i, verdict in enumerate(self.tier1):
            hits = head_hits(self.scores, cutoffs, i, self.harm_category[i])
            hits += [Hit(m.id, m.category, m.weight, s, 0) for m, s in self.exemplar_hits[i]
                     if s >= exemplar_cutoff]
            out.append(decide(verdict, hits, policy))
        return out


def rank_of(action: Action) -> int:
    return action.rank


def choose_cutoffs(evidence: Evidence, policy: PolicySet, exemplar_cutoff: float
                   ) -> dict[str, dict[str, float]]:
    """The cutoffs (see the module docstring), searched over the cross-validated scores."""
    prompts = evidence.prompts
    actions = np.array([p.action for p in prompts])
    benign = actions == "allow"
    # the floor every cutoff adds to: tier 1 and the exemplars alone
    floor = evidence.verdicts(policy, {}, exemplar_cutoff)
    floor_rank = np.array([rank_of(v.action) for v in floor])
    block = Action.BLOCK.rank
    harm = evidence.scores["harm"]
    candidates = np.unique(np.round(harm, 4))
    harm_cut = 1.0
    sets = np.array([p.set for p in prompts])
    for cut in candidates[::-1]:  # lowest cutoff within the block budgets
        blocked = (floor_rank == block) | (harm >= cut)
        if (any(blocked[sets == name].mean() > budget
                for name, budget in BENIGN_BLOCK_BUDGET.items())
                or any(blocked[actions == group].mean() > budget
                       for group, budget in OTHER_BLOCK_BUDGET.items())):
            break
        harm_cut = float(cut)
    intervened = (floor_rank > Action.ALLOW.rank) | (harm >= harm_cut)
    budget = BENIGN_INTERVENE_BUDGET
    grid = np.round(np.linspace(0.05, 0.99, 95), 4)
    care, circ = evidence.scores["care"], evidence.scores["circumvention"]
    is_care, is_circ = actions == "care", actions == "block_or_flag"
    circ_caught_floor = np.array([any(i.action in ("block", "flag") for i in v.interventions)
                                  for v in floor]) | (harm >= harm_cut)
    best: tuple[float, ...] | None = None
    chosen = (1.0, 1.0)
    for c_care in grid:  # the best worse-of care and circumvention within the budget
        for c_circ in grid:
            hit = intervened | (care >= c_care) | (circ >= c_circ)
            rate = float(hit[benign].mean())
            if rate > budget:
                continue
            care_ok = float(((care >= c_care) & (harm < harm_cut))[is_care].mean())
            circ_ok = float((circ_caught_floor | (circ >= c_circ))[is_circ].mean())
            key = (min(care_ok, circ_ok), care_ok + circ_ok, -rate, c_care + c_circ)
            if best is None or key > best:
                best, chosen = key, (float(c_care), float(c_circ))
    if best is None:
        raise SystemExit("no cutoffs keep benign interventions within the budget")
    c_care, c_circ = chosen
    hit = intervened | (care >= c_care) | (circ >= c_circ)
    advice = evidence.scores["advice"]
    c_advice = 1.0
    for cut in grid[::-1]:
        if ((hit | (advice >= cut))[benign].mean() > budget
                or (advice >= cut)[benign].mean() > ADVICE_SHARE):
            break
        c_advice = float(cut)
    return {"harm": {Weight.HEAVY.value: round(harm_cut, 4)},
            "care": {Weight.MEDIUM.value: round(c_care, 4)},
            "advice": {Weight.MEDIUM.value: round(c_advice, 4)},
            "circumvention": {Weight.MEDIUM.value: round(c_circ, 4)}}


def choose_exemplar_cutoff(prompts: Sequence[LabelledPrompt],
                           best: list[list[tuple[Motif, float]]]) -> float:
    """The lowest similarity (plus EXEMPLAR_MARGIN) at which the exemplars hit at most
    EXEMPLAR_BENIGN_BUDGET of benign prompts and no prompt of a group whose right action
    their category would get wrong (a harm exemplar on an advice or distress prompt). The
    exemplars are written, not fitted to the tune half, so the whole half picks the cutoff
    (no folds)."""
    benign = [i for i, p in enumerate(prompts) if p.action == "allow"]
    others = [i for i, p in enumerate(prompts) if p.action in ("care", "answer_with_care")]
    for cutoff in EXEMPLAR_GRID:
        benign_hits = sum(any(s >= cutoff for _, s in best[i]) for i in benign)
        wrong = sum(any(s >= cutoff and m.category not in ("suicide_self_harm",
                                                            "specialized_advice")
                        for m, s in best[i]) for i in others)
        if benign_hits <= EXEMPLAR_BENIGN_BUDGET * len(benign) and wrong == 0:
            return round(min(0.99, cutoff + EXEMPLAR_MARGIN), 2)
    return 0.99


def leaks(exemplars: Sequence[Motif], exemplar_vectors: np.ndarray, cutoff: float,
          halves: Sequence[tuple[np.ndarray, np.ndarray]]) -> list[tuple[str, float]]:
    """Each exemplar that reads as a copy of a data-set prompt: its id and its highest
    cosine similarity to any prompt (the prompt's best window) of any of ``halves`` (window
    vectors, window -> prompt), when that is at least max(``cutoff``, LEAK_FLOOR)."""
    limit = max(cutoff, LEAK_FLOOR)
    found = []
    for column, motif in enumerate(exemplars):
        best = max((float(np.max(vectors @ exemplar_vectors[column])) for vectors, _ in halves
                    if len(vectors)), default=-1.0)
        if best >= limit:
            found.append((motif.id, round(best, 3)))
    return found


def refuse_leaks(exemplars: Sequence[Motif], exemplar_vectors: np.ndarray, cutoff: float,
                 halves: Sequence[tuple[np.ndarray, np.ndarray]]) -> None:
    """Stop the build when an exemplar copies a data-set prompt (``leaks``); the message
    names the exemplar and the similarity, never the prompt."""
    found = leaks(exemplars, exemplar_vectors, cutoff, halves)
    if found:
        listed = ", ".join(f"{rule} ({similarity})" for rule, similarity in found)
        raise SystemExit(f"build_tier2: exemplars too close to a data-set prompt (cosine >= "
                         f"{max(cutoff, LEAK_FLOOR)}): {listed}; write them in other words")
    say(f"leak check: no exemplar within {max(cutoff, LEAK_FLOOR)} of a prompt of either half")


# -- the build ---------------------------------------------------------------------------------

def packaged_policies(root: Path) -> PolicyLibrary:
    """The packaged matrix and sets only, whatever this machine's /etc/runa and
    ~/.config/runa hold (as bench/safety.py reads them)."""
    env = {"HOME": str(root), "RUNA_SYSCONFDIR": str(root / "etc"),
           "XDG_CONFIG_HOME": str(root / "config"), "XDG_RUNTIME_DIR": str(root / "run")}
    paths = Paths.for_stack(personal_stack(), env)
    return PolicyLibrary.for_stack(paths, load_config(paths, env))


def tune_split_sha256() -> str:
    """sha256 of the tune half as committed in splits.json (every set's tune mapping)."""
    committed = json.loads((SAFETY / "splits.json").read_text(encoding="utf-8"))["sets"]
    tune = {name: split["tune"] for name, split in sorted(committed.items())}
    return hashlib.sha256(json.dumps(tune, sort_keys=True).encode()).hexdigest()


def build(model: Path, folds: int, threads: int, use_cache: bool) -> Classifier:
    started = time.monotonic()
    prompts = load("tune")
    say(f"{len(prompts)} tune prompts")
    model_sha = sha256_file(model)
    embedder = LlamaEmbedder(model, threads=threads)
    try:
        cache = CachedEmbeddings(embedder, model_sha, use_cache)
        with tempfile.TemporaryDirectory(prefix="runa-build-tier2-") as root:
            policies = packaged_policies(Path(root))
            policy = policies.get(POLICY)
            matrix = policies.matrix()
            exemplars = [m for m in matrix.motifs if m.kind == "exemplar"]
            tier1 = policies.tier1(policy, None)
            verdicts1 = [tier1.check(p.text, "prompt") for p in prompts]
        parts = [windows(p.text, embedder.count_tokens, embedder.max_tokens) for p in prompts]
        text_of = np.array([i for i, w in enumerate(parts) for _ in w])
        share = np.array([1.0 / len(w) for w in parts for _ in w])
        where = f"cache {cache.path}" if use_cache else "no cache"
        say(f"{len(text_of)} windows; embedding ({where})")
        vectors = cache.embed([w for ws in parts for w in ws])
        exemplar_vectors = cache.embed([m.pattern for m in exemplars])
        test = [windows(p.text, embedder.count_tokens, embedder.max_tokens)
                for p in load("test")]  # for the leak check only
        test_text_of = np.array([i for i, w in enumerate(test) for _ in w])
        test_vectors = cache.embed([w for ws in test for w in ws])
        cache.save()
    finally:
        embedder.close()
    rows = Rows(vectors, text_of, share,
                lexical_features([w for ws in parts for w in ws], LEXICAL_BUCKETS))
    similarity = vectors @ exemplar_vectors.T if exemplars else np.zeros((len(vectors), 0))
    best_similarity = np.full((len(prompts), len(exemplars)), -1.0)
    for column in range(len(exemplars)):
        np.maximum.at(best_similarity[:, column], text_of, similarity[:, column])
    exemplar_best = [[(m, float(best_similarity[i, c])) for c, m in enumerate(exemplars)]
                     for i in range(len(prompts))]
    harm_columns = [c for c, m in enumerate(exemplars)
                    if m.category not in HEAD_CATEGORY.values()]
    harm_category = [exemplars[harm_columns[int(np.argmax(best_similarity[i, harm_columns]))]]
                     .category if harm_columns else "non_violent_crimes"
                     for i in range(len(prompts))]
    exemplar_cutoff = choose_exemplar_cutoff(prompts, exemplar_best)
    say(f"exemplar cutoff {exemplar_cutoff} over {len(exemplars)} exemplars")
    refuse_leaks(exemplars, exemplar_vectors, exemplar_cutoff,
                 [(vectors, text_of), (test_vectors, test_text_of)])
    folded = {scale: cross_validated(prompts, rows, folds, scale)
              for scale in LEXICAL_SCALE_GRID}
    chosen = {head: choose_mix(head, prompts, rows, folded) for head in HEADS}
    lexical_scale = {head: chosen[head][0] for head in HEADS}
    mix = {head: chosen[head][1] for head in HEADS}
    say(f"lexical scale {lexical_scale}, mix {mix}")
    scores = {head: folded[lexical_scale[head]].scores(head, mix[head], rows, len(prompts))
              for head in HEADS}
    tried = {}
    for k in CONTRAST_GRID:  # the harm head's hit decided on harm - k·advice
        decided = {**scores, "harm": scores["harm"] - k * scores["advice"]}
        evidence = Evidence(prompts, verdicts1, exemplar_best, harm_category, decided)
        cutoffs = choose_cutoffs(evidence, policy, exemplar_cutoff)
        metrics, groups = rates(prompts, evidence.verdicts(policy, cutoffs, exemplar_cutoff))
        say(f"harm less {k} x advice: block recall {metrics['prompt_block_recall']}")
        tried[k] = (metrics["prompt_block_recall"], -k, evidence, cutoffs, metrics, groups)
    contrast_k = max(CONTRAST_GRID, key=lambda k: tried[k][:2])
    _, _, evidence, cutoffs, metrics, groups = tried[contrast_k]
    say(f"contrast {contrast_k}; cutoffs {cutoffs}")
    say("cross-validated tune metrics " + json.dumps(metrics))
    fitted = []
    for head in HEADS:
        x, lx, y, w = head_rows(head, prompts, rows, np.ones(len(prompts), dtype=bool))
        fitted.append(fit_head(x, lx, lexical_scale[head], y, w))
    counts: dict[str, int] = {}
    for p in prompts:
        counts[p.set] = counts.get(p.set, 0) + 1
    meta = {
        "script": "tools/build_tier2.py",
        # the same inputs give the same bytes with the same numpy; another numpy's linear
        # algebra may round differently in the last bits
        "numpy": np.__version__,
        "data": "bench/data/safety tune halves (halves.load('tune'))",
        "tune_split_sha256": tune_split_sha256(),
        "embedding_model_file": model.name, "embedding_model_sha256": model_sha,
        "n_per_set": dict(sorted(counts.items())),
        "n_per_action": {a: sum(p.action == a for p in prompts)
                         for a in sorted({p.action for p in prompts})},
        "windows": len(text_of),
        "positives": {head: sorted(POSITIVE[head]) for head in HEADS},
        "left_out": {head: sorted(LEFT_OUT[head]) for head in HEADS},
        "l2": L2, "neighbours_k": NEIGHBOURS, "mix": mix, "folds": folds,
        "lexical_buckets": LEXICAL_BUCKETS, "lexical_scale": lexical_scale,
        "fold_by": "sha256(text) bytes 1-4 mod folds",
        "policy": POLICY,
        "budgets": {"benign_block": BENIGN_BLOCK_BUDGET, "other_block": OTHER_BLOCK_BUDGET,
                    "benign_intervene": BENIGN_INTERVENE_BUDGET, "advice_share": ADVICE_SHARE,
                    "exemplar_benign": EXEMPLAR_BENIGN_BUDGET},
        "exemplar_cutoff": exemplar_cutoff,
        "exemplars": len(exemplars),
        "cv_tune_metrics": metrics,
        "cv_tune_targets": {name: f"{op} {target}"
                            for name, (_g, _c, op, target) in METRICS.items()},
        "cv_tune_groups": groups,
        "cutoffs": cutoffs,
        "contrast_cv_block_recall": {str(k): tried[k][0] for k in CONTRAST_GRID},
    }
    say(f"built in {time.monotonic() - started:.0f} s")
    neighbours = Neighbours(neighbour_vectors(rows),
                            np.stack([head_labels(h, prompts, rows) for h in HEADS]),
                            np.array([mix[h] for h in HEADS], dtype=np.float32), NEIGHBOURS)
    lexical = None
    if any(lexical_scale.values()):
        lexical = Lexical(np.round(np.array([h.lexical_weights for h in fitted]), 6)
                          .astype(np.float32))
    return Classifier(HEADS, np.round(np.array([h.weights for h in fitted]), 6)
                      .astype(np.float32),
                      np.round(np.array([h.bias for h in fitted]), 6).astype(np.float32),
                      cutoffs, _model_id(model), meta, neighbours, lexical,
                      {"harm": {"advice": contrast_k}} if contrast_k else {})


def _model_id(model: Path) -> str:
    """The embedder's ``model_id`` for this file (what SemanticTier compares)."""
    from runa.models.gguf_info import read_model_info

    info = read_model_info(model)
    return f"{info.name or model.stem}:{info.file_size}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=packaged_weights(),
                        help="where to write the classifier (default: the packaged file)")
    parser.add_argument("--model", type=Path, help="embedding GGUF (default: the installed "
                        "default embedding model)")
    parser.add_argument("--folds", type=int, default=FOLDS, help="cross-validation folds")
    parser.add_argument("--threads", type=int, default=-1,
                        help="embedding threads (default: one per usable CPU)")
    parser.add_argument("--no-cache", action="store_true",
                        help="embed every window again instead of reading ~/.cache/runa/tier2")
    parser.add_argument("--check", action="store_true",
                        help="build into a temporary file and compare it with --out")
    args = parser.parse_args(argv)
    model = args.model or embedding_model_path(
        "default", Paths.for_stack(personal_stack()).models)
    classifier = build(model, args.folds, args.threads, not args.no_cache)
    if args.check:
        with tempfile.TemporaryDirectory() as tmp:
            fresh = Path(tmp) / "tier2.npz"
            classifier.save(fresh)
            same = args.out.is_file() and fresh.read_bytes() == args.out.read_bytes()
        say(f"{args.out}: {'byte-identical' if same else 'DIFFERS from this build'}")
        return 0 if same else 1
    classifier.save(args.out)
    say(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
