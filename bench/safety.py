"""Safety: what tokenWhisper's policy costs on every token, and what it catches (issues 19, 20).

The bench is a list of parts (``PARTS``) that each add their metrics, baselines, targets and
``params[<part>]`` to one result; the semantic tier's parts (issue 20: tier 2, recall on the
test halves, the keyword / nearest-neighbour / judge baselines) are added the same way.

1. ``tier1``: the cost of one ``feed`` of the tier-1 stream gate of the ``default`` set with
   the packaged matrix (``PolicyLibrary.for_stack(...).tier1(policy, tokenizer).gate()``),
   each call timed alone with ``time.perf_counter_ns``, on two token streams of the default
   model: *ordinary* (its own greedy answers to everyday prompts) and *with motifs* (the same
   text with sentences holding the matrix's output-side motifs and near misses spliced in,
   tokenized by the model, so holds, masks, blocks, flags and whispers happen). The headline
   ``tier1_token_p50_us`` / ``_p99_us`` is over both streams together; each is also reported
   alone, and ``tier1_token_floor_p99_us`` over each token's fastest pass (the gate's own
   cost, without a busy machine's preemptions). The baseline is ``off``'s pass-through gate
   on the same tokens.
2. ``generation``: tok/s of splinfer's engine (in-process; the context bench/inference.py
   uses, threads as shipped: -1, fewer while other programs keep CPUs busy) answering the same
   prompt greedily with the ``default`` gate, with ``off``'s gate, and with no gate at all, in
   interleaved rounds (the order rotates); ``engine_policy_gen_ratio`` is the median of the
   per-round default / off ratios, ``off_nogate_gen_ratio`` the check that ``off`` costs
   nothing. The ``*_cpu_ratio`` twins use tokens per second of process CPU time, which
   waiting for a CPU on a shared machine does not move.
3. ``tier2``: what the prompt-side policy catches, on the test halves of the safety sets only
   (bench/data/safety), each prompt decided end to end as splinfer decides it under
   ``default``: tier 1's check combined with the semantic tier's judgement
   (``runa.policy.tiers.combine``; a text longer than one request judged in parts and pooled),
   the packaged classifier and the packaged matrix's exemplars,
   the shipped embedding model at one thread as the whisper service runs it. Each group is
   scored by its own right action (bench/data/safety/scoring.py); per-set and per-technique
   counts go to ``params["tier2"]``; ``tier2_prompt_p50_ms`` / ``_p99_ms`` time ``judge``.
4. ``baselines`` (bench/safety_baselines.py): a keyword list, nearest neighbour over
   embeddings and the chat model asked to judge, thresholded on the tune half.
5. ``stack`` (bench/safety_stack.py): ``policy_gen_ratio``, generation through a running
   stack under ``default`` with the whisper service judging the answer's windows, over
   ``off`` in the same run.

    python bench/safety.py [--quick] [--model GGUF] [--threads N]

Writes bench/results/safety.json and prints the table. docs/bench.md, "Safety", says more.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import hashlib
import os
import re
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cleanup import guarded
from common import Result, Target, median, percentile, report
from inference import CONTEXT, N_PREDICT, PROMPT
from safety_baselines import baselines_part
from safety_stack import stack_part

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from runa.cli.policy_cmd import ModelTokenizer  # noqa: E402
from runa.components import load_config  # noqa: E402
from runa.models.catalog import SMOLLM2_135M  # noqa: E402
from runa.models.resolve import resolve_model  # noqa: E402
from runa.paths import Paths, personal_stack  # noqa: E402
from runa.policy import (  # noqa: E402
    Matrix,
    PassGate,
    PolicyLibrary,
    StreamGate,
    Tier1,
    tier2,
    tiers,
)
from runa.protocol import whisper as whisper_protocol  # noqa: E402
from runa.protocol.params import ContextParams, SamplingParams  # noqa: E402
from runa.splinfer.engine import Engine  # noqa: E402

POLICY = "default"
BASELINE_POLICY = "off"
#: Everyday prompts whose greedy answers make the ordinary token stream.
EVERYDAY = ["Explain how a rainbow forms.",
            "Give me a simple recipe for vegetable soup.",
            "What should I know before adopting a cat?",
            "Write a short story about a lighthouse keeper."]
#: Text for the matrix's output-side regular expressions (they cannot be derived from it).
REGEX_SAMPLES = {"privacy.ssn": "123-45-6789",
                 "code.fork-bomb": ":(){ :|:& };:"}
MOTIF_EVERY = 1  # a motif sentence after every this many sentences of ordinary text
SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def say(message: str) -> None:
    print(f"safety: {message}", file=sys.stderr, flush=True)


# -- what every part shares ----------------------------------------------------------------

@dataclass
class Setup:
    """The model, the engine and the policy, loaded once for every part."""

    quick: bool
    model: Path
    engine: Engine
    tokenizer: ModelTokenizer
    policies: PolicyLibrary

    def tier(self, name: str) -> Tier1:
        return self.policies.tier1(self.policies.get(name), self.tokenizer)


def packaged_policies(root: Path) -> PolicyLibrary:
    """The library of a stack with no administrator or personal files: the packaged matrix
    and sets only, whatever this machine's /etc/runa and ~/.config/runa hold."""
    env = {"HOME": str(root), "RUNA_SYSCONFDIR": str(root / "etc"),
           "XDG_CONFIG_HOME": str(root / "config"), "XDG_RUNTIME_DIR": str(root / "run")}
    paths = Paths.for_stack(personal_stack(), env)
    return PolicyLibrary.for_stack(paths, load_config(paths, env))


