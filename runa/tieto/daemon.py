"""tieto as a daemon: one loaded embedding model and the open topics, served on the bus.

It listens on the queue ``tieto`` (payloads: docs/protocol.md, "tieto") and maps
each request onto :class:`runa.tieto.api.Tieto`: ``recall``, ``sources``,
``ingest``, ``snapshot``, ``restore``, ``topics``, ``status``; ``complete``
retrieves here and then asks splinfer over the bus, in a worker thread, so the
loop keeps reading the queue (a ``cancel`` reaches splinfer at once, even while it still
reads the prompt) and
other requests are served meanwhile. It also subscribes to the ``events``
broadcast and files the keeper's ``promote`` events into short-term memory
(runa.tieto.memory).

The embedding model loads on first need, so the daemon is ready at once and the
unit starts even where the model is not installed yet (requests then fail with
what to run). Long work (an ingest) pings the watchdog between embedding batches.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from runa import log
from runa import stackbus as bus_mod
from runa.client import CANCEL_WAIT, ServiceClient
from runa.config import Config
from runa.errors import ConfigError, RunaError
from runa.paths import Paths
from runa.protocol import events as event_payloads
from runa.protocol import tieto as protocol
from runa.protocol.answer import Grounding
from runa.protocol.payloads import PayloadError
from runa.protocol.tieto import check_number
from runa.service import ServiceContext
from runa.splinter import EVENTS_CHANNEL, Bus, Envelope, Fault
from runa.splinter import envelope as env_mod
from runa.splinter.errors import BadSchema, SplinterError, SubscriberDropped, TtlExpired
from runa.tieto.answer import complete
from runa.tieto.api import Tieto, TietoSettings
from runa.tieto.background import IngestJob, IngestQueue, LockedEmbedder
from runa.tieto.embed import Embedder, EmbedderWrapper
from runa.tieto.errors import IndexWriteError, TietoError, TopicBusyError, TopicError
from runa.tieto.ingest import IngestEvent, IngestReport
from runa.tieto.memory import memory
from runa.tieto.topic import check_topic_name, parse_declaration

NAME = "tieto"
OPS = tuple(protocol.OPS)
#: Texts per embedding call inside the daemon: the watchdog is pinged between calls.
EMBED_SLICE = 4
#: Longest wait on the queue, so promote events are filed promptly.
QUEUE_WAIT_S = 0.25
#: How long stopping waits for a running ingest to reach its next cancellation point.
INGEST_STOP_WAIT_S = 10.0


class LivelyEmbedder(EmbedderWrapper):
    """An embedder that pings the service manager between small slices of work."""

    def __init__(self, inner: Embedder, keepalive: Callable[[], None]) -> None:
        super().__init__(inner)
        self.keepalive = keepalive

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        parts = []
        for start in range(0, len(texts), EMBED_SLICE):
            self.keepalive()
            parts.append(self.inner.embed(texts[start:start + EMBED_SLICE]))
        return np.concatenate(parts) if parts else self.inner.embed([])


class _Completion:
    """One ``complete`` answer streaming from splinfer to its client in a worker thread."""

    def __init__(self, request: Envelope, reply: Callable[[dict[str, Any], bool], None],
                 grounding: Grounding, splinfer: Callable[[], ServiceClient],
                 params: dict[str, Any], logger: logging.Logger) -> None:
        self.request = request
        self.reply = reply
        self.grounding = grounding
        self.splinfer = splinfer
        self.params = params
        self.logger = logger
        self.cancelled = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"complete-{request.id[:8]}",
                                       daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        try:
            with self.splinfer() as client:
                for payload in complete(self.grounding, _Cancellable(client, self.cancelled),
                                        params=self.params):
                    eof = bool(payload.pop("eof", False))
                    self.reply(payload, eof)
        except RunaError as error:
            self.reply(_fault_payload(error), True)
        except Exception as error:  # answered, logged, and the loop goes on
            self.logger.exception("completion failed: %s", error)
            self.reply({"error": Fault.INTERNAL_ERROR, "message": str(error)}, True)


class _Cancellable:
    """splinfer's stream, cancelled (splinfer told so) once ``cancelled`` is set."""

    def __init__(self, client: ServiceClient, cancelled: threading.Event) -> None:
        self.client = client
        self.cancelled = cancelled

    def request(self, payload: dict[str, Any], *, idle_timeout: float = 60.0
                ) -> Iterator[Envelope]:
        return self.client.request(payload, idle_timeout=idle_timeout, stop=self.cancelled)


