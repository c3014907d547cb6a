"""The inference engine: one model, one llama.cpp context, token-by-token generation.

Bus-independent on purpose: the splinfer daemon wraps it, tests and benchmarks
drive it directly. One Engine owns one ``llama_cpp.Llama`` (for loading, the
context and its parameters) and decodes with llama.cpp's batch API on an
explicit sequence id, so the same loop can later serve several sequences in one
context.

Generation is identical to llama-cpp-python's for the same context parameters
and sampling settings: the prompt is evaluated in ``n_batch`` chunks the way
``Llama.eval`` does, and tokens come from the same sampler chain (see
``sampling.py``). What Runa adds around that loop:

- a per-token hook (``on_token``) that sees every sampled token first and may
  continue, stop or replace it: the seat of the token-level policy;
- cancel, checked before every token and, through llama.cpp's abort callback,
  inside long prompt evaluations;
- a progress callback, called (throttled) from inside long decodes too, so a
  daemon can ping its watchdog while llama.cpp computes;
- streaming text with multi-byte UTF-8 characters kept whole;
- prompt-prefix reuse: tokens already in the sequence are not evaluated again,
  and the result's ``n_eval`` says how many were.
"""

from __future__ import annotations

import ctypes
import dataclasses
import logging
import os
import time
from collections.abc import Callable
from collections.abc import Sequence as Seq
from dataclasses import dataclass
from pathlib import Path

import llama_cpp

from runa.models.gguf_info import ModelInfo, read_model_info
from runa.splinfer.errors import (
    DecodeError,
    ModelLoadError,
    NotLoadedError,
    PromptTooLongError,
)
from runa.splinfer.fit import DEFAULT_RUNTIME_OVERHEAD, Geometry, MemoryEstimate, check_fit
from runa.splinfer.hooks import (
    Action,
    Cancel,
    ProgressCallback,
    TextSink,
    TokenHook,
    cancel_check,
)
from runa.splinfer.params import ContextParams, SamplingParams
from runa.splinfer.prompt import (
    FALLBACK_TEMPLATE,
    Message,
    PromptBuilder,
    PromptWindow,
    answer_reserve,
    fit_window,
)
from runa.splinfer.sampling import Sampler
from runa.splinfer.sequence import Sequence
from runa.splinfer.text import Utf8Stream
from runa.splinfer.vocab import Vocab

#: A single-token decode slower than this also gets the abort callback (huge
#: models on slow machines); below it the callback's per-node cost (~8%) is not
#: worth paying, and the loop itself reports progress between tokens.
SLOW_TOKEN_SECONDS = 0.05

LlamaFactory = Callable[..., llama_cpp.Llama]


@dataclass(frozen=True)
class GenerationResult:
    text: str
    tokens: tuple[int, ...]
    """Generated tokens as fed back to the model (after any replacement)."""
    finish_reason: str
    """stop (end of turn), length (n_predict), context (context full), cancelled, policy."""
    n_prompt: int
    n_eval: int
    """Prompt tokens evaluated this turn (the rest were already in the sequence)."""
    n_gen: int
    prompt_seconds: float
    gen_seconds: float
    reason: str = ""
    """The hook's reason when it stopped the answer."""
    dropped_messages: int = 0

    @property
    def gen_tok_s(self) -> float:
        return self.n_gen / self.gen_seconds if self.gen_seconds > 0 else 0.0


class _Cancelled(Exception):
    pass


class _Throttle:
    """Calls ``fn`` at most once per ``interval`` seconds of ``clock``."""

    def __init__(self, fn: ProgressCallback | None, clock: Callable[[], float], interval: float):
        self.fn = fn
        self.clock = clock
        self.interval = interval
        self.last = float("-inf")

    def __call__(self) -> None:
        if self.fn is None:
            return
        now = self.clock()
        if now - self.last >= self.interval:
            self.last = now
            self.fn()


class _Watch:
    """What llama.cpp's abort callback consults during one decode."""

    def __init__(self, cancelled: Callable[[], bool], beat: _Throttle) -> None:
        self.cancelled = cancelled
        self.beat = beat
        self.error: BaseException | None = None
        self.calls = 0