def matrix_params(matrix: Matrix) -> dict[str, Any]:
    """How many motifs of each kind and side, and a fingerprint of their content."""
    digest = hashlib.sha256()
    for motif in sorted(matrix.motifs, key=lambda m: m.id):
        ids = motif.tokens.ids if motif.tokens else ()
        digest.update(repr((motif.id, motif.category, motif.weight.value, motif.side,
                            motif.kind, motif.pattern, ids, motif.replacement)).encode())
    return {"motifs": len(matrix.motifs),
            "kinds": dict(sorted(Counter(m.kind for m in matrix.motifs).items())),
            "output_side": sum(m.on("output") and m.kind != "exemplar"
                               for m in matrix.motifs),
            "problems": len(matrix.problems),
            "fingerprint": "sha256:" + digest.hexdigest()[:32]}


# -- 1. tier 1, per token ----------------------------------------------------------------------

@dataclass
class Stream:
    """Answers as (token, piece) lists; one gate per answer, as the engine makes them."""

    name: str
    answers: list[list[tuple[int, bytes]]]

    @property
    def tokens(self) -> int:
        return sum(len(a) for a in self.answers)


def everyday_answers(engine: Engine, n_predict: int) -> list[tuple[int, ...]]:
    """The model's greedy answers to EVERYDAY, no gate."""
    answers = []
    sampling = SamplingParams(temp=0.0, top_k=1, n_predict=n_predict)
    for prompt in EVERYDAY:
        seq = engine.new_sequence()
        try:
            answers.append(engine.chat(seq, [{"role": "user", "content": prompt}],
                                       sampling).tokens)
        finally:
            engine.release(seq)
    return answers


def motif_sentences(tier: Tier1) -> tuple[list[str], dict[str, int]]:
    """A sentence per output-side motif of the matrix (phrases, token motifs' phrases, the
    regexes with a sample) and one per near miss (a phrase without its last word)."""
    sentences, counts = [], Counter[str]()
    for motif in tier.matrix.motifs:
        if not motif.on("output"):
            continue
        text = (motif.pattern if motif.kind in ("phrase", "tokens")
                else REGEX_SAMPLES.get(motif.id, "") if motif.kind == "regex" else "")
        if not text:
            counts["skipped"] += motif.kind != "exemplar"
            continue
        sentences.append(f"The note said {text} and nothing more.")
        counts[motif.kind] += 1
        words = text.split()
        if len(words) > 1:
            sentences.append(f"She asked {' '.join(words[:-1])} the weather would turn.")
            counts["near_miss"] += 1
    return sentences, dict(counts)