def _fault_payload(error: RunaError) -> dict[str, Any]:
    """An error as the client needs it: the fault, the message, the command's exit status."""
    request_was_bad = isinstance(error, TietoError | ConfigError) and \
        not isinstance(error, IndexWriteError)  # a full disk is not the request's fault
    code = Fault.BACKPRESSURE if isinstance(error, TopicBusyError) else \
        Fault.BAD_SCHEMA if request_was_bad or error.exit_code in (64, 65, 66) else \
        Fault.INTERNAL_ERROR
    return {"error": code, "message": str(error), "exit_code": error.exit_code,
            "kind": type(error).__name__}


class TietoDaemon:
    name = NAME

    def __init__(self, config: Config, stack: str, logger: logging.Logger, *,
                 paths: Paths | None = None,
                 embedder_factory: Callable[[], Embedder] | None = None,
                 splinfer: Callable[[Bus], ServiceClient] | None = None) -> None:
        self.config = config
        self.stack = stack
        self.logger = logger
        self.paths = paths or Paths.for_stack(stack)
        self.settings = TietoSettings.from_config(config, self.paths)
        self._embedder_factory = embedder_factory
        self._splinfer = splinfer or (lambda bus: ServiceClient(bus, "splinfer", NAME))
        self.tieto: Tieto | None = None
        self.ingests: IngestQueue | None = None
        self._model: LockedEmbedder | None = None
        self._model_lock = threading.Lock()
        self._ingested: deque[str] = deque()  # topics the ingest worker finished with
        self.bus: Bus | None = None
        self.inbox: deque[Envelope] = deque()
        self._seen = bus_mod.RecentRequests()
        self.completions: dict[str, _Completion] = {}
        self._send_lock = threading.Lock()
        self._ctx: ServiceContext | None = None
        self.filed = 0

    # -- life cycle ----------------------------------------------------------------------

    def start(self, ctx: ServiceContext) -> None:
        self._ctx = ctx
        try:
            check_topic_name(self.settings.short_term_topic)
        except TopicError as error:
            raise ConfigError(self.config.origin("tieto.short_term_topic"),
                              "tieto.short_term_topic", self.settings.short_term_topic,
                              str(error)) from None
        self.tieto = Tieto(self.settings, embedder_factory=self._lively_model)
        self.ingests = IngestQueue(Tieto(self.settings, embedder_factory=self._shared_model),
                                   self._ingested.append, self.logger)
        self.bus = bus_mod.connect(self.config, self.stack)
        self.stats = self.bus.component_stats(NAME)
        self.queue = self.bus.queue(NAME, stats=self.stats, service=True)
        self.events = self.bus.subscribe(EVENTS_CHANNEL)
        ctx.status(f"ready: {len(self.tieto.topics())} topics")

    def _shared_model(self) -> LockedEmbedder:
        """The one embedding model, loaded on first need by whichever thread needs it."""
        with self._model_lock:
            if self._model is None:
                assert self._ctx is not None
                self._ctx.status("loading the embedding model")
                inner = self._embedder_factory() if self._embedder_factory else \
                    Tieto(self.settings)._load_embedder()
                self._model = LockedEmbedder(inner, threading.Lock())
                self._ctx.status("ready")
            return self._model

    def _lively_model(self) -> Embedder:
        """The model as the daemon's loop uses it: pinging the watchdog between slices."""
        assert self._ctx is not None
        return LivelyEmbedder(self._shared_model(), self._ctx.keepalive)

    def step(self, timeout: float) -> None:
        self._read_events()
        if not self.inbox:
            self._read_queue(min(timeout, QUEUE_WAIT_S))
        while self._ingested:  # its file may be new or replaced: open it afresh next time
            assert self.tieto is not None
            self.tieto.release(self._ingested.popleft())
        while self.inbox:
            self._handle(self.inbox.popleft())
        for rid, completion in list(self.completions.items()):
            if not completion.thread.is_alive():
                del self.completions[rid]

    def stop(self) -> None:
        for completion in self.completions.values():
            completion.cancelled.set()
        ingest_ended = self.ingests.stop(INGEST_STOP_WAIT_S) if self.ingests else True
        for completion in self.completions.values():
            # A cancelled request ends within CANCEL_WAIT even if splinfer never answers.
            completion.thread.join(timeout=CANCEL_WAIT + 2)
        running = [c.request.id for c in self.completions.values() if c.thread.is_alive()]
        if not ingest_ended:
            running.append("the ingest")
        if self.tieto is not None:
            self.tieto.close()
        if self._model is not None and ingest_ended:
            self._model.close()
        if running:
            # Unmapping the bus under a thread that still reads it would crash the process.
            self.logger.warning("%s did not end; the bus stays open until exit",
                                ", ".join(running))
        elif self.bus is not None:
            self.queue.close()
            self.events.close()
            self.bus.close()

    # -- reading ----------------------------------------------------------------------------

    def _read_queue(self, timeout: float) -> None:
        self.inbox.extend(bus_mod.read_requests(self.queue, timeout, on_bad_schema=self._bad_schema,
                                        on_cancel=self._cancel, on_expired=self._expired,
                                        seen=self._seen))

    def _read_events(self) -> None:
        while True:
            try:
                event = self.events.recv(0)
            except SubscriberDropped:
                self.logger.warning("missed events (the events channel overran); "
                                    "listening again from the newest")
                self.events.raw.resubscribe()
                continue
            except BadSchema:
                continue
            if event is None:
                return
            if event.type == "event" and event.payload.get("op") == event_payloads.PROMOTE:
                self._file(event.payload)

    def _file(self, event: dict[str, Any]) -> None:
        """File one promoted key into short-term memory (runa.tieto.memory)."""
        assert self.bus is not None and self.tieto is not None
        key = event.get("key")
        if not isinstance(key, str) or not key.startswith("user:"):
            return
        value = self.bus.get(key)
        if value is None:
            return  # gone (expired, evicted) between the sweep and now
        found = memory(event, value, self.stack, self.settings.short_term_topic)
        if found is None:
            return
        try:
            chunks = self.tieto.remember(found)
        except RunaError as error:
            log.event(self.logger, "memory_not_filed", f"promoted key {key}: {error}",
                      level=logging.WARNING, key=key)
            return
        if chunks:
            self.filed += 1
            log.event(self.logger, "memory_filed", f"filed promoted key {key} into topic "
                      f"{found.topic}", key=key, topic=found.topic)

    # -- answering ---------------------------------------------------------------------------

    def _handle(self, request: Envelope) -> None:
        if request.type != "query":
            return
        op = request.payload.get("op")
        handler = getattr(self, f"_op_{op}", None) if op in OPS else None
        try:
            if handler is None:
                raise BadSchema(f"unknown op {op!r}; tieto answers {', '.join(OPS)}",
                                id=request.id, sender=request.sender,
                                reply_to=request.reply_to)
            handler(request)
        except BadSchema as error:
            self._bad_schema(error, request)
        except RunaError as error:
            self._fail(request, _fault_payload(error))
        except Exception as error:  # answered, logged, and the loop goes on
            self.logger.exception("%s failed: %s", op, error)
            self._fail(request, {"error": Fault.INTERNAL_ERROR, "message": str(error)})

    def _op_status(self, request: Envelope) -> None:
        assert self.tieto is not None
        self._reply(request, {"topics": self.tieto.topics(),
                              "model_loaded": self._model is not None,
                              "completing": len(self.completions), "memories_filed": self.filed,
                              **(self.ingests.describe() if self.ingests else {})},
                    0, True)

    def _op_topics(self, request: Envelope) -> None:
        assert self.tieto is not None
        self._reply(request, {"topics": self.tieto.topics()}, 0, True)

    def _op_recall(self, request: Envelope) -> None:
        assert self.tieto is not None
        p = request.payload
        hits = self.tieto.recall(_text(request, "question"), _text(request, "topic"),
                                 _strings(request, "filters"), **_overrides(request))
        for seq, hit in enumerate(hits):
            self._reply(request, {"hit": hit.as_dict()}, seq, False)
        self._reply(request, {"topic": p["topic"], "count": len(hits)}, len(hits), True)

    def _op_embed(self, request: Envelope) -> None:
        """Vectors for a client (the API's /v1/embeddings): float32, little-endian, base64."""
        texts = _strings(request, "texts")
        if not 1 <= len(texts) <= protocol.MAX_EMBED_TEXTS:
            raise _bad(request, f"embed takes 1 to {protocol.MAX_EMBED_TEXTS} texts, "
                       f"not {len(texts)}")
        model = self._lively_model()
        counts = [model.count_tokens(text) for text in texts]
        for index, count in enumerate(counts):
            if count > model.max_tokens:
                raise _bad(request, f"texts[{index}] has {count} word-pieces; the embedding "
                           f"model takes at most {model.max_tokens}")
        vectors = model.embed(texts).astype("<f4")
        self._reply(request, {"model": model.model_id.rsplit(":", 1)[0], "dim": model.dim,
                              "n_tokens": sum(counts),
                              "vectors": [base64.b64encode(row.tobytes()).decode()
                                          for row in vectors]}, 0, True)

    def _grounding(self, request: Envelope) -> Grounding:
        assert self.tieto is not None
        overrides = _overrides(request)
        sieve = request.payload.get("sieve")
        if sieve is not None:
            overrides["sieve"] = _number(request, "sieve")
        if request.payload.get("uncited") is not None:
            overrides["uncited"] = _text(request, "uncited")
        return self.tieto.ground(_text(request, "question"), _text(request, "topic"),
                                 _strings(request, "filters"), **overrides)

    def _op_sources(self, request: Envelope) -> None:
        grounding = self._grounding(request)
        self._reply(request, {"hits": [h.as_dict() for h in grounding.sources],
                              "best_similarity": grounding.best_similarity,
                              "sieve": grounding.sieve, "known": grounding.known,
                              "uncited": grounding.uncited}, 0, True)

    def _op_complete(self, request: Envelope) -> None:
        assert self.bus is not None
        if not request.reply_to:
            raise BadSchema("complete needs reply_to", id=request.id, sender=request.sender)
        grounding = self._grounding(request)
        params = _read(request, "params") or {}
        seq = iter(range(1 << 30))
        bus = self.bus

        def reply(payload: dict[str, Any], eof: bool) -> None:
            if "error" in payload:
                self._fail(request, payload)
            else:
                self._reply(request, payload, next(seq), eof)

        completion = _Completion(request, reply, grounding, lambda: self._splinfer(bus),
                                 params, self.logger)
        self.completions[request.id] = completion
        completion.start()

    def _op_ingest(self, request: Envelope) -> None:
        assert self.tieto is not None
        paths = [Path(p) for p in _strings(request, "paths")]
        if not paths or not all(p.is_absolute() for p in paths):
            raise _bad(request, "ingest needs 'paths': absolute paths of files or directories")
        declared = request.payload.get("filterable")
        filterable = None if declared is None else \
            [parse_declaration(d) for d in _strings(request, "filterable")]
        topic = _text(request, "topic")
        check_topic_name(topic)
        assert self.ingests is not None
        seq = iter(range(1 << 30))  # used by the worker thread only, once submitted

        def progress(event: IngestEvent) -> None:
            self._reply(request, {"event": vars(event)}, next(seq), False)

        def done(report: IngestReport) -> None:
            self._reply(request, {"report": report.as_dict()}, next(seq), True)

        def failed(error: BaseException) -> None:
            self._fail(request, _fault_payload(error) if isinstance(error, RunaError) else
                       {"error": Fault.INTERNAL_ERROR, "message": str(error)})

        ahead = self.ingests.submit(IngestJob(
            request.id, topic, paths, filterable, bool(request.payload.get("rebuild")),
            progress, done, failed, requester_gone=self._requester_gone(request),
            requester=request.sender))
        if ahead:
            self.logger.info("ingest into %s waits for %d earlier one(s)", topic, ahead)

    def _op_snapshot(self, request: Envelope) -> None:
        assert self.tieto is not None
        dest = Path(_text(request, "path"))
        if not dest.is_absolute():
            raise _bad(request, "snapshot needs 'path': an absolute path for the new file")
        size = self.tieto.snapshot(_text(request, "topic"), dest)
        self._reply(request, {"topic": request.payload["topic"], "path": str(dest),
                              "bytes": size}, 0, True)

    def _op_restore(self, request: Envelope) -> None:
        assert self.tieto is not None
        source = Path(_text(request, "path"))
        if not source.is_absolute():
            raise _bad(request, "restore needs 'path': the absolute path of a snapshot")
        topic = _text(request, "topic")
        if self.ingests is not None and topic in self.ingests.busy_topics():
            raise TopicBusyError(f"topic {topic!r} is being ingested; restore it when the "
                                 "ingest has ended (or cancel the ingest)")
        self.tieto.restore(_text(request, "topic"), source)
        self._reply(request, {"topic": request.payload["topic"], "restored": str(source)},
                    0, True)

    def _requester_gone(self, request: Envelope) -> Callable[[], str | None]:
        """Why nobody can read the answers to ``request`` any more, or None while someone can:
        its reply queue is gone (reaped) or the process that owns it has exited."""
        channel = request.reply_to
        bus = self.bus
        assert bus is not None

        def gone() -> str | None:
            if not channel:
                return None  # nobody was to be answered: nobody can be gone
            try:  # lock-free reads of the segment: safe from the ingest worker thread
                owner = bus.queue_owner(channel)
            except SplinterError:  # a name no queue can have
                owner = None
            if owner is None:
                return f"its reply queue {channel} is gone"
            if not owner.alive:
                return f"the process that asked for it (pid {owner.pid}) has exited"
            return None

        return gone

    def _cancel(self, request: Envelope) -> None:
        target = request.payload.get("target")
        if not isinstance(target, str):
            return
        completion = self.completions.get(target)
        if completion is not None:
            completion.cancelled.set()
        elif self.ingests is not None:
            self.ingests.cancel(target)

    # -- sending ---------------------------------------------------------------------------

    def _reply(self, request: Envelope, payload: dict[str, Any], seq: int, eof: bool) -> None:
        if request.reply_to:
            self._send(request.reply_to, env_mod.response(request, NAME, payload, seq=seq,
                                                          eof=eof))

    def _fail(self, request: Envelope, payload: dict[str, Any]) -> None:
        code = Fault(payload.pop("error", Fault.INTERNAL_ERROR))
        envelope = env_mod.fault(code, str(payload.get("message", "failed")), sender=NAME,
                                 to=request.sender, id=request.id)
        envelope.payload.update({k: v for k, v in payload.items() if k != "message"})
        self.logger.info("request %s failed: %s", request.id, envelope.payload["message"],
                         extra={"RUNA_EVENT": "request_failed"})
        if request.reply_to:
            self._send(request.reply_to, envelope)

    def _expired(self, request: Envelope, error: TtlExpired) -> None:
        self.logger.info("request %s not served: %s", request.id, error.message,
                         extra={"RUNA_EVENT": "ttl_expired"})
        if request.reply_to:
            self._send(request.reply_to, env_mod.error_reply(request, error, sender=NAME))

    def _bad_schema(self, error: BadSchema, request: Envelope | None = None) -> None:
        self.logger.warning("bad request: %s", error.message, extra={"RUNA_EVENT": "bad_schema"})
        where = env_mod.reply_channel(request, error)
        if where:
            self._send(where, env_mod.error_reply(request, error, sender=NAME))

    def _send(self, channel: str, envelope: Envelope) -> None:
        """Send, waiting a little for a full reply queue; a client that is gone is logged."""
        assert self.bus is not None
        deadline = time.monotonic() + 5.0
        with self._send_lock:
            while True:
                try:
                    self.bus.sender(channel, stats=self.stats).send(envelope)
                    return
                except SplinterError as error:
                    if getattr(error, "code", None) != Fault.BACKPRESSURE or \
                            time.monotonic() > deadline:
                        self.logger.info("could not answer on %s: %s", channel, error)
                        return
                time.sleep(0.01)