def default_cpu_count() -> int:
    """CPUs this process may run on (respects taskset/cpusets, not CPUQuota)."""
    return max(1, len(os.sched_getaffinity(0)))


class Engine:
    """One model in one llama.cpp context; not thread-safe except for cancel."""

    def __init__(
        self,
        model: ModelInfo | Path,
        context: ContextParams | None = None,
        *,
        memory_limit: int | None = None,
        runtime_overhead: int = DEFAULT_RUNTIME_OVERHEAD,
        chat_template: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        progress_interval: float = 0.25,
        cpu_count: Callable[[], int] = default_cpu_count,
        llama_factory: LlamaFactory = llama_cpp.Llama,
        logger: logging.Logger | None = None,
    ) -> None:
        self.info = model if isinstance(model, ModelInfo) else read_model_info(Path(model))
        self.context = context or ContextParams()
        self.geometry = Geometry.resolve(self.info, self.context)
        self.memory_limit = memory_limit
        self.runtime_overhead = runtime_overhead
        self._template_override = chat_template
        self._clock = clock
        self._progress_interval = progress_interval
        self._cpu_count = cpu_count
        self._llama_factory = llama_factory
        self._log = logger or logging.getLogger(__name__)
        self._llm: llama_cpp.Llama | None = None
        self._vocab: Vocab | None = None
        self._builder: PromptBuilder | None = None
        self._batch: llama_cpp.llama_batch | None = None
        self._resident: dict[int, Sequence] = {}
        self._watch: _Watch | None = None
        self._abort_cb = llama_cpp.ggml_abort_callback(self._on_abort_check)
        self._no_abort_cb = llama_cpp.ggml_abort_callback()
        self._slow_tokens = False
        self.estimate: MemoryEstimate | None = None
        self.load_seconds = 0.0

    # -- loading -----------------------------------------------------------------

    @property
    def loaded(self) -> bool:
        return self._llm is not None

    @property
    def n_ctx(self) -> int:
        return self.geometry.n_ctx

    def threads(self) -> tuple[int, int]:
        """(threads, threads_batch) after resolving -1 to the CPU count."""
        threads = self.context.threads if self.context.threads > 0 else self._cpu_count()
        batch = self.context.threads_batch if self.context.threads_batch > 0 else threads
        return threads, batch

    def llama_kwargs(self) -> dict[str, object]:
        """The exact ``llama_cpp.Llama`` arguments used; a direct comparison uses the same."""
        threads, threads_batch = self.threads()
        return {
            "model_path": str(self.info.path),
            "n_ctx": self.geometry.n_ctx,
            "n_batch": self.geometry.n_batch,
            "n_ubatch": self.geometry.n_ubatch,
            "n_threads": threads,
            "n_threads_batch": threads_batch,
            "flash_attn": self.context.flash_attn,
            "verbose": False,
        }

    def load(self) -> None:
        """Check the memory fit, then load; a no-op when already loaded.

        Raises MemoryFitError (before touching llama.cpp) or ModelLoadError.
        """
        if self._llm is not None:
            return
        self.estimate = check_fit(
            self.info, self.context, self.memory_limit, runtime_overhead=self.runtime_overhead
        )
        started = self._clock()
        try:
            llm = self._llama_factory(**self.llama_kwargs())
        except (ValueError, RuntimeError, OSError) as e:
            raise ModelLoadError(self.info.path, str(e)) from None
        try:
            vocab = Vocab(llama_cpp.llama_model_get_vocab(llm.model))
            template = self._template_override or self.info.chat_template
            if template is None:
                self._log.warning(
                    "%s has no chat template; using ChatML, which a base model may not follow",
                    self.info.path,
                )
                template = FALLBACK_TEMPLATE
            bos = vocab.token_text(vocab.bos) if vocab.bos >= 0 else ""
            eos = vocab.token_text(vocab.eos) if vocab.eos >= 0 else ""
            builder = PromptBuilder(template, vocab, bos=bos, eos=eos)
        except BaseException:
            llm.close()
            raise
        self._batch = llama_cpp.llama_batch_init(self.geometry.n_batch, 0, 1)
        self._llm, self._vocab, self._builder = llm, vocab, builder
        self._slow_tokens = False
        self.load_seconds = self._clock() - started

    def unload(self) -> None:
        """Free the model and context; sequences lose their evaluated tokens."""
        if self._llm is None:
            return
        for seq in self._resident.values():
            seq.tokens = []
        self._resident.clear()
        if self._batch is not None:
            llama_cpp.llama_batch_free(self._batch)
            self._batch = None
        llm, self._llm, self._vocab, self._builder = self._llm, None, None, None
        llm.close()

    def close(self) -> None:
        self.unload()

    def __enter__(self) -> Engine:
        self.load()
        return self

    def __exit__(self, *exc: object) -> None:
        self.unload()

    def _require(self) -> tuple[llama_cpp.Llama, Vocab, PromptBuilder]:
        if self._llm is None or self._vocab is None or self._builder is None:
            raise NotLoadedError(f"{self.info.path}: the model is not loaded")
        return self._llm, self._vocab, self._builder

    # -- text ----------------------------------------------------------------------

    @property
    def vocab(self) -> Vocab:
        return self._require()[1]

    def tokenize(self, text: str, *, special: bool = False) -> list[int]:
        return self._require()[1].tokenize(text, special=special)

    def detokenize(self, tokens: Seq[int]) -> str:
        vocab = self._require()[1]
        return b"".join(vocab.piece(t) for t in tokens).decode("utf-8", errors="replace")

    def prompt(self, messages: Seq[Message], sampling: SamplingParams) -> PromptWindow:
        """Prompt tokens for ``messages`` under the context overflow policy (prompt.py)."""
        builder = self._require()[2]
        reserve = answer_reserve(sampling.n_predict, self.n_ctx)
        return fit_window(builder, messages, n_ctx=self.n_ctx, reserve=reserve)

    # -- sequences -----------------------------------------------------------------

    def new_sequence(self) -> Sequence:
        """A fresh sequence for this engine's single slot (sequence id 0)."""
        return Sequence(seq_id=0)

    def _memory(self) -> llama_cpp.llama_memory_t:
        return llama_cpp.llama_get_memory(self._require()[0].ctx)

    def _claim(self, seq: Sequence) -> None:
        """Make ``seq`` the owner of its slot, dropping whoever held it before."""
        if seq.seq_id != 0:
            raise ValueError(f"this engine has one sequence slot (0), not {seq.seq_id}")
        current = self._resident.get(seq.seq_id)
        if current is seq:
            return
        if current is not None:
            current.tokens = []
        llama_cpp.llama_memory_seq_rm(self._memory(), seq.seq_id, -1, -1)
        seq.tokens = []
        self._resident[seq.seq_id] = seq

    def _truncate(self, seq: Sequence, n_keep: int) -> None:
        if n_keep < seq.n_past:
            llama_cpp.llama_memory_seq_rm(self._memory(), seq.seq_id, n_keep, -1)
            del seq.tokens[n_keep:]

    def save_state(self, seq: Sequence) -> bytes:
        """The KV state of ``seq`` (pair it with ``seq.tokens`` to restore later)."""
        llm = self._require()[0]
        if self._resident.get(seq.seq_id) is not seq:
            raise ValueError("the sequence is not in the context; nothing to save")
        size = llama_cpp.llama_state_seq_get_size(llm.ctx, seq.seq_id)
        buf = (ctypes.c_uint8 * size)()
        n = llama_cpp.llama_state_seq_get_data(llm.ctx, buf, size, seq.seq_id)
        return bytes(buf)[:n]

    def restore_state(self, seq: Sequence, data: bytes, tokens: Seq[int]) -> None:
        """Put a saved state back; the next turn then evaluates only its new tokens.

        Raises DecodeError if llama.cpp rejects the data or it does not hold
        exactly ``tokens`` positions; the sequence is then empty (re-process it).
        """
        llm = self._require()[0]
        self._claim(seq)
        llama_cpp.llama_memory_seq_rm(self._memory(), seq.seq_id, -1, -1)
        seq.tokens = []
        src = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
        n = llama_cpp.llama_state_seq_set_data(llm.ctx, src, len(data), seq.seq_id)
        pos_max = llama_cpp.llama_memory_seq_pos_max(self._memory(), seq.seq_id)
        if n == 0 or pos_max != len(tokens) - 1:
            llama_cpp.llama_memory_seq_rm(self._memory(), seq.seq_id, -1, -1)
            raise DecodeError(
                f"saved state does not fit this model/context (read {n} bytes, "
                f"{pos_max + 1} positions for {len(tokens)} tokens)"
            )
        seq.tokens = list(tokens)

    # -- decoding ------------------------------------------------------------------

    def _on_abort_check(self, _data: ctypes.c_void_p) -> bool:
        """llama.cpp's abort callback: true aborts the running decode."""
        watch = self._watch
        if watch is None:
            return False
        try:
            watch.calls += 1
            if watch.cancelled():
                return True
            watch.beat()
        except BaseException as e:  # an exception must not unwind through C
            watch.error = e
            return True
        return False

    def _decode(self, seq: Sequence, tokens: Seq[int], watch: _Watch | None) -> int:
        """Evaluate ``tokens`` after ``seq``'s; returns the batch row holding the logits.

        With ``watch``, llama.cpp consults it between graph nodes (cancel, progress).
        """
        llm = self._require()[0]
        batch = self._batch
        assert batch is not None
        n_batch = self.geometry.n_batch
        row = 0
        if watch is not None:
            self._watch = watch
            llama_cpp.llama_set_abort_callback(llm.ctx, self._abort_cb, None)
        try:
            for start in range(0, len(tokens), n_batch):
                chunk = tokens[start : start + n_batch]
                pos0 = seq.n_past
                batch.n_tokens = len(chunk)
                for i, token in enumerate(chunk):
                    batch.token[i] = token
                    batch.pos[i] = pos0 + i
                    batch.n_seq_id[i] = 1
                    batch.seq_id[i][0] = seq.seq_id
                    batch.logits[i] = 0
                row = len(chunk) - 1
                batch.logits[row] = 1
                rc = llama_cpp.llama_decode(llm.ctx, batch)
                if rc == 0:
                    seq.tokens.extend(chunk)
                    continue
                self._resync(seq, pos0, chunk)
                if rc == 2 and watch is not None:
                    if watch.error is not None:
                        raise watch.error
                    raise _Cancelled
                if rc == 1:
                    raise DecodeError(f"no room in the context for {len(chunk)} more tokens")
                raise DecodeError(f"llama_decode failed with code {rc}")
        finally:
            if watch is not None:
                llama_cpp.llama_set_abort_callback(llm.ctx, self._no_abort_cb, None)
                self._watch = None
        return row

    def _resync(self, seq: Sequence, pos0: int, chunk: Seq[int]) -> None:
        """After a failed or aborted decode, keep exactly the positions llama.cpp kept."""
        pos_max = llama_cpp.llama_memory_seq_pos_max(self._memory(), seq.seq_id)
        kept = max(pos0, min(pos0 + len(chunk), pos_max + 1))
        seq.tokens.extend(chunk[: kept - pos0])
        llama_cpp.llama_memory_seq_rm(self._memory(), seq.seq_id, kept, -1)

    # -- generation ----------------------------------------------------------------

    def chat(
        self,
        seq: Sequence,
        messages: Seq[Message],
        sampling: SamplingParams,
        *,
        on_token: TokenHook | None = None,
        on_text: TextSink | None = None,
        cancel: Cancel | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> GenerationResult:
        """Answer the conversation ``messages`` (oldest turns dropped if they do not fit)."""
        window = self.prompt(messages, sampling)
        result = self.generate(
            seq,
            window.tokens,
            sampling,
            on_token=on_token,
            on_text=on_text,
            cancel=cancel,
            on_progress=on_progress,
        )
        if window.dropped:
            return _with_dropped(result, window.dropped)
        return result

    def generate(
        self,
        seq: Sequence,
        prompt: Seq[int],
        sampling: SamplingParams,
        *,
        on_token: TokenHook | None = None,
        on_text: TextSink | None = None,
        cancel: Cancel | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> GenerationResult:
        """Continue ``seq`` with ``prompt`` and sample an answer token by token.

        Tokens of ``prompt`` already evaluated in ``seq`` are reused. ``on_token``
        sees each sampled token before it is streamed or fed back; ``on_text``
        receives the answer's text as it grows; ``cancel`` ends the turn early
        (finish_reason "cancelled"); ``on_progress`` is called at least every
        ``progress_interval`` seconds while work is going on, also from inside
        long llama.cpp decodes.
        """
        llm, vocab, _ = self._require()
        prompt = list(prompt)
        if not prompt:
            raise ValueError("empty prompt")
        if len(prompt) >= self.n_ctx:
            raise PromptTooLongError(len(prompt), self.n_ctx - 1, self.n_ctx, 1)
        is_cancelled = cancel_check(cancel)
        beat = _Throttle(on_progress, self._clock, self._progress_interval)
        self._claim(seq)
        started = self._clock()
        n_keep = seq.common_prefix(prompt)
        if n_keep == len(prompt):
            n_keep -= 1  # the last prompt token is evaluated again for fresh logits
        self._truncate(seq, n_keep)

        def result(
            finish: str, tokens: list[int], text: str, t_prompt: float, reason: str = ""
        ) -> GenerationResult:
            return GenerationResult(
                text=text,
                tokens=tuple(tokens),
                finish_reason=finish,
                n_prompt=len(prompt),
                n_eval=min(seq.n_past, len(prompt)) - n_keep,
                n_gen=len(tokens),
                prompt_seconds=t_prompt - started,
                gen_seconds=self._clock() - t_prompt,
                reason=reason,
            )

        try:
            row = self._decode(seq, prompt[n_keep:], _Watch(is_cancelled, beat))
        except _Cancelled:
            now = self._clock()
            return result("cancelled", [], "", now)
        prompt_done = self._clock()
        room = self.n_ctx - len(prompt)
        limit = room if sampling.n_predict < 0 else min(sampling.n_predict, room)
        at_limit = "length" if 0 <= sampling.n_predict <= room else "context"
        out: list[int] = []
        text: list[str] = []
        stream = Utf8Stream()
        finish, reason = at_limit, ""
        sampler = Sampler(sampling, n_vocab=vocab.n_tokens, n_ctx=self.n_ctx)
        try:
            while len(out) < limit:
                if is_cancelled():
                    finish = "cancelled"
                    break
                token = sampler.sample(llm.ctx, row)
                if vocab.is_eog(token):
                    finish = "stop"
                    break
                emitted = [token]
                if on_token is not None:
                    decision = on_token(token, vocab.piece(token))
                    if decision is not None and decision.action is Action.STOP:
                        finish, reason = "policy", decision.reason
                        break
                    if decision is not None and decision.action is Action.REPLACE:
                        emitted = list(decision.tokens)[: limit - len(out)]
                        for t in emitted:
                            sampler.accept(t)
                for t in emitted:
                    out.append(t)
                    chunk = stream.feed(vocab.piece(t))
                    if chunk:
                        text.append(chunk)
                        if on_text is not None:
                            on_text(chunk)
                if len(out) >= limit:
                    break  # like llama-cpp-python: the last token is not evaluated
                t0 = self._clock()
                try:
                    watch = _Watch(is_cancelled, beat) if self._slow_tokens else None
                    row = self._decode(seq, emitted, watch)
                except _Cancelled:
                    finish = "cancelled"
                    break
                self._slow_tokens = self._clock() - t0 > SLOW_TOKEN_SECONDS
                beat()
        finally:
            sampler.close()
        tail = stream.flush()
        if tail:
            text.append(tail)
            if on_text is not None:
                on_text(tail)
        return result(finish, out, "".join(text), prompt_done, reason)


def _with_dropped(result: GenerationResult, dropped: int) -> GenerationResult:
    return dataclasses.replace(result, dropped_messages=dropped)