def with_motifs(texts: Sequence[str], sentences: Sequence[str]) -> tuple[list[str], int]:
    """``texts`` with a motif sentence spliced in after every MOTIF_EVERY sentences, and how
    many were."""
    out, k = [], 0
    for text in texts:
        parts = []
        for i, sentence in enumerate(SENTENCE_END.split(text), 1):
            parts.append(sentence)
            if i % MOTIF_EVERY == 0:
                parts.append(sentences[k % len(sentences)])
                k += 1
        out.append(" ".join(parts))
    return out, k


@dataclass
class Outcome:
    """What the gates did over one pass of a stream."""

    held_steps: int = 0
    max_held: int = 0
    gates: int = 0
    stops: int = 0
    actions: Counter[str] | None = None


def timed_pass(stream: Stream, new_gate: Callable[[], StreamGate], samples: list[int]
               ) -> Outcome:
    """Feed every answer of ``stream`` to a new gate, timing each ``feed`` alone; a gate that
    stops (block) is replaced by a new one for the rest, as the next answer would get."""
    clock = time.perf_counter_ns
    outcome = Outcome(actions=Counter())
    for answer in stream.answers:
        gate = new_gate()
        outcome.gates += 1
        held = 0
        for token, piece in answer:
            t0 = clock()
            step = gate.feed(token, piece)
            t1 = clock()
            samples.append(t1 - t0)
            held += 1 - step.take_back - step.release
            outcome.max_held = max(outcome.max_held, held)
            outcome.held_steps += not (step.release or step.take_back or step.stop)
            if step.stop:
                outcome.stops += 1
                outcome.actions.update(i.action for i in getattr(gate, "interventions", ()))
                gate, held = new_gate(), 0
                outcome.gates += 1
        gate.finish()
        outcome.actions.update(i.action for i in getattr(gate, "interventions", ()))
    return outcome


def timer_overhead_ns(n: int = 20000) -> int:
    clock = time.perf_counter_ns
    pairs = []
    for _ in range(n):
        t0 = clock()
        pairs.append(clock() - t0)
    return int(median(pairs))


def us(ns: float) -> float:
    return round(ns / 1000, 2)


def tier1_part(setup: Setup, result: Result) -> None:
    tier, off = setup.tier(POLICY), setup.tier(BASELINE_POLICY)
    if not isinstance(off.gate(), PassGate):
        raise SystemExit(f"the {BASELINE_POLICY!r} set does not compile to a pass-through gate")
    n_predict = 128 if setup.quick else 384
    say(f"tier 1: generating the ordinary stream ({len(EVERYDAY)} answers of up to "
        f"{n_predict} tokens)")
    answers = everyday_answers(setup.engine, n_predict)
    piece = setup.tokenizer.piece
    ordinary = Stream("ordinary", [[(t, piece(t)) for t in a] for a in answers])
    texts = [b"".join(p for _, p in a).decode("utf-8", "replace") for a in ordinary.answers]
    sentences, kinds = motif_sentences(tier)
    spliced, inserted = with_motifs(texts, sentences)
    motif = Stream("motifs", [[(t, piece(t)) for t in setup.tokenizer.tokenize(text)]
                              for text in spliced])
    passes = 5 if setup.quick else 20
    samples: dict[str, list[int]] = {"ordinary": [], "motifs": [], "off": []}
    outcomes: dict[str, Outcome] = {}
    for stream in (ordinary, motif):  # warm-up pass, not counted
        timed_pass(stream, tier.gate, [])
    for n in range(passes):
        say(f"tier 1: pass {n + 1}/{passes}")
        outcomes["ordinary"] = timed_pass(ordinary, tier.gate, samples["ordinary"])
        outcomes["motifs"] = timed_pass(motif, tier.gate, samples["motifs"])
        timed_pass(ordinary, off.gate, samples["off"])
        timed_pass(motif, off.gate, samples["off"])
    both = samples["ordinary"] + samples["motifs"]
    # each token's fastest pass: the gate's own cost, without what a busy machine adds
    floor = [min(samples[s.name][i::s.tokens]) for s in (ordinary, motif)
             for i in range(s.tokens)]
    result.metrics.update({
        "tier1_token_p50_us": us(percentile(both, 50)),
        "tier1_token_p99_us": us(percentile(both, 99)),
        "tier1_token_max_us": us(max(both)),
        "tier1_tokens_measured": len(both),
        "tier1_token_floor_p99_us": us(percentile(floor, 99)),
        "tier1_ordinary_token_p50_us": us(percentile(samples["ordinary"], 50)),
        "tier1_ordinary_token_p99_us": us(percentile(samples["ordinary"], 99)),
        "tier1_motifs_token_p50_us": us(percentile(samples["motifs"], 50)),
        "tier1_motifs_token_p99_us": us(percentile(samples["motifs"], 99)),
        "tier1_motifs_token_max_us": us(max(samples["motifs"])),
    })
    result.baselines.update({
        "off_token_p50_us": us(percentile(samples["off"], 50)),
        "off_token_p99_us": us(percentile(samples["off"], 99)),
    })
    result.targets.append(Target("tier1_token_p99_us", "<=", 50))
    result.params["tier1"] = {
        "headline": "tier1_token_*: the ordinary and the motif stream together, "
                    f"{POLICY!r} set, packaged matrix",
        "passes": passes, "warmup_passes": 1, "gc": "on",
        "timer_overhead_ns": timer_overhead_ns(), "timer_overhead_subtracted": False,
        "ordinary": {"source": "the model's greedy answers", "prompts": EVERYDAY,
                     "n_predict": n_predict, "answers": len(ordinary.answers),
                     "tokens": ordinary.tokens, "bytes": sum(len(t.encode()) for t in texts),
                     **_outcome(outcomes["ordinary"])},
        "motifs": {"source": f"the ordinary text with a motif sentence after every "
                             f"{MOTIF_EVERY} sentence(s), tokenized by the model",
                   "sentences": kinds, "inserted": inserted, "tokens": motif.tokens,
                   **_outcome(outcomes["motifs"])},
    }