def _bad(request: Envelope, message: str) -> BadSchema:
    return BadSchema(message, id=request.id, sender=request.sender, reply_to=request.reply_to)


def _read(request: Envelope, field: str) -> Any:
    """The request's ``field``, of its wire type (``runa.protocol.tieto``); BadSchema if not."""
    try:
        return protocol.OPS[str(request.payload.get("op"))].read(request.payload, field)
    except PayloadError as error:
        raise _bad(request, str(error)) from None


def _text(request: Envelope, field: str) -> str:
    value = _read(request, field)
    if not value:
        raise _bad(request, f"{request.payload.get('op')} needs {field!r}: a non-empty string")
    return str(value)


def _number(request: Envelope, field: str) -> Any:
    """The request's ``field``, held to its range (``runa.protocol.tieto.RANGES``) as the
    command's flag is: OutOfRange (usage, 64) naming the field and the range."""
    value = request.payload.get(field)
    check_number(field, value)
    return value


def _strings(request: Envelope, field: str) -> list[str]:
    return list(_read(request, field) or [])


def _overrides(request: Envelope) -> dict[str, Any]:
    """The recall settings a request may change (k, mode, min_similarity)."""
    out: dict[str, Any] = {}
    p = request.payload
    if p.get("k") is not None:
        out["k"] = _number(request, "k")
    if p.get("mode") is not None:
        out["mode"] = _text(request, "mode")
    if p.get("min_similarity") is not None:
        out["min_similarity"] = _number(request, "min_similarity")
    return out


def create(config: Config, logger: logging.Logger, stack: str) -> TietoDaemon:
    return TietoDaemon(config, stack, logger)

