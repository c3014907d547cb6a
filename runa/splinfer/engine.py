"""The inference engine: one model, one llama.cpp context, several sequences decoded together.

Bus-independent on purpose: the splinfer daemon wraps it, tests and benchmarks
drive it directly. ``llama_cpp.Llama`` loads the model (with a tiny context of
its own, unused); the engine builds the context it decodes in from that model
with llama.cpp's C API, because ``Llama`` cannot make a context with more than
one sequence. That context has ``parallel`` sequence slots sharing one unified
KV cache of ``ctx_size`` cells, so one conversation may use the whole context
and several short ones fit side by side.

``step`` decodes the next rows of every running answer in ONE ``llama_decode``
call: one row per answering sequence (the token it just produced) plus chunks of
prompts still being read. Each answer samples from its own row with its own
sampler (``generation.py``). A prompt is read in ``n_batch`` chunks when it is
alone, exactly as ``Llama.eval`` does, so an answer decoded alone is token for
token llama-cpp-python's; while other answers are streaming, a prompt is read in
chunks of ``interleave_chunk`` tokens so their streams do not stall for seconds.

Slots: a sequence is *resident* while it holds a slot. Starting an answer on a
sequence that is not resident takes a free slot or evicts the least recently
used idle one (``on_evict`` runs first: the daemon saves that conversation's
state there). Cells: if the cache has no room for the next rows, idle residents
are evicted the same way; when every resident is answering and the cache is
still full, the answers that do not fit end with ``context``.

What Runa adds around llama.cpp's loop: the per-token hook and the stream gate (the
seats of the token-level policy; a gate's take-back is applied to the sequence's KV
cache right after the sampling that asked for it, before anything else is decoded),
cancel (checked before every token and, through llama.cpp's abort callback, inside long
prompt evaluations when every answer in the batch is cancelled), a progress callback
also called from inside long decodes (so a daemon can ping its watchdog), UTF-8-safe
streaming, prompt-prefix reuse (``n_eval`` says how many prompt tokens were evaluated),
and saving/restoring a sequence's KV state.
"""

from __future__ import annotations

import ctypes
import logging
import os
import time
from collections.abc import Callable
from collections.abc import Sequence as Seq
from pathlib import Path

import llama_cpp

from runa.models import ModelInfo, read_model_info, require_chat_model
from runa.policy.stream import StreamGate
from runa.protocol.params import ContextParams, SamplingParams
from runa.splinfer.cpushare import CpuShare
from runa.splinfer.errors import (
    DecodeError,
    ModelLoadError,
    NoFreeSequenceError,
    NotLoadedError,
    PromptTooLongError,
)
from runa.splinfer.fit import DEFAULT_RUNTIME_OVERHEAD, Geometry, MemoryEstimate, check_fit
from runa.splinfer.generation import Generation, GenerationResult, Phase, with_dropped
from runa.splinfer.hooks import Cancel, ProgressCallback, TextSink, TokenHook, cancel_check
from runa.splinfer.prompt import (
    FALLBACK_TEMPLATE,
    Message,
    PromptBuilder,
    PromptWindow,
    answer_reserve,
    fit_window,
)
from runa.splinfer.sequence import NOT_RESIDENT, Sequence
from runa.splinfer.vocab import Vocab

__all__ = ["Engine", "GenerationResult", "default_cpu_count"]

#: A single-token decode slower than this also gets the abort callback (huge
#: models on slow machines); below it the callback's per-node cost (~8%) is not
#: worth paying, and the loop itself reports progress between tokens.
SLOW_TOKEN_SECONDS = 0.05
#: Prompt tokens read per step while other answers stream (see the module docstring).
INTERLEAVE_CHUNK = 128
#: The context ``Llama`` makes for itself, which Runa never uses (llama.cpp's minimum).
LOADER_CTX = 256

#: ggml's type ids for the KV cache types ``ContextParams`` accepts.
GGML_TYPES = {"f32": 0, "f16": 1, "q4_0": 2, "q4_1": 3, "q5_0": 6, "q5_1": 7, "q8_0": 8,
              "iq4_nl": 20, "bf16": 30}  # ggml.h's enum ggml_type