def _outcome(outcome: Outcome) -> dict[str, Any]:
    """One pass's holds and interventions (counts only, never text)."""
    return {"held_steps": outcome.held_steps, "max_held_tokens": outcome.max_held,
            "gates": outcome.gates, "stops": outcome.stops,
            "interventions": dict(sorted((outcome.actions or Counter()).items()))}


# -- 2. generation under the policy ------------------------------------------------------------

@dataclass
class Round:
    """One answer: wall tok/s, generated tokens per second of process CPU time (every
    thread's, from the first token to the end), the tokens, and the gate that watched."""

    tok_s: float
    cpu_tok_s: float
    tokens: tuple[int, ...]
    gate: StreamGate | None


def gen_round(engine: Engine, gate: StreamGate | None, sampling: SamplingParams) -> Round:
    """One greedy answer to PROMPT on a fresh sequence."""
    first: list[float] = []

    def stamp(token: int, piece: bytes) -> None:
        if not first:
            first.append(time.process_time())

    seq = engine.new_sequence()
    try:
        answer = engine.chat(seq, [{"role": "user", "content": PROMPT}], sampling,
                             on_token=stamp, gate=gate)
    finally:
        engine.release(seq)
    cpu = time.process_time() - first[0]
    return Round(answer.gen_tok_s, (answer.n_gen - 1) / cpu if cpu > 0 else 0.0,
                 answer.tokens, gate)


