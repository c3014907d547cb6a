"""splinfer as a daemon: one model, many conversations, answered together over the bus.

It listens on the queue ``splinfer`` (payloads: docs/protocol.md, "splinfer").
Each ``chat`` is admitted into a sequence of the engine's context as soon as one
is free and decoded in the shared batch with every other running answer; each
answer streams on its own reply channel and can be cancelled on its own. The
queue is read between decode steps (and from inside long decodes), so cancels,
``status``, ``personas``, ``history`` and ``forget`` are answered while answers
are being generated; chats that find every sequence answering wait, in order.

A chat naming a ``conversation`` continues it: its history lives on disk
(``conversations.py``), its tokens stay in its sequence while it is resident,
and when it leaves the sequence (evicted for another conversation, the model
unloaded after ``splinfer.idle_unload_s``, splinfer stopping) or has been idle
``splinfer.state_save_idle_s``, its KV state goes to a state file, restored when
it returns — also after a restart. A state that is missing, damaged or made by
another model or llama.cpp is reported in the journal and the kept history is
evaluated again.

Watchdog pings and heartbeats come from the work loop and from inside long
decodes, so a long prompt is never mistaken for a hang.
"""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runa import cgroup, log
from runa import registry as registry_mod
from runa import stackbus as bus_mod
from runa.config import Config
from runa.errors import RunaError
from runa.models import ModelError, configured_chat_model, require_chat_model, resolve_model
from runa.paths import Paths
from runa.policy import (
    Action,
    Intervention,
    PolicyLocked,
    PolicySet,
    Tier1,
    UnknownPolicyError,
    Verdict,
)
from runa.policy.stream import StreamGate
from runa.policy.tiers import combine, has_delay, join_notices, unavailable
from runa.protocol import splinfer as protocol
from runa.protocol.params import ParamError, SamplingParams, parse_params
from runa.service import ServiceContext
from runa.splinfer import modelid, statefile
from runa.splinfer.conversations import (
    Conversation,
    ConversationError,
    ConversationStore,
    StateSaveError,
    UnknownConversationError,
)
from runa.splinfer.engine import Engine
from runa.splinfer.errors import (
    InferenceError,
    MemoryFitError,
    NoFreeSequenceError,
    PromptTooLongError,
    TemplateError,
)
from runa.splinfer.fit import check_fit, configured_context, configured_limit
from runa.splinfer.generation import Generation, GenerationResult
from runa.splinfer.hooks import TokenHook
from runa.splinfer.personas import (
    Persona,
    PersonaError,
    PersonaLibrary,
    UnknownPersonaError,
    configured_persona,
    persona_dirs,
)
from runa.splinfer.policy import Choice, SplinferPolicy, fold_notes, note
from runa.splinfer.prompt import Message, answer_reserve
from runa.splinfer.requests import ChatRequest, bad, conversation_field, parse_chat, read
from runa.splinfer.semantic import SemanticGate, WhisperLink, check_prompt
from runa.splinfer.sequence import Sequence
from runa.splinfer.statefile import StateIdentity
from runa.splinfer.stream import ReplyStream
from runa.splinfer.turnplan import TurnPlan, next_basis, plan_turn
from runa.splinfer.uploads import MAX_CHARS_PER_TOKEN, Uploads, history_page
from runa.splinter import Bus, Envelope, Fault
from runa.splinter import envelope as env_mod
from runa.splinter.errors import BadSchema, ChannelNotFound, SplinterError, TtlExpired

NAME = "splinfer"
OPS = tuple(protocol.OPS)
#: An upload (``chat_part``) not finished by its ``chat`` within this long is dropped.
UPLOAD_TTL_S = 120.0
#: A prompt with this many tokens to evaluate is announced (``reading``) before it is.
READING_NOTICE_TOKENS = 256
#: How long the loop waits for the queue while it only waits for slow readers.
DRAIN_WAIT_S = 0.005
#: Answers whose speed ``ps`` reports.
RECENT_SPEEDS = 8


def conversation_key(conversation: str) -> str:
    return f"{NAME}:conv:{conversation}"


@dataclass(eq=False)
class _Turn:
    """One chat request from admission to its last envelope."""

    request: ChatRequest
    stream: ReplyStream
    seq: Sequence
    persona: Persona
    conv: Conversation | None = None
    system: tuple[dict[str, str], ...] = ()
    plan: TurnPlan | None = None
    gen: Generation | None = None
    user_text: str = ""
    """The user's turn as the model saw it and the history keeps it (masked if need be)."""
    policy: str = ""
    notice: str = ""
    """Why ``policy`` is not the set asked for (the lock's minimum instead), else empty."""
    interventions: list[Intervention] = field(default_factory=list)
    whispers: tuple[str, ...] = ()
    """Notes added to this turn's context (a whisper of the prompt or of the last answer)."""
    gate: StreamGate | None = None
    restored: bool = False
    cancelled: bool = False
    forgotten: bool = False


