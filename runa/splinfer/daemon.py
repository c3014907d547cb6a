"""splinfer as a daemon: one model, answering chat queries that arrive on the bus.

It listens on the queue ``splinfer``; each ``chat`` query is answered by a stream of
``response`` envelopes with the request's id (``seq`` 0, 1, …; the last one has
``eof`` and the turn's counters). While it generates it keeps reading its queue,
so a ``cancel`` for the running request stops it between two tokens; other queries
wait their turn (one conversation at a time, for now). Watchdog pings and heartbeats
come from inside the generation loop, so a long decode is never mistaken for a hang.
The model is unloaded after ``splinfer.idle_unload_s`` and loaded again on demand.
Payload schemas: docs/protocol.md, "splinfer".
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from runa import bus as bus_mod
from runa import cgroup, log
from runa.config import Config, parse_size
from runa.errors import RunaError
from runa.models.resolve import resolve_model
from runa.paths import Paths
from runa.service import ServiceContext
from runa.splinfer.engine import Engine, GenerationResult
from runa.splinfer.errors import InferenceError, ParamError, PromptTooLongError
from runa.splinfer.hooks import TokenHook
from runa.splinfer.params import SamplingParams, parse_params
from runa.splinter import Bus, Envelope, Fault
from runa.splinter import envelope as env_mod
from runa.splinter.errors import Backpressure, BadSchema, ChannelNotFound, SplinterError

NAME = "splinfer"


class _ReaderGone(Exception):
    """The reply channel vanished or stayed full past the stream timeout."""


@dataclass
class _Turn:
    request: Envelope
    reply: Any  # EnvelopeSender
    seq: int = 0
    cancelled: bool = False
    unsent: str = ""
    last_flush: float = float("-inf")


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
        self.engine: Engine | None = None
        self.bus: Bus | None = None
        self.pending: deque[Envelope] = deque()
        self.turn: _Turn | None = None
        self.last_used = clock()
        self._ctx: ServiceContext | None = None

    # -- life cycle ----------------------------------------------------------------------

    def start(self, ctx: ServiceContext) -> None:
        self._ctx = ctx
        self.context_params, _ = parse_params(
            {k: self.config[f"splinfer.{k}"]
             for k in ("ctx_size", "threads", "batch_size", "flash_attn")},
            source="configuration [splinfer]")
        model = resolve_model(self.config["splinfer.model"], self.paths.models)
        ctx.status(f"loading {model.path.name}")
        ctx.extend_timeout(60)
        self.engine = Engine(model, self.context_params, memory_limit=self._memory_limit(),
                             clock=self.clock, logger=self.logger)
        self.engine.load()
        log.event(self.logger, "model_loaded", f"loaded {model.path} in "
                  f"{self.engine.load_seconds:.2f} s", model=str(model.path))
        self.bus = bus_mod.connect(self.config, self.stack)
        self.stats = self.bus.component_stats(NAME)
        self.queue = self.bus.queue(NAME, stats=self.stats)
        self.last_used = self.clock()
        ctx.status(f"ready: {model.path.name}")

    def _memory_limit(self) -> int | None:
        """The tighter of ``splinfer.memory_max`` and the cgroup's limit (MemoryMax=)."""
        limits = [self.memory_limit()]
        if self.config["splinfer.memory_max"]:
            limits.append(parse_size(self.config["splinfer.memory_max"]))
        known = [limit for limit in limits if limit is not None]
        return min(known) if known else None

    def step(self, timeout: float) -> None:
        request = self.pending.popleft() if self.pending else self._receive(timeout)
        if request is not None:
            self._dispatch(request)
        elif self._idle_expired():
            self._unload_idle()

    def stop(self) -> None:
        if self.engine is not None:
            self.engine.close()
        if self.bus is not None:
            self.queue.close()
            self.bus.close()

    # -- requests ------------------------------------------------------------------------

    def _receive(self, timeout: float) -> Envelope | None:
        try:
            return self.queue.recv(timeout)
        except BadSchema as error:
            self._answer_bad_schema(error)
            return None

    def _answer_bad_schema(self, error: BadSchema, request: Envelope | None = None) -> None:
        self.logger.warning("bad request: %s", error.message, extra={"RUNA_EVENT": "bad_schema"})
        where = env_mod.reply_channel(request, error)
        if where:
            self._send_quietly(where, env_mod.error_reply(request, error, sender=NAME))

    def _dispatch(self, request: Envelope) -> None:
        op = request.payload.get("op")
        if request.type != "query":
            return  # events and stray responses are not for us
        if op == "chat":
            self._chat(request)
        elif op == "cancel":
            pass  # nothing is running: the target already finished
        elif op == "status":
            self._reply_once(request, self.describe())
        else:
            self._answer_bad_schema(
                BadSchema(f"unknown op {op!r}; splinfer answers chat, cancel, status",
                          id=request.id, reply_to=request.reply_to, sender=request.sender),
                request)

    def describe(self) -> dict[str, Any]:
        engine = self.engine
        return {"model": str(engine.info.path) if engine else None,
                "loaded": bool(engine and engine.loaded),
                "n_ctx": engine.n_ctx if engine and engine.loaded else None,
                "busy": self.turn is not None, "queued": len(self.pending)}

    def _chat(self, request: Envelope) -> None:
        assert self.engine is not None and self._ctx is not None
        try:
            messages, sampling = self._parse_chat(request)
        except BadSchema as error:
            self._answer_bad_schema(error, request)
            return
        try:
            reply = self.bus.sender(request.reply_to, stats=self.stats)  # type: ignore[union-attr]
        except ChannelNotFound:
            self.logger.info("reply channel %s is gone; dropping request", request.reply_to)
            return
        self.turn = turn = _Turn(request, reply)
        self._ctx.status("generating")
        try:
            self._ensure_loaded()
            result = self.engine.chat(
                self.engine.new_sequence(), messages, sampling,
                on_token=self.token_hook, on_text=self._stream_text,
                cancel=lambda: turn.cancelled, on_progress=self._while_busy)
            self._send(turn, {"text": turn.unsent, **self._counters(result)}, eof=True)
            log.event(self.logger, "turn", f"answered {result.n_gen} tokens "
                      f"({result.finish_reason})", n_eval=result.n_eval, n_gen=result.n_gen,
                      finish=result.finish_reason)
        except _ReaderGone as gone:
            self.logger.warning("stopped answering %s: %s", request.id, gone,
                                extra={"RUNA_EVENT": "stream_abandoned"})
        except (ParamError, PromptTooLongError) as error:  # the request itself cannot be served
            self._fail(turn, Fault.BAD_SCHEMA, str(error))
        except (InferenceError, RunaError) as error:
            self._fail(turn, Fault.INTERNAL_ERROR, str(error))
        finally:
            self.turn = None
            self.last_used = self.clock()
            self._ctx.status("ready")

    def _parse_chat(self, request: Envelope) -> tuple[list[dict[str, str]], SamplingParams]:
        payload = request.payload
        if not request.reply_to:
            raise BadSchema("chat needs 'reply_to': the channel the answer streams to",
                            id=request.id, sender=request.sender)
        text = payload.get("text")
        if not isinstance(text, str) or not text.strip():
            raise BadSchema("chat needs a non-empty string 'text'", id=request.id,
                            reply_to=request.reply_to, sender=request.sender)
        params = payload.get("params") or {}
        system = payload.get("system")
        if not isinstance(params, dict) or (system is not None and not isinstance(system, str)):
            raise BadSchema("'params' must be an object and 'system' a string", id=request.id,
                            reply_to=request.reply_to, sender=request.sender)
        try:
            _, sampling = parse_params(params, context=self.context_params,
                                       source="request params")
        except ParamError as error:
            raise BadSchema(str(error), id=request.id, reply_to=request.reply_to,
                            sender=request.sender) from None
        messages = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": text}]
        return messages, sampling

    def _ensure_loaded(self) -> None:
        assert self.engine is not None and self._ctx is not None
        if not self.engine.loaded:
            self._ctx.status("reloading model")
            self._ctx.keepalive()
            self.engine.load()
            log.event(self.logger, "model_loaded", f"reloaded {self.engine.info.path} in "
                      f"{self.engine.load_seconds:.2f} s", model=str(self.engine.info.path))
            self._ctx.keepalive()

    def _idle_expired(self) -> bool:
        return bool(self.idle_unload_s and self.engine and self.engine.loaded
                    and self.clock() - self.last_used >= self.idle_unload_s)

    def _unload_idle(self) -> None:
        assert self.engine is not None and self._ctx is not None
        self.engine.unload()
        log.event(self.logger, "model_unloaded",
                  f"unloaded the model after {self.idle_unload_s:g} s idle")
        self._ctx.status("idle (model unloaded)")

    # -- while generating ------------------------------------------------------------------

    def _while_busy(self) -> None:
        """Called between tokens and from inside long decodes: stay alive, watch for cancel."""
        assert self._ctx is not None and self.turn is not None
        self._ctx.keepalive()
        while True:
            try:
                envelope = self.queue.recv(0)
            except BadSchema as error:
                self._answer_bad_schema(error)
                continue
            if envelope is None:
                return
            payload = envelope.payload
            if envelope.type == "query" and payload.get("op") == "cancel":
                if payload.get("target") == self.turn.request.id:
                    self.turn.cancelled = True
                    log.event(self.logger, "cancelled", "request cancelled by its client",
                              request=self.turn.request.id)
            else:
                self.pending.append(envelope)

    def _stream_text(self, text: str) -> None:
        """Stream text, coalesced to one envelope per ``splinfer.stream_flush_ms``.

        The first piece goes at once (time to first token is what a person feels); after
        that, waking the client for every token would take CPU from the decode on a small
        machine, and 50 ms of batching is below what anyone reads at.
        """
        turn = self.turn
        assert turn is not None
        turn.unsent += text
        now = self.clock()
        if turn.unsent and now - turn.last_flush >= self.stream_flush_s:
            self._send(turn, {"text": turn.unsent})
            turn.unsent, turn.last_flush = "", now
        self._while_busy()

    def _send(self, turn: _Turn, payload: dict[str, Any], eof: bool = False) -> None:
        envelope = env_mod.response(turn.request, NAME, payload, seq=turn.seq, eof=eof)
        deadline = self.clock() + self.stream_timeout_s
        while True:
            try:
                turn.reply.send(envelope)
                turn.seq += 1
                return
            except Backpressure:
                if self.clock() > deadline:
                    raise _ReaderGone(f"{turn.request.reply_to} full for "
                                      f"{self.stream_timeout_s:g} s") from None
                self._ctx.keepalive()  # type: ignore[union-attr]
                time.sleep(0.002)
            except ChannelNotFound:
                raise _ReaderGone(f"{turn.request.reply_to} was closed") from None

    def _fail(self, turn: _Turn, code: Fault, message: str) -> None:
        self.logger.warning("request %s failed: %s", turn.request.id, message,
                            extra={"RUNA_EVENT": "request_failed"})
        envelope = env_mod.fault(code, message, sender=NAME, to=turn.request.sender,
                                 id=turn.request.id)
        self._send_quietly(turn.request.reply_to or "", envelope)

    def _reply_once(self, request: Envelope, payload: dict[str, Any]) -> None:
        if request.reply_to:
            self._send_quietly(request.reply_to,
                               env_mod.response(request, NAME, payload, seq=0, eof=True))

    def _send_quietly(self, channel: str, envelope: Envelope) -> None:
        try:
            self.bus.sender(channel, stats=self.stats).send(envelope)  # type: ignore[union-attr]
        except SplinterError as error:
            self.logger.info("could not answer on %s: %s", channel, error)

    @staticmethod
    def _counters(result: GenerationResult) -> dict[str, Any]:
        return {"finish_reason": result.finish_reason, "n_prompt": result.n_prompt,
                "n_eval": result.n_eval, "n_gen": result.n_gen,
                "prompt_ms": round(result.prompt_seconds * 1000, 2),
                "gen_ms": round(result.gen_seconds * 1000, 2),
                "dropped_messages": result.dropped_messages}


def create(config: Config, logger: logging.Logger, stack: str) -> Splinfer:
    return Splinfer(config, stack, logger)