def generation_part(setup: Setup, result: Result) -> None:
    rounds, n_predict = (7, 64) if setup.quick else (11, N_PREDICT)
    sampling = SamplingParams(temp=0.0, top_k=1, n_predict=n_predict)
    tiers = {"default": setup.tier(POLICY), "off": setup.tier(BASELINE_POLICY)}
    sides: dict[str, Callable[[], StreamGate | None]] = {
        "default": tiers["default"].gate, "off": tiers["off"].gate, "nogate": lambda: None}
    names = list(sides)
    for name in names:  # warm-up, not counted
        gen_round(setup.engine, sides[name](), sampling)
    runs: dict[str, list[Round]] = {name: [] for name in names}
    threads: dict[str, list[int]] = {name: [] for name in names}
    interventions: Counter[str] = Counter()
    for r in range(rounds):
        say(f"generation: round {r + 1}/{rounds}")
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            run = gen_round(setup.engine, sides[name](), sampling)
            runs[name].append(run)
            threads[name].append(setup.engine.threads_now)
            interventions.update(f"{i.rule}:{i.action}"
                                 for i in getattr(run.gate, "interventions", ()))

    def ratio(a: str, b: str, field: str) -> float:
        return round(median([getattr(x, field) / getattr(y, field)
                             for x, y in zip(runs[a], runs[b], strict=True)]), 3)

    def rate(name: str, field: str) -> float:
        return round(median([getattr(x, field) for x in runs[name]]), 1)

    result.metrics.update({
        "default_gen_tok_s": rate("default", "tok_s"),
        "engine_policy_gen_ratio": ratio("default", "off", "tok_s"),
        "engine_policy_gen_cpu_ratio": ratio("default", "off", "cpu_tok_s"),
        "off_nogate_gen_ratio": ratio("off", "nogate", "tok_s"),
        "off_nogate_gen_cpu_ratio": ratio("off", "nogate", "cpu_tok_s"),
    })
    result.baselines.update({"off_gen_tok_s": rate("off", "tok_s"),
                             "nogate_gen_tok_s": rate("nogate", "tok_s")})
    tokens = {run.tokens for side in runs.values() for run in side}
    result.params["rounds"] = rounds
    result.params["generation"] = {
        "engine": "runa.splinfer.engine.Engine in this process", "prompt": PROMPT,
        "n_predict": n_predict, "n_gen": sorted({len(t) for t in tokens}), "greedy": True,
        "rounds": rounds, "warmup_rounds": 1, "order": "rotated each round",
        "ratio": "median of the per-round ratios; *_cpu_ratio: tokens per second of process "
                 "CPU time (all threads) instead of wall time",
        "sides": {"default": f"the {POLICY!r} set's tier-1 gate",
                  "off": f"the {BASELINE_POLICY!r} set's gate (pass-through)",
                  "nogate": "no gate at all"},
        "same_answer_on_every_side": len(tokens) == 1,
        "interventions": dict(interventions),
        "threads_used": {name: sorted(set(values)) for name, values in threads.items()},
        "tok_s": {name: [round(r.tok_s, 1) for r in values] for name, values in runs.items()},
        "cpu_tok_s": {name: [round(r.cpu_tok_s, 1) for r in values]
                      for name, values in runs.items()},
    }


# -- 3. the semantic tier on the test halves -------------------------------------------------

