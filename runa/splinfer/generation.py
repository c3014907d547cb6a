"""One answer being produced: the per-sequence half of the decode loop.

The engine decodes the rows of every running answer in one ``llama_decode`` call
(one batch, several sequences); what happens with the logits of each row is
per answer and lives here: its own sampler chain (own RNG, own penalty window),
the per-token hook, the UTF-8 stream and the stop rules. The loop is exactly the
one llama-cpp-python runs for one sequence, so an answer decoded alone is token
for token what llama-cpp-python produces with the same settings:

    sample -> end of turn? stop -> hook (continue / stop / replace) -> emit
    -> at the limit? stop without evaluating the last token -> feed it back

Cancel is checked before each token is sampled.

With a stream gate (``runa.policy.stream``, tier 1 of the policy) the emitted tokens go
through it after the hook: the gate may hold the newest ones back (they are fed to the
model but not streamed yet), release them, take them back (the engine then drops the
evaluated ones from the sequence's KV cache before its next decode, see ``rewind``) and
insert a replacement. ``out`` is then what the person saw and the model holds; ``held``
what is evaluated but not shown yet.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable
from collections.abc import Sequence as Seq
from dataclasses import dataclass

import llama_cpp

from runa.policy.stream import GateStep, StreamGate
from runa.protocol.params import SamplingParams
from runa.splinfer.hooks import Action, TextSink, TokenHook
from runa.splinfer.sampling import Sampler
from runa.splinfer.sequence import Sequence
from runa.splinfer.text import Utf8Stream
from runa.splinfer.vocab import Vocab


@dataclass(frozen=True)
class GenerationResult:
    text: str
    tokens: tuple[int, ...]
    """Generated tokens as fed back to the model and shown to the person (after any
    replacement; tokens a gate took back are not in them, its insertions are)."""
    finish_reason: str
    """stop (end of turn), length (n_predict), context (context full), cancelled, policy."""
    n_prompt: int
    n_eval: int
    """Prompt tokens evaluated this turn (the rest were already in the sequence)."""
    n_gen: int
    prompt_seconds: float
    gen_seconds: float
    reason: str = ""
    """The hook's or the gate's reason when it stopped the answer."""
    dropped_messages: int = 0

    @property
    def gen_tok_s(self) -> float:
        return self.n_gen / self.gen_seconds if self.gen_seconds > 0 else 0.0


def with_dropped(result: GenerationResult, dropped: int) -> GenerationResult:
    return dataclasses.replace(result, dropped_messages=dropped)


class Phase(enum.Enum):
    PROMPT = "prompt"
    """Prompt tokens still to evaluate (``pending`` is the rest of the prompt)."""
    ANSWER = "answer"
    """Generating: ``pending`` holds the emitted tokens to feed back."""
    DONE = "done"


class Generation:
    """State of one answer; the engine feeds it batch rows and logits."""

    def __init__(
        self,
        seq: Sequence,
        prompt: Seq[int],
        n_keep: int,
        sampling: SamplingParams,
        *,
        vocab: Vocab,
        n_ctx: int,
        clock: Callable[[], float],
        on_token: TokenHook | None,
        on_text: TextSink | None,
        cancelled: Callable[[], bool],
        gate: StreamGate | None = None,
    ) -> None:
        self.seq = seq
        self.prompt = list(prompt)
        self.n_keep = n_keep
        self.sampling = sampling
        self.vocab = vocab
        self.clock = clock
        self.on_token = on_token
        self.on_text = on_text
        self.cancelled = cancelled
        self.phase = Phase.PROMPT
        self.pending: list[int] = self.prompt[n_keep:]
        room = n_ctx - len(self.prompt)
        self.limit = room if sampling.n_predict < 0 else min(sampling.n_predict, room)
        self.at_limit = "length" if 0 <= sampling.n_predict <= room else "context"
        self.out: list[int] = []
        self.gate = gate
        self.held: list[int] = []
        """Tokens the gate holds back: evaluated (all but maybe the newest), not streamed."""
        self.n_generated = 0
        """With a gate: tokens sampled or inserted, withdrawn ones included (the limit)."""
        self.rewind = 0
        """Evaluated positions the engine must drop from ``seq`` before its next decode."""
        self.text: list[str] = []
        self.stream = Utf8Stream()
        self.sampler: Sampler | None = Sampler(sampling, n_vocab=vocab.n_tokens, n_ctx=n_ctx)
        self.started = clock()
        self.prompt_done: float | None = None
        self.finish_reason = ""
        self.reason = ""
        self.result: GenerationResult | None = None
        self.error: BaseException | None = None
        """Set when a decode this generation took part in failed."""

    @property
    def done(self) -> bool:
        return self.phase is Phase.DONE

    def take(self, limit: int) -> list[int]:
        """Up to ``limit`` of the tokens to decode next (removed from ``pending``)."""
        chunk, self.pending = self.pending[:limit], self.pending[limit:]
        return chunk

    @property
    def waiting_for_logits(self) -> bool:
        """True when everything fed so far is decoded and the next token can be sampled."""
        return not self.done and not self.pending

    def on_logits(self, ctx: llama_cpp.llama_context_p, row: int) -> None:
        """Sample the next token from batch row ``row`` and decide what follows."""
        if self.phase is Phase.PROMPT:
            self.phase = Phase.ANSWER
            self.prompt_done = self.clock()
        if self.cancelled():
            self.finish("cancelled")
            return
        used = len(self.out) if self.gate is None else self.n_generated
        if used >= self.limit:  # n_predict 0: the prompt only
            self.finish(self.at_limit)
            return
        assert self.sampler is not None
        token = self.sampler.sample(ctx, row)
        if self.vocab.is_eog(token):
            self.finish("stop")
            return
        emitted = [token]
        if self.on_token is not None:
            decision = self.on_token(token, self.vocab.piece(token))
            if decision is not None and decision.action is Action.STOP:
                self.finish("policy", decision.reason)
                return
            if decision is not None and decision.action is Action.REPLACE:
                emitted = list(decision.tokens)[: self.limit - used]
                for t in emitted:
                    self.sampler.accept(t)
        if self.gate is not None:
            self._through_gate(self.gate, emitted)
            return
        for t in emitted:
            self.out.append(t)
            self._emit(self.stream.feed(self.vocab.piece(t)))
        if len(self.out) >= self.limit:
            self.finish(self.at_limit)  # like llama-cpp-python: the last token is not evaluated
            return
        self.pending = emitted

    def _through_gate(self, gate: StreamGate, tokens: list[int]) -> None:
        """Hold, release, withdraw or replace ``tokens`` as the gate says; plan what to feed."""
        for token in tokens:
            self.held.append(token)
            self.n_generated += 1
            step = gate.feed(token, self.vocab.piece(token))
            self._apply(step)
            if step.stop:
                self.gate = None  # ``finish`` is for the other endings
                self.finish("policy", step.reason)
                return
        if self.n_generated >= self.limit:
            self.finish(self.at_limit)  # the last token is not evaluated, as without a gate
            return
        # Feed what the model holds but has not evaluated: the newest kept token, the
        # insertions. After a take-back with nothing new, the last kept token is evaluated
        # again for fresh logits (as ``Engine.start`` does with a prompt it already holds).
        evaluated = self.seq.n_past - self.rewind
        kept = len(self.prompt) + len(self.out) + len(self.held)
        if kept == evaluated:
            self.rewind += 1
            evaluated -= 1
        self.pending = self._newest(kept - evaluated)

    def _apply(self, step: GateStep) -> None:
        """Take back, release and insert as ``step`` says (``runa.policy.stream``)."""
        take_back = min(step.take_back, len(self.held))
        if take_back:
            del self.held[-take_back:]
            kept = len(self.prompt) + len(self.out) + len(self.held)
            self.rewind += max(0, self.seq.n_past - self.rewind - kept)
        # Everything held before a withdrawal or an insertion goes first, in order.
        release = len(self.held) if take_back or step.insert else step.release
        self._release(release)
        room = self.limit - len(self.out) - len(self.held)
        for t in step.insert[: max(0, room)]:
            self.out.append(t)
            self.n_generated += 1
            self._emit(self.stream.feed(self.vocab.piece(t)))
            if self.sampler is not None:
                self.sampler.accept(t)

    def _release(self, n: int) -> None:
        """Stream the oldest ``n`` held tokens."""
        released, self.held = self.held[:n], self.held[n:]
        for t in released:
            self.out.append(t)
            self._emit(self.stream.feed(self.vocab.piece(t)))

    def _newest(self, n: int) -> list[int]:
        """The newest ``n`` tokens of prompt + out + held (what the model should hold)."""
        parts: list[list[int]] = []
        for part in (self.held, self.out, self.prompt):
            if n <= 0:
                break
            tail = part[max(0, len(part) - n):]
            parts.append(tail)
            n -= len(tail)
        return [t for part in reversed(parts) for t in part]

    def _emit(self, chunk: str) -> None:
        if chunk:
            self.text.append(chunk)
            if self.on_text is not None:
                self.on_text(chunk)

    def finish(self, finish_reason: str, reason: str = "") -> None:
        """End the answer (idempotent); the result is then in ``result``."""
        if self.done:
            return
        now = self.clock()
        if self.prompt_done is None:
            self.prompt_done = now
        self.phase = Phase.DONE
        self.pending = []
        gate, self.gate = self.gate, None
        if gate is not None:
            step = gate.finish()
            self._apply(step)
            self._release(len(self.held))  # nothing stays held once the answer ends
            if step.stop:  # a block found only at the end is still a policy ending
                finish_reason, reason = "policy", step.reason
        self.finish_reason, self.reason = finish_reason, reason
        if self.sampler is not None:
            self.sampler.close()
            self.sampler = None
        self._emit(self.stream.flush())
        self.result = GenerationResult(
            text="".join(self.text),
            tokens=tuple(self.out),
            finish_reason=finish_reason,
            n_prompt=len(self.prompt),
            n_eval=max(0, min(self.seq.n_past, len(self.prompt)) - self.n_keep),
            n_gen=len(self.out),
            prompt_seconds=self.prompt_done - self.started,
            gen_seconds=now - self.prompt_done,
            reason=reason,
        )
