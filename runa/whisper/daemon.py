"""whisper as a daemon: tier 2 of tokenWhisper served on the bus.

It listens on the queue ``whisper`` (payloads: docs/protocol.md, "whisper") and answers
``judge`` (one text, prompt or output side, judged whole in windows: the
``runa.policy.tier2.Judgement`` as a dict) and ``status``. splinfer asks it before the first
token of an answer and, as the answer streams, about its windows.

It lowers its own CPU priority at start (``whisper.niceness``, os.nice): on two cores its
embedding must wait for generation, not the reverse. The model and the classifier load at
start; when either is missing the daemon still runs, says why in its status and the log,
answers ``judge`` with an error splinfer turns into the policy's fail rule, and tries again
(at most every ``RETRY_S``, between requests, never inside one) so installing the model later
needs no restart.

Texts never reach the log: only rule ids, categories, counts and timings.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from runa import log
from runa import stackbus as bus_mod
from runa.config import Config
from runa.errors import RunaError
from runa.models import Embedder
from runa.paths import Paths
from runa.policy import PolicyLibrary
from runa.protocol import whisper as protocol
from runa.protocol.payloads import PayloadError
from runa.service import ServiceContext
from runa.splinter import Bus, Envelope, Fault
from runa.splinter import envelope as env_mod
from runa.splinter.errors import BadSchema, SplinterError, TtlExpired
from runa.whisper.tier import Tier2, weights_path

NAME = protocol.SERVICE
OPS = tuple(protocol.OPS)
#: Seconds between attempts to load a missing model or weights file.
RETRY_S = 30.0
#: What loading the tier may raise besides RunaError: a malformed weights header (a field of
#: the wrong type) or a model library failing in its own way.
LOAD_ERRORS = (RunaError, ValueError, TypeError, AttributeError, KeyError, OSError)
#: The ``kind`` of the error ``judge`` answers while tier 2 cannot run.
UNAVAILABLE_KIND = "Tier2Unavailable"


class WhisperDaemon:
    name = NAME

    def __init__(self, config: Config, stack: str, logger: logging.Logger, *,
                 paths: Paths | None = None,
                 embedder_factory: Callable[[], Embedder] | None = None,
                 lower_priority: Callable[[int], int] = os.nice,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.stack = stack
        self.logger = logger
        self.paths = paths or Paths.for_stack(stack)
        self.library = PolicyLibrary.for_stack(self.paths, config, logger=logger)
        self._embedder_factory = embedder_factory
        self._lower_priority = lower_priority
        self.clock = clock
        self.tier: Tier2 | None = None
        self.problem = "not loaded yet"
        self._tried = -RETRY_S
        self.judged = 0
        self.niceness = 0
        self.bus: Bus | None = None
        self.inbox: deque[Envelope] = deque()
        self._seen = bus_mod.RecentRequests()
        self._ctx: ServiceContext | None = None

    # -- life cycle ----------------------------------------------------------------------

    def start(self, ctx: ServiceContext) -> None:
        self._ctx = ctx
        self._nice()
        ctx.status("loading the embedding model and the classifier")
        ctx.extend_timeout(60)
        self._load()
        self.bus = bus_mod.connect(self.config, self.stack)
        self.stats = self.bus.component_stats(NAME)
        self.queue = self.bus.queue(NAME, stats=self.stats, service=True)
        self._say_status()

    def _nice(self) -> None:
        wanted = self.config["whisper.niceness"]
        if not wanted:
            return
        try:
            self.niceness = self._lower_priority(wanted)
        except OSError as error:  # a sandbox that forbids it: still a working tier
            self.logger.warning("could not lower whisper's priority by %d: %s", wanted, error)

    def _load(self) -> None:
        """Load the tier; on failure keep why (status, log, judge's error) and retry later."""
        self._tried = self.clock()
        tier = None
        try:
            tier = Tier2.load(self.config, self.paths, self.library, self.logger,
                              self._embedder_factory)
            tier.tier()  # the exemplars, embedded once now rather than on a prompt
        except LOAD_ERRORS as error:  # a broken file or model: run unavailable, never crash
            if tier is not None:  # e.g. weights fitted for another embedding size
                tier.close()
            self.problem = str(error) if isinstance(error, RunaError) else \
                f"{type(error).__name__} while loading: {error}"
            log.event(self.logger, "tier2_unavailable", f"tier 2 cannot run: {self.problem}",
                      level=logging.WARNING)
            return
        self.tier = tier
        self.problem = ""
        log.event(self.logger, "tier2_loaded", f"tier 2 ready: {self.tier.embedder.model_id}, "
                  f"{len(self.tier.classifier.heads)} heads, {self.tier.exemplars} exemplars",
                  model=self.tier.embedder.model_id, exemplars=self.tier.exemplars)

    def _say_status(self) -> None:
        if self._ctx is not None:
            self._ctx.status("ready" if self.tier is not None else
                             f"unavailable: {self.problem}")

    def step(self, timeout: float) -> None:
        self.inbox.extend(bus_mod.read_requests(
            self.queue, timeout, on_bad_schema=self._bad_schema, on_cancel=lambda _r: None,
            on_expired=self._expired, seen=self._seen))
        while self.inbox:
            self._handle(self.inbox.popleft())
        self._retry()

    def _retry(self) -> None:
        """Load a missing tier again when ``RETRY_S`` has passed (between requests: a load
        takes seconds, which no ``judge`` should wait)."""
        if self.tier is not None or self.clock() - self._tried < RETRY_S:
            return
        if self._ctx is not None:
            self._ctx.status("loading the embedding model and the classifier")
            self._ctx.keepalive()
        self._load()
        if self._ctx is not None:
            self._ctx.keepalive()
        self._say_status()

    def stop(self) -> None:
        if self.tier is not None:
            self.tier.close()
        if self.bus is not None:
            self.queue.close()
            self.bus.close()

    # -- answering -------------------------------------------------------------------------

    def _handle(self, request: Envelope) -> None:
        if request.type != "query":
            return
        op = request.payload.get("op")
        try:
            if op == "judge":
                self._reply(request, self.judge(request))
            elif op == "status":
                self._reply(request, self.describe())
            else:
                raise _bad(request, f"unknown op {op!r}; whisper answers {', '.join(OPS)}")
        except BadSchema as error:
            self._bad_schema(error, request)
        except RunaError as error:
            self._fail(request, str(error), UNAVAILABLE_KIND if isinstance(error, Tier2Unavailable)
                       else type(error).__name__)
        except Exception as error:  # answered, logged, and the loop goes on
            self.logger.exception("%s failed: %s", op, type(error).__name__)
            self._fail(request, f"{type(error).__name__}: tier 2 failed", "InternalError")

    def judge(self, request: Envelope) -> dict[str, Any]:
        """The judgement of the request's text (BadSchema for a request it cannot read)."""
        text = _read(request, "text")
        side = _read(request, "side")
        if self.tier is None:
            raise Tier2Unavailable(self.problem)
        judgement = self.tier.judge(text, side)
        self.judged += 1
        if self._ctx is not None:
            self._ctx.keepalive()
        self.logger.debug("judged a %s text: %d windows, %d hits (%s) in %.1f ms", side,
                          judgement.windows, len(judgement.hits),
                          ", ".join(hit.rule for hit in judgement.hits) or "none",
                          judgement.elapsed_ms)
        return judgement.to_dict()

    def describe(self) -> dict[str, Any]:
        tier = self.tier
        return {"available": tier is not None, "problem": self.problem or None,
                "model": tier.embedder.model_id if tier else None,
                "weights": str(weights_path(self.config)),
                "heads": list(tier.classifier.heads) if tier else [],
                "exemplars": tier.exemplars if tier else 0,
                "judged": self.judged, "niceness": self.niceness}

    # -- sending ---------------------------------------------------------------------------

    def _reply(self, request: Envelope, payload: dict[str, Any]) -> None:
        if request.reply_to:
            self._send(request.reply_to, env_mod.response(request, NAME, payload, seq=0,
                                                          eof=True))

    def _fail(self, request: Envelope, message: str, kind: str) -> None:
        envelope = env_mod.fault(Fault.INTERNAL_ERROR, message, sender=NAME,
                                 to=request.sender, id=request.id)
        envelope.payload["kind"] = kind
        self.logger.info("request %s failed: %s", request.id, kind,
                         extra={"RUNA_EVENT": "request_failed"})
        if request.reply_to:
            self._send(request.reply_to, envelope)

    def _expired(self, request: Envelope, error: TtlExpired) -> None:
        if request.reply_to:
            self._send(request.reply_to, env_mod.error_reply(request, error, sender=NAME))

    def _bad_schema(self, error: BadSchema, request: Envelope | None = None) -> None:
        self.logger.warning("bad request: %s", error.message, extra={"RUNA_EVENT": "bad_schema"})
        where = env_mod.reply_channel(request, error)
        if where:
            self._send(where, env_mod.error_reply(request, error, sender=NAME))

    def _send(self, channel: str, envelope: Envelope) -> None:
        assert self.bus is not None
        try:
            self.bus.sender(channel, stats=self.stats).send(envelope)
        except SplinterError as error:
            self.logger.info("could not answer on %s: %s", channel, error)


class Tier2Unavailable(RunaError):
    """Tier 2 cannot judge now (its model or weights are missing or broken)."""

    exit_code = 69


def _bad(request: Envelope, message: str) -> BadSchema:
    return BadSchema(message, id=request.id, sender=request.sender, reply_to=request.reply_to)


def _read(request: Envelope, field: str) -> Any:
    try:
        return protocol.OPS[str(request.payload.get("op"))].read(request.payload, field)
    except PayloadError as error:
        raise _bad(request, str(error)) from None


def create(config: Config, logger: logging.Logger, stack: str) -> WhisperDaemon:
    return WhisperDaemon(config, stack, logger)