class Splinfer:
    name = NAME

    def __init__(
        self,
        config: Config,
        stack: str,
        logger: logging.Logger,
        *,
        paths: Paths | None = None,
        token_hook: TokenHook | None = None,
        clock: Callable[[], float] = time.monotonic,
        memory_limit: Callable[[], int | None] = cgroup.memory_limit,
        personas: PersonaLibrary | None = None,
        store: ConversationStore | None = None,
        policy: SplinferPolicy | None = None,
    ) -> None:
        self.config = config
        self.stack = stack
        self.logger = logger
        self.paths = paths or Paths.for_stack(stack)
        self.token_hook = token_hook  # where the token-level policy monitor sits
        self.clock = clock
        self.memory_limit = memory_limit
        self.idle_unload_s = config["splinfer.idle_unload_s"]
        self.stream_timeout_s = config["splinfer.stream_timeout_s"]
        self.stream_flush_s = config["splinfer.stream_flush_ms"] / 1000
        self.save_idle_s = config["splinfer.state_save_idle_s"]
        self.default_persona = config["splinfer.persona"]
        self.policy = policy or SplinferPolicy.for_stack(self.paths, config, logger)
        self.personas = personas or PersonaLibrary(persona_dirs(self.paths), logger,
                                                   self.policy.library.names)
        self.store = store or ConversationStore(
            self.paths.state / "conversations",
            max_state_bytes=config["splinfer.state_max_mib"] << 20,
            max_state_age_s=config["splinfer.state_max_age_days"] * 86400,
            publish=self._publish, logger=logger)
        self.engine: Engine | None = None
        self.bus: Bus | None = None
        self.identity: StateIdentity | None = None
        self.pending: deque[ChatRequest] = deque()
        self.inbox: deque[Envelope] = deque()
        self.seen = bus_mod.RecentRequests()
        self.turns: dict[str, _Turn] = {}
        self.draining: list[_Turn] = []
        self.sequences: dict[str, Sequence] = {}
        self.uploads = Uploads(clock, UPLOAD_TTL_S)
        """Messages too long for one envelope, arriving in pieces (``chat_part``)."""
        self.dirty: dict[str, float] = {}
        """Conversations whose KV changed since their state file was written: when."""
        self.last_used = clock()
        self.whisper: WhisperLink | None = None
        """The line to the semantic tier (tier 2), once the bus is open."""
        self._ctx: ServiceContext | None = None
        self.speeds: deque[float] = deque(maxlen=RECENT_SPEEDS)
        """Tokens per second of the last answers' generation, the latest last."""

    # -- life cycle ----------------------------------------------------------------------

    def start(self, ctx: ServiceContext) -> None:
        self._ctx = ctx
        self.context_params = configured_context(self.config)
        configured_persona(self.config, self.personas)
        self.policy.start()
        model = configured_chat_model(self.config, self.paths)
        ctx.status(f"loading {model.path.name}")
        ctx.extend_timeout(60)
        self.engine = Engine(model, self.context_params, memory_limit=self._memory_limit(),
                             clock=self.clock, logger=self.logger, on_evict=self._on_evict)
        self.engine.load()
        log.event(self.logger, "model_loaded", f"loaded {model.path} in "
                  f"{self.engine.load_seconds:.2f} s", model=str(model.path))
        self.bus = bus_mod.connect(self.config, self.stack)
        self.stats = self.bus.component_stats(NAME)
        self.queue = self.bus.queue(NAME, stats=self.stats, service=True)
        self.whisper = WhisperLink(self.bus, self.config["splinfer.whisper_timeout_ms"] / 1000,
                                   off=self._tier2_off(), clock=self.clock,
                                   keepalive=ctx.keepalive)
        if self.whisper.off:
            log.event(self.logger, "tier2_off", f"the semantic tier is off: {self.whisper.off}")
        self.identity = self._identity(ctx)
        self.store.open()
        self.store.settle_states(self.identity.model)  # after `models use`, a restart
        self.store.enforce_cap()
        self.store.republish()
        self.last_used = self.clock()
        ctx.status(self._ready())

    def _tier2_off(self) -> str:
        """Why tier 2 is off (whisper not registered or disabled), or empty when it is on."""
        try:
            registry = registry_mod.load(self.paths.sysconfdir)
            component = registry.get("whisper")
        except (KeyError, RunaError):
            return "whisper is not in the component registry"
        if not component.enabled:
            return ("whisper is disabled in the component registry "
                    f"({registry.origin('components.whisper.enabled')})")
        return ""

    def _identity(self, ctx: ServiceContext) -> StateIdentity:
        """What saved states must match: the model's sha256 (cached), llama.cpp, KV layout."""
        assert self.engine is not None
        last = [self.clock()]

        def progress() -> None:
            ctx.keepalive()  # hashing a large model (at start, or `models use`) takes long
            if self.clock() - last[0] > 5:
                last[0] = self.clock()
                ctx.extend_timeout(30)

        digest, cached = modelid.model_sha256(self.engine.info.path,
                                              self.paths.state / "model-ids.json",
                                              progress=progress)
        if not cached:
            self.logger.info("model sha256 %s (%s)", digest, self.engine.info.path)
        return StateIdentity(model=digest, llama=statefile.llama_identity(),
                             kv=statefile.kv_identity(self.context_params.flash_attn,
                                                      self.context_params.cache_type_k,
                                                      self.context_params.cache_type_v))

    def _memory_limit(self) -> int | None:
        """The tighter of ``splinfer.memory_max`` and the cgroup's limit (MemoryMax=)."""
        return configured_limit(self.config, self.memory_limit())

    def step(self, timeout: float) -> None:
        busy = bool(self.turns or self.inbox)
        waiting = bool(self.pending or self.draining)
        self._read_queue(0 if busy else DRAIN_WAIT_S if waiting else timeout)
        self._process_inbox()
        self._admit()
        if self.turns:
            self._decode_step()
        self._pump()
        if not self.turns and not self.pending and not self.draining:
            self._idle_work()

    def stop(self) -> None:
        for turn in list(self.turns.values()):
            assert turn.gen is not None and self.engine is not None
            self.engine.finish(turn.gen)
            turn.stream.fail(Fault.INTERNAL_ERROR, "splinfer stopped while answering; ask again")
        self.turns.clear()
        for request in self.pending:
            self._fail_request(request, Fault.INTERNAL_ERROR, "splinfer stopped; ask again")
        self.pending.clear()
        if self.engine is not None:
            self.engine.close()  # every resident conversation leaves: its state is saved
        if self.bus is not None:
            if self.whisper is not None:
                self.whisper.close()
            self.queue.close()
            self.bus.close()

    # -- reading the queue -----------------------------------------------------------------

    def _read_queue(self, timeout: float) -> None:
        """Move what is waiting into the inbox; cancels take effect at once."""
        self.inbox.extend(bus_mod.read_requests(self.queue, timeout,
                                        on_bad_schema=self._answer_bad_schema,
                                        on_cancel=self._cancel,
                                        on_expired=self._answer_expired, seen=self.seen))

    def _during_decode(self) -> None:
        """Called from inside long decodes: stay alive, notice cancels."""
        assert self._ctx is not None
        self._ctx.keepalive()
        self._read_queue(0)

    def _process_inbox(self) -> None:
        while self.inbox:
            request = self.inbox.popleft()
            if request.type != "query":
                continue  # events and stray responses are not for us
            try:
                self._dispatch(request)
            except BadSchema as error:
                self._answer_bad_schema(error, request)
            except ConversationError as error:  # a damaged history file: not the client's fault
                self.logger.error("%s", error, extra={"RUNA_EVENT": "history_unreadable"})
                self._send_quietly(request.reply_to or "", env_mod.fault(
                    Fault.INTERNAL_ERROR, str(error), sender=NAME, to=request.sender,
                    id=request.id))

    def _dispatch(self, request: Envelope) -> None:
        op = request.payload.get("op")
        if op == "chat":
            self.uploads.complete(request)
            self.pending.append(parse_chat(request))
            self._check_persona(self.pending[-1])
        elif op == "chat_part":
            self._reply_once(request, self.uploads.add(request, self._upload_limit()))
        elif op == "status":
            self._reply_once(request, self.describe())
        elif op == "ps":
            self._reply_once(request, self.ps())
        elif op == "use_model":
            self._use_model(request)
        elif op == "personas":
            self._reply_once(request, self._personas())
        elif op == "history":
            self._reply_once(request, self._history(request))
        elif op == "conversations":
            self._reply_once(request, self._conversations(request))
        elif op == "forget":
            self._reply_once(request, self._forget(request))
        elif op == "policy_check":
            self._reply_once(request, self._policy_check(request))
        elif op == "cancel":
            self._cancel(request)
        else:
            raise bad(request, f"unknown op {op!r}; splinfer answers {', '.join(OPS)}")

    def _check_persona(self, chat: ChatRequest) -> None:
        """Refuse an unknown or broken persona at once (it is checked again on admission)."""
        if chat.persona is None:
            return
        try:
            self.personas.get(chat.persona)
        except (UnknownPersonaError, PersonaError) as error:
            self.pending.pop()
            raise bad(chat.envelope, str(error)) from None

    def _answer_bad_schema(self, error: BadSchema, request: Envelope | None = None) -> None:
        self.logger.warning("bad request: %s", error.message, extra={"RUNA_EVENT": "bad_schema"})
        where = env_mod.reply_channel(request, error)
        if where:
            self._send_quietly(where, env_mod.error_reply(request, error, sender=NAME))

    def _answer_expired(self, request: Envelope, error: TtlExpired) -> None:
        self.logger.info("request %s not served: %s", request.id, error.message,
                         extra={"RUNA_EVENT": "ttl_expired"})
        if request.reply_to:
            self._send_quietly(request.reply_to, env_mod.error_reply(request, error, sender=NAME))

    # -- the small queries -------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        engine = self.engine
        loaded = bool(engine and engine.loaded)
        resident = [s for s in engine.residents if s.owner] if engine and loaded else []
        return {"model": str(engine.info.path) if engine else None,
                "loaded": loaded,
                "n_ctx": engine.n_ctx if engine and loaded else None,
                "threads": engine.threads_now if engine and loaded else None,
                "busy": bool(self.turns), "queued": len(self.pending),
                "policy": {**self.policy.describe(),
                           "tier2": self.whisper.describe() if self.whisper else None},
                "conversations": {"active": len(self.turns), "resident": len(resident),
                                  "stored": len(self.store.ids()),
                                  "parallel": self.context_params.parallel}}

    def _model_name(self) -> str:
        return self.engine.info.path.name if self.engine else "no model"

    def _ready(self) -> str:
        """The health status between answers: the model stays named (``runa status``)."""
        return f"ready: {self._model_name()}"

    def ps(self) -> dict[str, Any]:
        """What runs: the model and its memory, the conversations in the context and their
        sizes in tokens, the threads, the last answers' speed (``runa ps``)."""
        engine = self.engine
        loaded = bool(engine and engine.loaded)
        answering = {t.seq.seq_id: t for t in self.turns.values()}
        rows = []
        for turn in self.turns.values():
            rows.append({"conversation": turn.conv.id if turn.conv else None,
                         "state": "answering", "tokens": turn.seq.n_past,
                         "generated": turn.gen.n_generated if turn.gen else 0})
        for seq in engine.residents if engine and loaded else []:
            if seq.owner and seq.seq_id not in answering:
                rows.append({"conversation": seq.owner, "state": "idle",
                             "tokens": seq.n_past, "generated": 0})
        info = engine.info if engine else None
        return {
            "model": None if info is None else {
                "path": str(info.path), "name": info.path.stem, "bytes": info.file_size,
                "architecture": info.architecture, "quantization": info.quantization},
            "loaded": loaded, "rss_bytes": own_rss(),
            "estimate_bytes": engine.estimate.total if engine and engine.estimate else None,
            "memory_limit": engine.memory_limit if engine else None,
            "n_ctx": engine.n_ctx if engine else None,
            "parallel": self.context_params.parallel,
            "threads": engine.threads_now if engine and loaded else None,
            "conversations": rows, "queued": len(self.pending),
            "tokens_per_s": [round(speed, 2) for speed in self.speeds]}

    def _use_model(self, request: Envelope) -> None:
        """Switch to another chat model between answers. Every refusal (unknown, not a chat
        model, too big for the limit, busy, llama.cpp refusing it) leaves the running model
        serving; conversations keep their histories, and the states each model made wait
        for it (``ConversationStore.switch_states``)."""
        name = read(request, "model")
        engine = self.engine
        assert engine is not None and self.identity is not None and self._ctx is not None
        if self.turns or self.pending:
            self._refuse_use(request, Fault.BACKPRESSURE, f"{len(self.turns)} answer(s) "
                             f"running and {len(self.pending)} waiting; ask again when they "
                             "are done", 75)
            return
        try:
            info = require_chat_model(resolve_model(name, self.paths.models))
            check_fit(info, self.context_params, self._memory_limit())
        except MemoryFitError as error:
            self._refuse_use(request, Fault.BAD_SCHEMA, f"{error} The unit's limit is "
                             "components.splinfer.memory_max (its MemoryMax=); "
                             "splinfer.memory_max lowers it further.", error.exit_code)
            return
        except ModelError as error:
            self._refuse_use(request, Fault.BAD_SCHEMA, str(error), error.exit_code)
            return
        old, old_identity = engine, self.identity
        if info.path.resolve() == old.info.path.resolve():
            self._reply_once(request, {"model": str(info.path), "changed": False,
                                       "states_back": 0})
            return
        self._ctx.status(f"switching to {info.path.name}")
        self._ctx.extend_timeout(60)
        old.unload()  # resident conversations leave: their states are saved by the old model
        self.sequences.clear()
        new = Engine(info, self.context_params, memory_limit=self._memory_limit(),
                     clock=self.clock, logger=self.logger, on_evict=self._on_evict)
        try:
            self.engine = new
            self._ctx.keepalive()  # the loop is held up by the load and the model's hash
            new.load()
            self._ctx.keepalive()
            self.identity = self._identity(self._ctx)
        except (InferenceError, OSError) as error:
            self.engine, self.identity = old, old_identity
            self._ensure_loaded()
            self._ctx.status(self._ready())
            self._refuse_use(request, Fault.INTERNAL_ERROR, f"{info.path}: {error}; still "
                             f"answering with {old.info.path.name}", 65)
            return
        back = self.store.switch_states(old_identity.model, self.identity.model)
        self.dirty.clear()
        self.last_used = self.clock()
        log.event(self.logger, "model_switched", f"switched from {old.info.path} to "
                  f"{info.path} in {new.load_seconds:.2f} s; {back} saved state(s) of it "
                  "back", model=str(info.path), states_back=back)
        self._ctx.status(self._ready())
        self._reply_once(request, {"model": str(info.path), "changed": True,
                                   "previous": str(old.info.path), "states_back": back,
                                   "load_ms": round(new.load_seconds * 1000, 1)})

    def _refuse_use(self, request: Envelope, code: Fault, message: str, exit_code: int) -> None:
        log.event(self.logger, "model_not_switched", message, level=logging.WARNING)
        envelope = env_mod.fault(code, message, sender=NAME, to=request.sender, id=request.id)
        envelope.payload["exit_code"] = exit_code
        self._send_quietly(request.reply_to or "", envelope)

    def _personas(self) -> dict[str, Any]:
        return {"personas": [{"name": p.name, "description": p.description,
                              "source": str(p.source), "params": dict(p.params)}
                             for p in self.personas.all()],
                "default": self.default_persona}

    def _history(self, request: Envelope) -> dict[str, Any]:
        conversation = conversation_field(request)
        try:
            conv = self.store.load(conversation)
        except UnknownConversationError as error:
            raise bad(request, str(error)) from None
        start = read(request, "start")
        messages = conv.messages
        limit = self._envelope_room()
        answer: dict[str, Any] = {"conversation": conv.id, "persona": conv.persona,
                                  "policy": conv.policy or None,
                                  "created": conv.created, "updated": conv.updated}
        if start is not None:  # a page, oldest first: as many from ``start`` as fit
            offset = read(request, "offset") or 0
            page, resume = history_page(messages, start, offset, limit)
            answer.update(messages=page, start=start, total=len(messages))
            if resume is not None:
                answer["next"], answer["next_offset"] = resume
            return answer
        omitted = 0
        while messages and len(json.dumps(messages).encode()) > limit:
            cut = max(2, len(messages) // 8 & ~1)  # whole turns (pairs), oldest first
            messages, omitted = messages[cut:], omitted + cut
        answer["messages"] = messages
        if omitted:
            answer["omitted"] = omitted
        return answer

    def _upload_limit(self) -> int:
        """Characters a message may have: more than the context could hold as tokens."""
        engine = self.engine
        n_ctx = engine.n_ctx if engine and engine.loaded else \
            (self.context_params.ctx_size or 32768)
        return n_ctx * MAX_CHARS_PER_TOKEN

    def _envelope_room(self) -> int:
        """Bytes of payload one answer envelope has room for."""
        return self.bus.geometry.max_envelope - 1024  # type: ignore[union-attr]

    def _conversations(self, request: Envelope) -> dict[str, Any]:
        prefix = read(request, "prefix") or ""
        summaries = [s.as_json() for s in self.store.summaries(prefix)]
        listed, limit = summaries, self._envelope_room()
        while listed and len(json.dumps(listed).encode()) > limit:
            listed = listed[: len(listed) * 3 // 4]  # the latest used are kept
        states = self.store.state_files()
        answer: dict[str, Any] = {
            "conversations": listed,
            "state_bytes": sum(f.size for f in states),
            "state_max_bytes": self.store.max_state_bytes,
            "state_max_age_s": self.store.max_state_age_s}
        if len(listed) < len(summaries):
            answer["omitted"] = len(summaries) - len(listed)
        return answer

    def _forget(self, request: Envelope) -> dict[str, Any]:
        conversation = conversation_field(request)
        active = next((t for t in self.turns.values()
                       if t.conv is not None and t.conv.id == conversation), None)
        if active is not None:
            active.cancelled = active.forgotten = True
        try:
            self.store.forget(conversation)
        except UnknownConversationError as error:
            if active is None:
                raise bad(request, str(error)) from None
        self.dirty.pop(conversation, None)
        seq = self.sequences.get(conversation)
        if seq is not None and active is None:
            self.sequences.pop(conversation)
            if self.engine is not None and self.engine.loaded:
                self.engine.release(seq)
        log.event(self.logger, "forgotten", f"forgot conversation {conversation}",
                  conversation=conversation)
        return {"conversation": conversation, "forgotten": True}

    def _cancel(self, request: Envelope) -> None:
        target = request.payload.get("target")
        if not isinstance(target, str):
            self._answer_bad_schema(bad(request, "cancel needs 'target': the id of a chat"),
                                    request)
            return
        turn = self.turns.get(target)
        if turn is not None:
            if not turn.cancelled:
                turn.cancelled = True
                log.event(self.logger, "cancelled", "request cancelled by its client",
                          request=target)
            return
        for chat in self.pending:
            if chat.id == target:
                self.pending.remove(chat)
                log.event(self.logger, "cancelled", "request cancelled by its client",
                          request=target)
                self._reply_once(chat.envelope, {
                    "text": "", "finish_reason": "cancelled", "n_prompt": 0, "n_eval": 0,
                    "n_gen": 0, "prompt_ms": 0.0, "gen_ms": 0.0, "dropped_messages": 0,
                    "conversation": chat.conversation, "persona": chat.persona,
                    "restored": False, "policy": chat.policy, "interventions": [],
                    "whispers": []})
                return

    # -- admitting chats ------------------------------------------------------------------------

    def _admit(self) -> None:
        """Start every waiting chat that can have a sequence now, in order."""
        active = {t.conv.id for t in self.turns.values() if t.conv is not None}
        for chat in list(self.pending):
            if chat.conversation is not None and chat.conversation in active:
                continue  # one turn of a conversation at a time
            try:
                turn = self._begin(chat)
            except NoFreeSequenceError:
                return  # every sequence is answering; the rest wait their turn
            except (BadSchema, ParamError, PromptTooLongError, TemplateError,
                    UnknownPersonaError, PersonaError, UnknownPolicyError) as error:
                self.pending.remove(chat)
                self._fail_request(chat, Fault.BAD_SCHEMA, _message(error))
                continue
            except PolicyLocked as error:  # nothing generated, nothing recorded
                self.pending.remove(chat)
                self._fail_request(chat, Fault.NOT_AUTHORIZED, str(error))
                continue
            except (InferenceError, RunaError) as error:
                self.pending.remove(chat)
                self._fail_request(chat, Fault.INTERNAL_ERROR, str(error))
                continue
            self.pending.remove(chat)
            if turn is None:
                continue
            self.turns[chat.id] = turn
            if turn.conv is not None:
                active.add(turn.conv.id)
            assert self._ctx is not None
            self._ctx.status(f"answering {len(self.turns)}: {self._model_name()}")

    def _begin(self, chat: ChatRequest) -> _Turn | None:
        """Build the prompt, find (or restore) the sequence, start decoding; None if the
        reply channel is gone."""
        engine = self._ensure_loaded()
        assert self.identity is not None and self.bus is not None
        known = self.sequences.get(chat.conversation) if chat.conversation else None
        if not engine.can_claim(known or engine.new_sequence()):
            raise NoFreeSequenceError("every sequence is answering")  # before any work
        conv = self._conversation(chat)
        persona = self.personas.get(chat.persona or (conv.persona if conv else None)
                                    or self.default_persona)
        _, sampling = parse_params(chat.params, sampling=persona.sampling(),
                                   source="request params")
        choice = self.policy.choose(chat.policy, conv.policy if conv else "", persona)
        tier1 = self.policy.tier1(choice.policy, lambda: engine.vocab, engine.info.path)
        prompt_system = chat.system if chat.system is not None else persona.system
        user_text, system_text = chat.text, prompt_system
        whispers = list(conv.whispers if conv else ())
        interventions: list[Intervention] = []
        notices = [choice.notice] if choice.notice else []
        # The pass-through set is decided once, by Tier1.passthrough: nothing is checked and
        # the answer streams without a gate, so 'off' costs exactly what no policy costs.
        if not tier1.passthrough:
            verdicts = [tier1.check(chat.text, "prompt")]
            if chat.system:  # the request's own system prompt is the person's text too
                verdicts.append(tier1.check(chat.system, "prompt"))
            verdicts, notice = self._semantic_prompt(chat, verdicts, choice.policy,
                                                     conv.id if conv else "")
            notices += [notice] if notice else []
            interventions = self.policy.report(
                [item for v in verdicts for item in v.interventions], conv.id if conv else "")
            if any(v.action is Action.BLOCK for v in verdicts):
                self._refuse(chat, persona, conv, tier1, choice, interventions,
                             "; ".join(notices))
                return None
            if verdicts[0].text is not None:
                user_text = verdicts[0].text
            if chat.system and verdicts[-1].text is not None:
                system_text = verdicts[-1].text
            whispers += [w for v in verdicts for w in v.whispers]
        turn_whispers = tuple(dict.fromkeys(whispers))
        notes = tuple(note(text) for text in turn_whispers)
        system = ({"role": "system", "content": system_text},) if system_text else ()
        user = {"role": "user", "content": user_text}
        try:
            plan = self._plan(engine, conv, system, notes, user, sampling)
        except TemplateError:
            if not notes:
                raise
            # a template that takes no system message after the first: the notes go in
            # the user's message, labelled
            plan = self._plan(engine, conv, system, (), fold_notes(notes, user), sampling)
        if conv is not None:
            seq = self.sequences.get(conv.id) or engine.new_sequence(owner=conv.id)
        else:
            seq = engine.new_sequence()
        try:
            sender = self.bus.sender(chat.envelope.reply_to or "", stats=self.stats)
        except ChannelNotFound:
            self.logger.info("reply channel %s is gone; dropping request", chat.envelope.reply_to)
            return None
        stream = ReplyStream(chat.envelope, sender, name=NAME, clock=self.clock,
                             flush_s=self.stream_flush_s, timeout_s=self.stream_timeout_s)
        turn = _Turn(chat, stream, seq, persona, conv, system, plan, user_text=user_text,
                     policy=choice.policy.name, notice="; ".join(notices),
                     interventions=interventions, whispers=turn_whispers)
        if conv is not None:
            self._keep_policy(conv, chat)
            turn.restored = self._bring_back(conv, seq)
            self.sequences[conv.id] = seq
        turn.gate = gate = None if tier1.passthrough else \
            self._gate(tier1, choice.policy, conv.id if conv else "", lambda: turn.cancelled)
        turn.gen = engine.start(seq, plan.tokens, sampling, on_token=self.token_hook,
                                on_text=stream.text, cancel=lambda: turn.cancelled, gate=gate)
        to_read = len(turn.gen.pending)
        if to_read >= READING_NOTICE_TOKENS:
            stream.reading(to_read)  # the client can say why the first word takes a while
        if conv is not None:
            self.dirty[conv.id] = self.clock()
        return turn

    def _semantic_prompt(self, chat: ChatRequest, verdicts: list[Verdict], policy: PolicySet,
                         conversation: str) -> tuple[list[Verdict], str]:
        """Tier 1's prompt verdicts with tier 2's judgement merged into the first (the
        request's own system prompt is judged with the text); the notice when whisper could
        not answer. Tier 2 off: as they were."""
        if self.whisper is None or self.whisper.off:
            return verdicts, ""
        text = f"{chat.system}\n\n{chat.text}" if chat.system else chat.text
        check = check_prompt(self.whisper, text, policy, conversation)
        if check.notice:
            log.event(self.logger, "tier2_unavailable", f"prompt not judged by the semantic "
                      f"tier: {check.notice}", level=logging.WARNING, policy=policy.name,
                      conversation=conversation)
        return [combine(verdicts[0], check, policy), *verdicts[1:]], check.notice

    def _gate(self, tier1: Tier1, policy: PolicySet, conversation: str,
              cancelled: Callable[[], bool]) -> StreamGate:
        """Tier 1's gate of one answer, with tier 2 watching its windows when it is on."""
        gate = tier1.gate(conversation)
        window = self.config["splinfer.whisper_window_tokens"]
        if self.whisper is None or self.whisper.off or not window:
            return gate
        return SemanticGate(gate, self.whisper, policy,
                            lambda: tier1.tokens_of(policy.refusal), window=window,
                            wait=has_delay(policy), conversation=conversation,
                            cancelled=cancelled)

    def _plan(self, engine: Engine, conv: Conversation | None, system: tuple[Message, ...],
              notes: tuple[Message, ...], user: Message, sampling: SamplingParams) -> TurnPlan:
        """The turn's prompt tokens (TemplateError when the template rejects the messages)."""
        assert self.identity is not None
        if conv is None:
            window = engine.prompt([*system, *notes, user], sampling)
            return TurnPlan(window.tokens, window.dropped, False)
        return plan_turn(engine.builder, system=system, history=conv.messages,
                         window=conv.window, user=user, basis=conv.basis,
                         model=self.identity.model, n_ctx=engine.n_ctx,
                         reserve=answer_reserve(sampling.n_predict, engine.n_ctx), notes=notes)

    def _keep_policy(self, conv: Conversation, chat: ChatRequest) -> None:
        """The request's set is the conversation's from this (admitted) turn on."""
        if chat.policy and chat.policy != conv.policy:
            log.event(self.logger, "policy_changed", f"conversation {conv.id} now runs under "
                      f"policy {chat.policy}", conversation=conv.id, policy=chat.policy)
            conv.policy = chat.policy

    def _refuse(self, chat: ChatRequest, persona: Persona, conv: Conversation | None,
                tier1: Tier1, choice: Choice, interventions: list[Intervention],
                notice: str = "") -> None:
        """A prompt the policy blocks: nothing is generated; the set's refusal is the answer,
        and the turn is kept in the person's own history (they saw it)."""
        assert self.bus is not None
        refusal = tier1.policy.refusal
        if conv is not None:
            conv.messages += [{"role": "user", "content": chat.text},
                              {"role": "assistant", "content": refusal}]
            conv.persona = persona.name
            conv.basis = None  # the next turn is built from the messages
            conv.whispers = []  # said once: the refusal answered instead
            self._keep_policy(conv, chat)
            try:
                self.store.save(conv)
            except ConversationError as error:
                log.event(self.logger, "history_not_saved", str(error), level=logging.ERROR,
                          conversation=conv.id)
        try:
            sender = self.bus.sender(chat.envelope.reply_to or "", stats=self.stats)
        except ChannelNotFound:
            return
        stream = ReplyStream(chat.envelope, sender, name=NAME, clock=self.clock,
                             flush_s=self.stream_flush_s, timeout_s=self.stream_timeout_s)
        turn = _Turn(chat, stream, Sequence(), persona, conv,  # a sequence it never uses
                     policy=tier1.policy.name, notice=notice,
                     interventions=interventions)
        stream.text(refusal)
        stream.finish({"finish_reason": "policy", "n_prompt": 0, "n_eval": 0, "n_gen": 0,
                       "prompt_ms": 0.0, "gen_ms": 0.0, "dropped_messages": 0,
                       "conversation": conv.id if conv is not None else None,
                       "persona": persona.name, "restored": False, **_policy_fields(turn)})
        log.event(self.logger, "turn", "refused by the policy before generating",
                  n_eval=0, n_gen=0, finish="policy", conversation=conv.id if conv else "")
        self.draining.append(turn)

    def _policy_check(self, request: Envelope) -> dict[str, Any]:
        """Tier 1 on texts with the model's tokenizer, and tier 2 when it is on (``runa
        policy check`` through the stack: the same answers as in process). The lock does not
        apply: nobody is shown anything."""
        items = read(request, "items")
        side = read(request, "side") or "prompt"
        name = read(request, "policy")
        try:
            policy = self.policy.library.get(name) if name else self.policy.default().policy
        except RunaError as error:  # an unknown set lists the known ones
            raise bad(request, str(error)) from None
        engine = self._ensure_loaded()
        self.last_used = self.clock()
        tier1 = self.policy.tier1(policy, lambda: engine.vocab, engine.info.path)
        results = []
        down = ""  # once whisper has not answered, the other texts do not wait for it
        for item in items:
            verdict = tier1.check(item["text"], side)
            link = self.whisper
            if link is None or link.off:
                results.append({"id": item.get("id"), **verdict.to_dict(),
                                "tier2": {"off": link.off if link else "no bus"}})
                continue
            if policy.passes_everything:  # as in process and as a chat under it: not asked
                results.append({"id": item.get("id"), **verdict.to_dict(),
                                "tier2": {"skipped": f"policy {policy.name} passes everything"}})
                continue
            check = unavailable(policy, down, side=side) if down else \
                check_prompt(link, item["text"], policy, side=side)
            if check.judgement is None:
                down = down or link.last_problem or "whisper did not answer"
            if self._ctx is not None:
                self._ctx.keepalive()
            merged = combine(verdict, check, policy)
            results.append({"id": item.get("id"), **merged.to_dict(),
                            "tier2": check.judgement.to_dict() if check.judgement else
                            {"unavailable": check.notice}})
        return {"policy": policy.name, "results": results}

    def _conversation(self, chat: ChatRequest) -> Conversation | None:
        if chat.conversation is None:
            return None
        try:
            conv = self.store.load(chat.conversation)
        except UnknownConversationError:
            persona = chat.persona or self.default_persona
            return self.store.new(chat.conversation, persona)
        if chat.persona is not None and chat.persona != conv.persona:
            log.event(self.logger, "persona_changed", f"conversation {conv.id} now talks with "
                      f"{chat.persona} (was {conv.persona})", conversation=conv.id)
            conv.persona = chat.persona
        return conv

    def _bring_back(self, conv: Conversation, seq: Sequence) -> bool:
        """Make the conversation's KV state current in ``seq``; whether saved state was used."""
        assert self.engine is not None and self.identity is not None
        if seq.resident and seq.tokens:
            return True
        if not conv.messages:
            return False  # a new conversation: nothing to restore
        self.engine.claim(seq)  # may evict another conversation (its state is saved then)
        try:
            saved = self.store.load_state(conv.id, self.identity)
            self.engine.restore_state(seq, saved.data, saved.tokens)
        except (statefile.StateError, InferenceError) as error:
            kind = getattr(error, "kind", "rejected")
            log.event(self.logger, "state_unusable",
                      f"conversation {conv.id}: saved state {kind} ({error}); re-processing "
                      "its history", level=logging.WARNING, conversation=conv.id, reason=kind)
            return False
        log.event(self.logger, "state_restored", f"restored conversation {conv.id} "
                  f"({len(saved.tokens)} tokens)", conversation=conv.id,
                  n_tokens=len(saved.tokens))
        return True

    # -- decoding -------------------------------------------------------------------------------

    def _decode_step(self) -> None:
        assert self.engine is not None
        turns = list(self.turns.values())
        try:
            self.engine.step([t.gen for t in turns if t.gen is not None],
                             on_progress=self._during_decode)
        except InferenceError as error:
            for turn in turns:
                if turn.gen is not None and turn.gen.error is error:
                    self._drop_turn(turn, Fault.INTERNAL_ERROR, str(error))
        for turn in turns:
            if turn.gen is not None and turn.gen.done and turn.request.id in self.turns:
                self._complete(turn)

    def _complete(self, turn: _Turn) -> None:
        """Record the answered turn, send the final envelope, free the sequence."""
        assert self.engine is not None and turn.gen is not None
        result = turn.gen.result
        assert result is not None
        del self.turns[turn.request.id]
        conv = turn.conv
        turn.interventions += self.policy.report(
            list(turn.gate.interventions) if turn.gate else [], conv.id if conv else "")
        late = turn.gate.notice if isinstance(turn.gate, SemanticGate) else ""
        if late:
            log.event(self.logger, "tier2_unavailable", f"answer not watched by the semantic "
                      f"tier: {late}", level=logging.WARNING, policy=turn.policy,
                      conversation=conv.id if conv else "")
            turn.notice = join_notices(turn.notice, late)
        if conv is not None and not turn.forgotten:
            self._record(turn, conv, result)  # a cancelled turn too: the person saw it
        else:
            self.engine.release(turn.seq)
            if conv is not None:
                self.sequences.pop(conv.id, None)
                self.dirty.pop(conv.id, None)
        dropped = turn.plan.window if turn.plan is not None else result.dropped_messages
        turn.stream.finish({
            **_counters(result), "dropped_messages": dropped,
            "conversation": conv.id if conv is not None else None,
            "persona": turn.persona.name, "restored": turn.restored,
            **_policy_fields(turn)})
        log.event(self.logger, "turn", f"answered {result.n_gen} tokens "
                  f"({result.finish_reason})", n_eval=result.n_eval, n_gen=result.n_gen,
                  finish=result.finish_reason, conversation=conv.id if conv else "")
        self.draining.append(turn)
        self.last_used = self.clock()
        if result.gen_seconds > 0:
            self.speeds.append(result.gen_tok_s)
        if not self.turns and self._ctx is not None:
            self._ctx.status(self._ready())

    def _record(self, turn: _Turn, conv: Conversation, result: GenerationResult) -> None:
        assert self.engine is not None and self.identity is not None and turn.plan is not None
        user = {"role": "user", "content": turn.user_text}
        conv.messages += [user, {"role": "assistant", "content": result.text}]
        conv.window = turn.plan.window
        conv.persona = turn.persona.name
        conv.whispers = list(turn.gate.whispers) if turn.gate else []  # for the next turn
        if turn.whispers:  # the notes are not kept: the next turn is built from the messages
            conv.basis = None
        else:
            conv.basis = next_basis(self.engine.builder, system=turn.system,
                                    history=conv.messages, window=conv.window,
                                    prompt=turn.plan.tokens, answer=result.tokens,
                                    model=self.identity.model)
        try:
            self.store.save(conv)
        except ConversationError as error:
            log.event(self.logger, "history_not_saved", str(error), level=logging.ERROR,
                      conversation=conv.id)
        self.dirty[conv.id] = self.clock()

    def _drop_turn(self, turn: _Turn, code: Fault, message: str) -> None:
        assert self.engine is not None
        self.turns.pop(turn.request.id, None)
        if turn.gen is not None:
            self.engine.finish(turn.gen)
        self.engine.release(turn.seq)
        if turn.conv is not None:
            self.sequences.pop(turn.conv.id, None)
            self.dirty.pop(turn.conv.id, None)
        self.logger.warning("request %s failed: %s", turn.request.id, message,
                            extra={"RUNA_EVENT": "request_failed"})
        turn.stream.fail(code, message)
        self.draining.append(turn)

    def _pump(self) -> None:
        for turn in list(self.turns.values()) + self.draining:
            turn.stream.pump()
            if turn.stream.gone and not turn.cancelled:
                turn.cancelled = True
                self.logger.warning("stopped answering %s: %s", turn.request.id,
                                    turn.stream.gone, extra={"RUNA_EVENT": "stream_abandoned"})
        self.draining = [t for t in self.draining if not t.stream.done]

    # -- saving state ---------------------------------------------------------------------------

    def _on_evict(self, seq: Sequence) -> None:
        """The engine is taking ``seq``'s slot: save the conversation's state if it changed."""
        if not seq.owner or seq.owner not in self.dirty:
            return
        self._save_state(seq)

    def _save_state(self, seq: Sequence) -> None:
        assert self.engine is not None and self.identity is not None
        conversation = seq.owner
        self.dirty.pop(conversation, None)
        if not self.store.exists(conversation):
            return  # never answered (or forgotten): nothing to come back to
        started = self.clock()
        try:
            data = self.engine.save_state(seq)
            header = self.store.save_state(conversation, self.identity, seq.tokens, data)
        except (StateSaveError, ValueError) as error:
            log.event(self.logger, "state_not_saved", str(error), level=logging.WARNING,
                      conversation=conversation)
            return
        log.event(self.logger, "state_saved", f"saved conversation {conversation} "
                  f"({header.n_tokens} tokens, {header.data_bytes >> 20} MiB) in "
                  f"{(self.clock() - started) * 1000:.0f} ms", conversation=conversation,
                  n_tokens=header.n_tokens)

    def _idle_work(self) -> None:
        engine = self.engine
        if engine is None or not engine.loaded:
            return
        engine.watch_cpu()  # so the next answer's first decode sees the last second
        if self.save_idle_s and self.dirty:
            now = self.clock()
            for seq in engine.residents:
                since = self.dirty.get(seq.owner)
                if since is not None and now - since >= self.save_idle_s:
                    self._save_state(seq)
                    return  # one per step: the queue is read again in between
        if self._idle_expired():
            self._unload_idle()

    def _publish(self, conversation: str, meta: dict[str, Any] | None) -> None:
        """Mirror a state file's metadata on the bus (``splinfer:conv:<id>``)."""
        if self.bus is None:
            return
        try:
            if meta is None:
                self.bus.unset(conversation_key(conversation))
            else:
                self.bus.set(conversation_key(conversation), json.dumps(meta), ephemeral=True)
        except SplinterError as error:
            self.logger.warning("conversation metadata not published: %s", error)

    # -- model loading --------------------------------------------------------------------------

    def _ensure_loaded(self) -> Engine:
        assert self.engine is not None and self._ctx is not None
        if not self.engine.loaded:
            self._ctx.status("reloading model")
            self._ctx.keepalive()
            self.engine.load()
            log.event(self.logger, "model_loaded", f"reloaded {self.engine.info.path} in "
                      f"{self.engine.load_seconds:.2f} s", model=str(self.engine.info.path))
            self._ctx.keepalive()
        return self.engine

    def _idle_expired(self) -> bool:
        return bool(self.idle_unload_s and self.engine and self.engine.loaded
                    and self.clock() - self.last_used >= self.idle_unload_s)

    def _unload_idle(self) -> None:
        assert self.engine is not None and self._ctx is not None
        self.engine.unload()  # resident conversations leave: their states are saved
        self.sequences.clear()
        log.event(self.logger, "model_unloaded",
                  f"unloaded the model after {self.idle_unload_s:g} s idle")
        self._ctx.status("idle (model unloaded)")

    # -- answering -------------------------------------------------------------------------------

    def _fail_request(self, chat: ChatRequest, code: Fault, message: str) -> None:
        self.logger.warning("request %s failed: %s", chat.id, message,
                            extra={"RUNA_EVENT": "request_failed"})
        envelope = env_mod.fault(code, message, sender=NAME, to=chat.envelope.sender,
                                 id=chat.id)
        self._send_quietly(chat.envelope.reply_to or "", envelope)

    def _reply_once(self, request: Envelope, payload: dict[str, Any]) -> None:
        if request.reply_to:
            self._send_quietly(request.reply_to,
                               env_mod.response(request, NAME, payload, seq=0, eof=True))

    def _send_quietly(self, channel: str, envelope: Envelope) -> None:
        try:
            self.bus.sender(channel, stats=self.stats).send(envelope)  # type: ignore[union-attr]
        except SplinterError as error:
            self.logger.info("could not answer on %s: %s", channel, error)


def own_rss(status: Path = Path("/proc/self/status")) -> int | None:
    """This process's resident memory in bytes (``VmRSS``), None where /proc cannot say."""
    try:
        for line in status.read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _message(error: Exception) -> str:
    return error.message if isinstance(error, BadSchema) else str(error)


def _policy_fields(turn: _Turn) -> dict[str, Any]:
    """The final envelope's policy fields (docs/protocol.md)."""
    return {"policy": turn.policy, **({"policy_notice": turn.notice} if turn.notice else {}),
            "interventions": [item.to_dict() for item in turn.interventions],
            "whispers": list(turn.whispers)}


def _counters(result: GenerationResult) -> dict[str, Any]:
    return {"finish_reason": result.finish_reason, "n_prompt": result.n_prompt,
            "n_eval": result.n_eval, "n_gen": result.n_gen,
            "prompt_ms": round(result.prompt_seconds * 1000, 2),
            "gen_ms": round(result.gen_seconds * 1000, 2)}


def create(config: Config, logger: logging.Logger, stack: str) -> Splinfer:
    return Splinfer(config, stack, logger)