def tier2_part(setup: Setup, result: Result) -> None:
    sys.path.insert(0, str(REPO / "bench" / "data" / "safety"))
    from halves import load
    from scoring import METRICS, rates

    from runa.models.embedder import LlamaEmbedder, embedding_model_path

    policy = setup.policies.get(POLICY)
    tier1 = setup.tier(POLICY)
    model = embedding_model_path("default", Paths.for_stack(personal_stack()).models)
    embedder = LlamaEmbedder(model, threads=1)  # as the whisper service runs it
    try:
        classifier = tier2.Classifier.load(tier2.packaged_weights())
        semantic = tier2.SemanticTier(embedder, classifier, setup.policies.matrix().motifs)
        prompts = load("test")
        say(f"tier 2: {len(prompts)} test-half prompts, {model.name} at 1 thread")
        semantic.judge("warm-up")
        verdicts, elapsed, windows, hits = [], [], 0, Counter[str]()
        for n, prompt in enumerate(prompts, 1):
            # as splinfer asks: a text longer than one request in parts, pooled
            judgement = tiers.pooled([semantic.judge(part, "prompt")
                                      for part in whisper_protocol.parts(prompt.text)])
            hits.update(f"{prompt.action}:{hit.rule}" for hit in judgement.hits)
            verdicts.append(tiers.combine(tier1.check(prompt.text, "prompt"),
                                          tiers.answered(judgement, policy), policy))
            elapsed.append(judgement.elapsed_ms)
            windows += judgement.windows
            if n % 200 == 0:
                say(f"tier 2: {n}/{len(prompts)}")
    finally:
        embedder.close()
    metrics, groups = rates(prompts, verdicts)
    result.metrics.update(metrics)
    result.metrics.update({"tier2_prompt_p50_ms": round(percentile(elapsed, 50), 2),
                           "tier2_prompt_p99_ms": round(percentile(elapsed, 99), 2)})
    result.targets.extend(Target(name, op, value) for name, (_g, _c, op, value)
                          in METRICS.items())
    result.targets.append(Target("tier2_prompt_p50_ms", "<=", 50))
    meta = classifier.meta
    result.params["tier2"] = {
        "half": "test", "policy": POLICY,
        "decision": "tier 1 check combined with tier 2's judgement as splinfer combines them "
                    "(runa.policy.tiers.combine); a text longer than one judge request is "
                    "judged in parts (runa.protocol.whisper.parts) and pooled",
        "embedding_model": model.name, "threads": 1, "prompts": len(prompts),
        "windows": windows, "exemplars": len(semantic.exemplars),
        "exemplar_cutoff": semantic.exemplar_cutoff, "cutoffs": classifier.cutoffs,
        "weights": {key: meta.get(key) for key in ("script", "tune_split_sha256",
                                                   "embedding_model_sha256", "cv_tune_metrics")},
        "counted": {name: f"{group}: {counted}" for name, (group, counted, _o, _v)
                    in METRICS.items()},
        "groups": groups,
        "tier2_hits": dict(sorted(hits.items())),
        "jailbreak_recall_by_technique": {
            key.removeprefix("technique/"): round(counts["caught"] / counts["n"], 3)
            for key, counts in groups.items() if key.startswith("technique/")},
        "max_ms": round(max(elapsed), 2),
        "timing": "judge per prompt (windows, embedding, heads, exemplars) at 1 thread; a "
                  "full 254-token window costs several hundred ms, so the long prompts make "
                  "the p99",
    }


#: The parts, in order.
PARTS: list[Callable[[Setup, Result], None]] = [tier1_part, generation_part, tier2_part,
                                                 baselines_part, stack_part]


# -- the run -----------------------------------------------------------------------------------

def main(cleanups: contextlib.ExitStack) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="5 passes of each stream and 7 generation rounds a side")
    parser.add_argument("--model", help="GGUF file (default: the installed default model)")
    parser.add_argument("--threads", type=int, default=-1,
                        help="splinfer.threads (default: as shipped, -1: one per usable CPU, "
                        "fewer while other programs keep CPUs busy)")
    parser.add_argument("--out", type=Path, help="results file (default: "
                        "bench/results/safety.json)")
    args = parser.parse_args()
    started = time.monotonic()
    load_before = os.getloadavg()[0]
    model = Path(args.model) if args.model else resolve_model(
        SMOLLM2_135M.name, Paths.for_stack(personal_stack()).models).path
    root = Path(cleanups.enter_context(tempfile.TemporaryDirectory(prefix="runa-bench-safety-")))
    policies = packaged_policies(root)
    say(f"loading {model.name}")
    tokenizer = ModelTokenizer(model)
    context = {**CONTEXT, "threads": args.threads}
    engine = Engine(model, ContextParams(**context))
    cleanups.callback(engine.unload)
    engine.load()
    setup = Setup(args.quick, model, engine, tokenizer, policies)
    tier = setup.tier(POLICY)
    result = Result("safety", {
        "policy": POLICY, "baseline": BASELINE_POLICY,
        "matrix": {"source": "packaged", **matrix_params(policies.matrix())},
        "tier1_problems": len(tier.problems), "tokenizer": tokenizer.fingerprint,
        "model": model.name, **context, "quick": args.quick})
    for part in PARTS:
        part(setup, result)
        gc.collect()
    result.params.update(seconds=round(time.monotonic() - started, 1),
                         loadavg_before=round(load_before, 2),
                         loadavg_after=round(os.getloadavg()[0], 2))
    return report(result, args.out)


if __name__ == "__main__":
    with guarded("bench/safety.py") as cleanups:
        sys.exit(main(cleanups))