LlamaFactory = Callable[..., llama_cpp.Llama]
#: Called with a resident sequence just before the engine takes its slot away.
EvictHook = Callable[[Sequence], None]


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

    def __init__(self, cancelled: Callable[[], bool], beat: Callable[[], None]) -> None:
        self.cancelled = cancelled
        self.beat = beat
        self.error: BaseException | None = None
        self.aborted = False
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
        on_evict: EvictHook | None = None,
        interleave_chunk: int = INTERLEAVE_CHUNK,
        adapt_threads: bool = True,
        cpu_share: CpuShare | None = None,
    ) -> None:
        info = model if isinstance(model, ModelInfo) else read_model_info(Path(model))
        self.info = require_chat_model(info)  # an embedding model would answer noise
        self.context = context or ContextParams()
        self.geometry = Geometry.resolve(self.info, self.context)
        self.memory_limit = memory_limit
        self.runtime_overhead = runtime_overhead
        self.on_evict = on_evict
        self.interleave_chunk = max(1, interleave_chunk)
        self._template_override = chat_template
        self._clock = clock
        self._progress_interval = progress_interval
        self._cpu_count = cpu_count
        # With automatic threads, fewer while other programs keep CPUs busy (cpushare.py).
        self._adapt_threads = adapt_threads and self.context.threads <= 0 \
            and self.context.threads_batch <= 0
        self._cpu_share = cpu_share
        self._share: CpuShare | None = None
        self.threads_now = 0
        self._llama_factory = llama_factory
        self._log = logger or logging.getLogger(__name__)
        self._llm: llama_cpp.Llama | None = None
        self._ctx: llama_cpp.llama_context_p | None = None
        self._vocab: Vocab | None = None
        self._builder: PromptBuilder | None = None
        self._batch: llama_cpp.llama_batch | None = None
        self._slots: list[Sequence | None] = [None] * self.context.parallel
        self._busy: set[int] = set()
        self._tick = 0
        self._watch: _Watch | None = None
        self._abort_cb = llama_cpp.ggml_abort_callback(self._on_abort_check)
        self._no_abort_cb = llama_cpp.ggml_abort_callback()
        self._slow_tokens = False
        self.estimate: MemoryEstimate | None = None
        self.load_seconds = 0.0

    # -- loading -----------------------------------------------------------------

    @property
    def loaded(self) -> bool:
        return self._ctx is not None

    @property
    def n_ctx(self) -> int:
        return self.geometry.n_ctx

    @property
    def parallel(self) -> int:
        return self.context.parallel

    def threads(self) -> tuple[int, int]:
        """(threads, threads_batch) after resolving -1 to the CPU count."""
        threads = self.context.threads if self.context.threads > 0 else self._cpu_count()
        batch = self.context.threads_batch if self.context.threads_batch > 0 else threads
        return threads, batch

    def llama_kwargs(self) -> dict[str, object]:
        """``llama_cpp.Llama`` arguments with this engine's context; a direct comparison uses them.

        One sequence decoded alone by the engine gives exactly what a ``Llama``
        built with these arguments gives.
        """
        threads, threads_batch = self.threads()
        return {
            "model_path": str(self.info.path),
            "n_ctx": self.geometry.n_ctx,
            "n_batch": self.geometry.n_batch,
            "n_ubatch": self.geometry.n_ubatch,
            "n_threads": threads,
            "n_threads_batch": threads_batch,
            "flash_attn": self.context.flash_attn,
            "type_k": GGML_TYPES[self.context.cache_type_k],
            "type_v": GGML_TYPES[self.context.cache_type_v],
            "verbose": False,
        }

    def _loader_kwargs(self) -> dict[str, object]:
        return {**self.llama_kwargs(), "n_ctx": LOADER_CTX, "n_batch": 1, "n_ubatch": 1}

    def _context_params(self) -> llama_cpp.llama_context_params:
        threads, threads_batch = self.threads()
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = self.geometry.n_ctx
        params.n_batch = self.geometry.n_batch
        params.n_ubatch = self.geometry.n_ubatch
        params.n_threads = threads
        params.n_threads_batch = threads_batch
        params.n_seq_max = self.context.parallel
        params.kv_unified = True
        params.type_k = GGML_TYPES[self.context.cache_type_k]
        params.type_v = GGML_TYPES[self.context.cache_type_v]
        params.flash_attn_type = (
            llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED
            if self.context.flash_attn
            else llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
        )
        return params

    def load(self) -> None:
        """Check the memory fit, then load; a no-op when already loaded.

        Raises MemoryFitError (before touching llama.cpp) or ModelLoadError.
        """
        if self._ctx is not None:
            return
        self.estimate = check_fit(
            self.info, self.context, self.memory_limit, runtime_overhead=self.runtime_overhead
        )
        started = self._clock()
        try:
            llm = self._llama_factory(**self._loader_kwargs())
        except (ValueError, RuntimeError, OSError) as e:
            raise ModelLoadError(self.info.path, str(e)) from None
        ctx = None
        try:
            ctx = llama_cpp.llama_init_from_model(llm.model, self._context_params())
            if not ctx:
                raise ModelLoadError(self.info.path, "llama_init_from_model made no context")
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
            if ctx:
                llama_cpp.llama_free(ctx)
            llm.close()
            raise
        self._batch = llama_cpp.llama_batch_init(self.geometry.n_batch, 0, 1)
        self._llm, self._ctx, self._vocab, self._builder = llm, ctx, vocab, builder
        self._slots = [None] * self.context.parallel
        self._busy.clear()
        self._slow_tokens = False
        self.threads_now = self.threads()[0]
        if self._adapt_threads:
            self._share = self._cpu_share or CpuShare.for_this_process(self._cpu_count())
        self.load_seconds = self._clock() - started

    def unload(self) -> None:
        """Free the model and context; every resident sequence is evicted first (hook runs)."""
        if self._ctx is None:
            return
        for seq in list(self._slots):
            if seq is not None:
                self._evict(seq)
        self._busy.clear()
        if self._batch is not None:
            llama_cpp.llama_batch_free(self._batch)
            self._batch = None
        ctx, self._ctx = self._ctx, None
        llama_cpp.llama_free(ctx)
        llm, self._llm, self._vocab, self._builder = self._llm, None, None, None
        if llm is not None:
            llm.close()

    def close(self) -> None:
        self.unload()

    def __enter__(self) -> Engine:
        self.load()
        return self

    def __exit__(self, *exc: object) -> None:
        self.unload()

    def _require(self) -> tuple[llama_cpp.llama_context_p, Vocab, PromptBuilder]:
        if self._ctx is None or self._vocab is None or self._builder is None:
            raise NotLoadedError(f"{self.info.path}: the model is not loaded")
        return self._ctx, self._vocab, self._builder

    # -- text ----------------------------------------------------------------------

    @property
    def vocab(self) -> Vocab:
        return self._require()[1]

    @property
    def builder(self) -> PromptBuilder:
        return self._require()[2]

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

    # -- sequences and slots ---------------------------------------------------------

    def new_sequence(self, owner: str = "") -> Sequence:
        """A sequence without a slot yet; it gets one when it is first used."""
        return Sequence(owner=owner)

    def _memory(self) -> llama_cpp.llama_memory_t:
        return llama_cpp.llama_get_memory(self._require()[0])

    @property
    def residents(self) -> list[Sequence]:
        return [seq for seq in self._slots if seq is not None]

    def is_busy(self, seq: Sequence) -> bool:
        return seq.resident and seq.seq_id in self._busy

    def free_cells(self) -> int:
        """KV cells no resident sequence uses."""
        return self.n_ctx - sum(seq.n_past for seq in self.residents)

    def _touch(self, seq: Sequence) -> None:
        self._tick += 1
        seq.last_used = self._tick

    def _idle_residents(self, keep: Seq[Sequence] = ()) -> list[Sequence]:
        """Evictable sequences, least recently used first."""
        idle = [s for s in self.residents if s.seq_id not in self._busy and s not in keep]
        return sorted(idle, key=lambda s: s.last_used)

    def _evict(self, seq: Sequence, *, run_hook: bool = True) -> None:
        if run_hook and self.on_evict is not None and seq.tokens:
            self.on_evict(seq)
        llama_cpp.llama_memory_seq_rm(self._memory(), seq.seq_id, -1, -1)
        self._slots[seq.seq_id] = None
        self._busy.discard(seq.seq_id)
        seq.seq_id = NOT_RESIDENT
        seq.tokens = []

    def release(self, seq: Sequence) -> None:
        """Drop ``seq`` from the context without the eviction hook (nothing worth keeping)."""
        if seq.resident and self._slots[seq.seq_id] is seq:
            self._evict(seq, run_hook=False)

    def can_claim(self, seq: Sequence) -> bool:
        """Whether ``seq`` has a slot or could get one now."""
        return seq.resident or None in self._slots or bool(self._idle_residents())

    def claim(self, seq: Sequence) -> None:
        """Give ``seq`` a slot (evicting the least recently used idle sequence if needed).

        Raises NoFreeSequenceError when every slot holds a sequence that is answering.
        """
        self._require()
        if seq.resident and self._slots[seq.seq_id] is seq:
            self._touch(seq)
            return
        if None not in self._slots:
            idle = self._idle_residents()
            if not idle:
                raise NoFreeSequenceError(
                    f"all {self.parallel} sequences are answering; try again when one is done"
                )
            self._evict(idle[0])
        slot = self._slots.index(None)
        llama_cpp.llama_memory_seq_rm(self._memory(), slot, -1, -1)
        seq.seq_id, seq.tokens = slot, []
        self._slots[slot] = seq
        self._touch(seq)

    def _make_room(self, cells: int, keep: Seq[Sequence]) -> bool:
        """Evict idle sequences (not in ``keep``) until ``cells`` KV cells are free."""
        for victim in self._idle_residents(keep):
            if self.free_cells() >= cells:
                break
            self._evict(victim)
        return self.free_cells() >= cells

    def _truncate(self, seq: Sequence, n_keep: int) -> None:
        if n_keep < seq.n_past:
            llama_cpp.llama_memory_seq_rm(self._memory(), seq.seq_id, n_keep, -1)
            del seq.tokens[n_keep:]

    def save_state(self, seq: Sequence) -> memoryview:
        """The KV state of ``seq`` (pair it with ``seq.tokens`` to restore later)."""
        ctx = self._require()[0]
        if not seq.resident or self._slots[seq.seq_id] is not seq:
            raise ValueError("the sequence is not in the context; nothing to save")
        size = llama_cpp.llama_state_seq_get_size(ctx, seq.seq_id)
        buf = (ctypes.c_uint8 * size)()
        n = llama_cpp.llama_state_seq_get_data(ctx, buf, size, seq.seq_id)
        return memoryview(buf).cast("B")[:n]

    def restore_state(self, seq: Sequence, data: bytes | memoryview | ctypes.Array,
                      tokens: Seq[int]) -> None:
        """Put a saved state back; the next turn then evaluates only its new tokens.

        Claims a slot for ``seq`` first (which may evict another sequence). Raises
        DecodeError if llama.cpp rejects the data or it does not hold exactly
        ``tokens`` positions; the sequence is then empty (re-process it).
        """
        ctx = self._require()[0]
        self.claim(seq)
        if not self._make_room(len(tokens), keep=[seq]):
            raise DecodeError(f"no room in the context for {len(tokens)} restored tokens")
        llama_cpp.llama_memory_seq_rm(self._memory(), seq.seq_id, -1, -1)
        seq.tokens = []
        if isinstance(data, ctypes.Array):
            src, size = data, ctypes.sizeof(data)
        else:
            view = memoryview(data).cast("B")
            size = view.nbytes
            src = (ctypes.c_uint8 * size).from_buffer_copy(view)
        n = llama_cpp.llama_state_seq_set_data(ctx, src, size, seq.seq_id)
        pos_min = llama_cpp.llama_memory_seq_pos_min(self._memory(), seq.seq_id)
        pos_max = llama_cpp.llama_memory_seq_pos_max(self._memory(), seq.seq_id)
        if n == 0 or pos_max != len(tokens) - 1 or (tokens and pos_min != 0):
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
                watch.aborted = True
                return True
            watch.beat()
        except BaseException as e:  # an exception must not unwind through C
            watch.error = e
            watch.aborted = True
            return True
        return False

    def _decode(self, rows: list[tuple[Sequence, list[int]]], watch: _Watch | None) -> None:
        """Evaluate each sequence's tokens after its own, in one llama_decode call.

        The last row of each sequence asks for logits; row numbers are in order of
        ``rows``. With ``watch``, llama.cpp consults it between graph nodes.
        """
        ctx = self._require()[0]
        batch = self._batch
        assert batch is not None
        n = 0
        for seq, tokens in rows:
            pos0 = seq.n_past
            for i, token in enumerate(tokens):
                batch.token[n] = token
                # llama_cpp annotates pos as an array of arrays; it is one llama_pos per token
                batch.pos[n] = pos0 + i  # type: ignore[call-overload]
                batch.n_seq_id[n] = 1
                batch.seq_id[n][0] = seq.seq_id
                batch.logits[n] = 0
                n += 1
            batch.logits[n - 1] = 1
        batch.n_tokens = n
        if self._share is not None:
            self._use_threads(ctx, self._share.threads())
        if watch is not None:
            self._watch = watch
            llama_cpp.llama_set_abort_callback(ctx, self._abort_cb, None)
        try:
            rc = llama_cpp.llama_decode(ctx, batch)
        finally:
            if watch is not None:
                llama_cpp.llama_set_abort_callback(ctx, self._no_abort_cb, None)
                self._watch = None
        if rc == 0:
            for seq, tokens in rows:
                seq.tokens.extend(tokens)
            return
        for seq, tokens in rows:
            self._resync(seq, tokens)
        if rc == 2 and watch is not None:
            if watch.error is not None:
                raise watch.error
            if watch.aborted:
                raise _Cancelled
            # ctypes dropped an exception raised in the callback (by a signal handler,
            # outside its try) and returned garbage that read as "abort"
            raise DecodeError("llama.cpp's decode was aborted by an exception lost in its "
                              "abort callback (a signal?)")
        if rc == 1:
            raise DecodeError(f"no room in the context for {n} more tokens")
        raise DecodeError(f"llama_decode failed with code {rc}")

    def watch_cpu(self) -> None:
        """Sample what other programs use, between answers too (see cpushare.py)."""
        if self._share is not None:
            self._share.threads()

    def _use_threads(self, ctx: llama_cpp.llama_context_p, threads: int) -> None:
        if threads != self.threads_now:
            llama_cpp.llama_set_n_threads(ctx, threads, threads)
            self._log.debug("using %d thread(s): other programs keep %.1f CPU(s) busy",
                            threads, self._share.others if self._share else 0.0)
            self.threads_now = threads

    def _resync(self, seq: Sequence, chunk: Seq[int]) -> None:
        """After a failed or aborted decode, keep exactly the positions llama.cpp kept."""
        pos0 = seq.n_past
        pos_max = llama_cpp.llama_memory_seq_pos_max(self._memory(), seq.seq_id)
        kept = max(pos0, min(pos0 + len(chunk), pos_max + 1))
        seq.tokens.extend(chunk[: kept - pos0])
        llama_cpp.llama_memory_seq_rm(self._memory(), seq.seq_id, kept, -1)

    # -- generation ----------------------------------------------------------------

    def start(
        self,
        seq: Sequence,
        prompt: Seq[int],
        sampling: SamplingParams,
        *,
        on_token: TokenHook | None = None,
        on_text: TextSink | None = None,
        cancel: Cancel | None = None,
        gate: StreamGate | None = None,
    ) -> Generation:
        """Begin answering ``prompt`` on ``seq``; ``step`` does the work.

        Tokens of ``prompt`` already evaluated in ``seq`` are reused. ``gate`` (one per
        answer) decides what of the answer reaches ``on_text`` and stays in ``seq``; it
        sees each token after ``on_token`` (and what ``on_token`` put in its place). Raises
        NoFreeSequenceError when no slot or no KV room can be had now (every
        resident is answering), PromptTooLongError when the prompt cannot fit.
        """
        vocab = self._require()[1]
        prompt = list(prompt)
        if not prompt:
            raise ValueError("empty prompt")
        if len(prompt) >= self.n_ctx:
            raise PromptTooLongError(len(prompt), self.n_ctx - 1, self.n_ctx, 1)
        if self.is_busy(seq):
            raise ValueError("this sequence is already answering")
        self.claim(seq)
        n_keep = seq.common_prefix(prompt)
        if n_keep == len(prompt):
            n_keep -= 1  # the last prompt token is evaluated again for fresh logits
        self._truncate(seq, n_keep)
        if not self._make_room(len(prompt) - n_keep + 1, keep=[seq]):
            raise NoFreeSequenceError(
                f"the context has no room for {len(prompt) - n_keep} more tokens while "
                "the other sequences answer; try again when one is done"
            )
        self._busy.add(seq.seq_id)
        return Generation(
            seq, prompt, n_keep, sampling, vocab=vocab, n_ctx=self.n_ctx, clock=self._clock,
            on_token=on_token, on_text=on_text, cancelled=cancel_check(cancel), gate=gate,
        )  # fmt: skip

    def finish(self, gen: Generation, reason: str = "cancelled") -> None:
        """End ``gen`` now (if it is still running) and free its sequence for others."""
        gen.finish(reason)
        self._rewind(gen)
        self._busy.discard(gen.seq.seq_id)

    def _rewind(self, gen: Generation) -> None:
        """Drop the positions a gate took back from ``gen``'s sequence (before it decodes again)."""
        if gen.rewind:
            self._truncate(gen.seq, max(0, gen.seq.n_past - gen.rewind))
            gen.rewind = 0

    def step(self, gens: Seq[Generation], on_progress: ProgressCallback | None = None) -> None:
        """One ``llama_decode`` for every running generation in ``gens``, then sampling.

        Finished generations (``gen.done``) are skipped and their sequences freed;
        ``on_progress`` is called from inside a long decode (throttled).
        """
        ctx = self._require()[0]
        running = []
        for gen in gens:
            if not gen.done and gen.cancelled():
                gen.finish("cancelled")
                self._rewind(gen)
            if gen.done:
                self._busy.discard(gen.seq.seq_id)
            else:
                running.append(gen)
        if not running:
            return
        rows = self._plan(running)
        if not rows:
            return
        watch = None
        has_prompt = any(gen.phase is Phase.PROMPT for gen, _ in rows)
        if has_prompt or self._slow_tokens:
            everyone = [gen for gen, _ in rows]
            watch = _Watch(
                lambda: all(g.cancelled() for g in everyone),
                _Throttle(on_progress, self._clock, self._progress_interval),
            )
        t0 = self._clock()
        try:
            self._decode([(gen.seq, tokens) for gen, tokens in rows], watch)
        except _Cancelled:
            for gen, _ in rows:
                self.finish(gen, "cancelled")
            return
        except BaseException as error:
            for gen, _ in rows:
                gen.error = error
                self.finish(gen, "cancelled")
            raise
        if not has_prompt:
            self._slow_tokens = self._clock() - t0 > SLOW_TOKEN_SECONDS * max(1, len(rows))
        row = -1
        for gen, tokens in rows:
            row += len(tokens)
            if gen.waiting_for_logits:
                gen.on_logits(ctx, row)
                if gen.rewind:  # only this sequence's cells; the logits of all rows are read
                    self._rewind(gen)
            if gen.done:
                self._busy.discard(gen.seq.seq_id)

    def _plan(self, running: list[Generation]) -> list[tuple[Generation, list[int]]]:
        """The rows of the next decode: answer tokens first, then prompt chunks.

        Rows never exceed the free KV cells: idle sequences are evicted for room,
        and an answer that still finds none ends with ``context``.
        """
        answering = [g for g in running if g.phase is Phase.ANSWER]
        reading = [g for g in running if g.phase is Phase.PROMPT]
        keep = [g.seq for g in running]
        budget = self.geometry.n_batch
        rows: list[tuple[Generation, list[int]]] = []
        taken = 0
        for gen in answering:
            need = min(len(gen.pending), budget)
            if need == 0:
                continue
            if not self._make_room(taken + need, keep):
                self.finish(gen, "context")
                continue
            rows.append((gen, gen.take(need)))
            budget -= need
            taken += need
        per_prompt = budget if not rows else min(budget, self.interleave_chunk)
        for gen in reading:
            if budget <= 0:
                break
            want = min(len(gen.pending), per_prompt, budget)
            self._make_room(taken + want, keep)
            want = min(want, self.free_cells() - taken)
            if want <= 0:
                if not rows:
                    self.finish(gen, "context")
                continue
            rows.append((gen, gen.take(want)))
            budget -= want
            taken += want
        return rows

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
        gate: StreamGate | None = None,
    ) -> GenerationResult:
        """Continue ``seq`` with ``prompt`` and sample an answer token by token (alone).

        ``on_token`` sees each sampled token before it is streamed or fed back;
        ``on_text`` receives the answer's text as it grows; ``cancel`` ends the turn
        early (finish_reason "cancelled"); ``on_progress`` is called at least every
        ``progress_interval`` seconds while work is going on, also from inside long
        llama.cpp decodes; ``gate`` holds back, withdraws and replaces tokens (``start``).
        """
        gen = self.start(seq, prompt, sampling, on_token=on_token, on_text=on_text,
                         cancel=cancel, gate=gate)
        beat = _Throttle(on_progress, self._clock, self._progress_interval)
        try:
            while not gen.done:
                self.step([gen], on_progress)
                beat()
        finally:
            self.finish(gen)
        assert gen.result is not None
        return gen.result

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
        gate: StreamGate | None = None,
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
            gate=gate,
        )
        if window.dropped:
            return with_dropped(result, window.dropped)
        return result
