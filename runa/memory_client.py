"""Asking alethia, Runa's memory, on the ``alethia`` bus (``runa.protocol.memory``).

Every payload is sealed with the stack's bus key: what a person said is never on the bus
in the clear. ``MemoryClient`` is ``runa memory``'s way to the store and the way a chat
writes its turns; ``TurnRecorder`` is what a chat holds: it writes each answered turn,
and when alethia is not running it says so once and lets the chat go on at once (see its
docstring for why a turn is then not queued).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from runa import stackbus
from runa.client import SealedClient, ServiceUnavailable, service_name
from runa.config import Config
from runa.crypto.sealed import BusKey, key_path
from runa.errors import RunaError
from runa.paths import Paths
from runa.protocol import faults
from runa.protocol import memory as proto
from runa.registry import Registry
from runa.splinter import Fault
from runa.splinter.errors import MessageTooLarge


class MemoryUnavailable(ServiceUnavailable):
    """alethia is not running (no queue, or its process stopped), or did not answer."""


class MemoryFault(RunaError):
    """alethia answered with an error; ``kind`` is the store error's class (``WrongKey``,
    ``UnknownRecord``, ...), the exit status the one it names. The message names no text."""

    def __init__(self, payload: Mapping[str, Any]) -> None:
        self.payload = dict(payload)
        self.kind = str(payload.get("kind") or payload.get("name") or "")
        self.exit_code = faults.exit_status(payload)
        super().__init__(f"alethia: {payload.get('message', 'failed')}")


class MemoryClient(SealedClient):
    """A private reply queue on the ``alethia`` bus and the stack's bus key."""

    queue = proto.SERVICE
    name = service_name(proto.SERVICE)
    contexts = (proto.SEALED_CONTEXTS["request"], proto.SEALED_CONTEXTS["reply"])

    def call(self, op: str, *, timeout: float = 30.0, **fields: Any) -> dict[str, Any]:
        """The sealed answer fields of ``op`` (its fields as ``runa.protocol.memory`` names
        them; None leaves one out)."""
        answer = self.ask(proto.OPS[op].request(**fields), timeout=timeout)
        answer.wipe()
        return answer.fields

    def pages(self, op: str, *, timeout: float = 30.0, **fields: Any
              ) -> Iterator[list[dict[str, Any]]]:
        """Every page of ``list`` (its ``entries``) or ``export`` (its ``records``), oldest
        first, following ``next`` until the last."""
        items = proto.ENTRIES if op == "list" else proto.RECORDS
        after = None
        while True:
            answer = self.call(op, timeout=timeout, after=after, **fields)
            yield list(answer.get(items) or [])
            after = answer.get(proto.NEXT)
            if not after:
                return

    def unavailable(self, message: str) -> RunaError:
        return MemoryUnavailable(message)

    def refused(self, payload: dict[str, Any]) -> RunaError:
        return MemoryFault(payload)

    def too_large(self, error: MessageTooLarge) -> RunaError:
        return MemoryFault({"code": Fault.BAD_SCHEMA, "name": "BAD_SCHEMA",
                            "message": f"the request does not fit on the alethia bus ({error})"})


class NoEmbeddingModel(RunaError):
    """alethia runs without an embedding model: search is off until one is installed."""

    exit_code = 69  # EX_UNAVAILABLE


#: ``status``'s ``index`` when alethia has no embedding model, and what a person is told.
NO_MODEL = "no embedding model"
NO_MODEL_NOTICE = ("memory search is off: alethia has no embedding model; 'runa models "
                   "setup' installs it (all-minilm-l6-v2), then restart alethia")


def search_refused(fault: MemoryFault) -> RunaError:
    """What to raise for a ``search`` alethia refused: NoEmbeddingModel for its
    ``ModelNotFound`` (said the same way everywhere), else the fault as it came (the index
    still being built, ``SearchUnavailable``, says so itself)."""
    return NoEmbeddingModel(NO_MODEL_NOTICE) if fault.kind == "ModelNotFound" else fault


def index_state(client: MemoryClient) -> str | None:
    """The search index's state from ``status`` (None when alethia does not say);
    NoEmbeddingModel when it has no embedding model, so search is off. A search that found
    nothing asks this to tell the person why."""
    try:
        state = client.call("status", timeout=5.0).get("index")
    except (MemoryFault, MemoryUnavailable):
        return None
    if state == NO_MODEL:
        raise NoEmbeddingModel(NO_MODEL_NOTICE)
    return state if isinstance(state, str) else None


@contextlib.contextmanager
def connect(config: Config, paths: Paths, stack: str,
            client_name: str = "runa-memory") -> Iterator[MemoryClient]:
    """A client of the stack's alethia; the bus first, so a stopped stack gets no key file
    (``BusNotRunning``, exit 69, when it does not exist)."""
    with stackbus.connect(config, stack, proto.BUS) as bus:
        key = BusKey.load_or_create(key_path(paths.runtime))
        try:
            with MemoryClient(bus, key, client_name) as client:
                yield client
        finally:
            key.close()


#: What a turn's record keeps of each policy intervention: never the matched text.
INTERVENTION_FIELDS = ("rule", "action", "tier")
#: How long a chat waits for alethia to take a turn before it goes on without it.
APPEND_TIMEOUT_S = 2.0
#: After alethia let a turn time out, how long each later turn asks ``status`` before it
#: waits on an append again.
PROBE_TIMEOUT_S = 0.2
OFF_NOTICE = "memory is off: alethia is not running"
HUNG_NOTICE = "memory is off: alethia does not answer; turns are not recorded until it does"


@dataclass(frozen=True)
class Turn:
    """One answered turn as alethia remembers it."""

    conversation: str
    user: str
    answer: str
    persona: str | None = None
    interventions: tuple[Mapping[str, Any], ...] = ()
    feedback: str | None = None

    @classmethod
    def answered(cls, conversation: str, user: str, answer: str,
                 final: Mapping[str, Any], persona: str | None = None) -> Turn:
        """The turn whose answer ended with splinfer's ``final`` payload (its persona, unless
        given, and its policy interventions come from there)."""
        found = final.get("interventions")
        return cls(conversation, user, answer, persona or final.get("persona") or None,
                   tuple(i for i in found if isinstance(i, Mapping))
                   if isinstance(found, list) else ())

    def fields(self) -> dict[str, Any]:
        """The fields of this turn's ``append`` (``MemoryClient.call`` makes the request)."""
        return {"kind": "turn", "conversation": self.conversation, "persona": self.persona,
                "user": self.user, "answer": self.answer, "feedback": self.feedback,
                "interventions": [{k: i[k] for k in INTERVENTION_FIELDS if k in i}
                                  for i in self.interventions]}


@dataclass
class TurnRecorder:
    """Writes each answered turn to alethia, unless the person turned it off
    (``[memory] record = false``).

    A chat must never wait on a dead daemon: before each turn one look at the bus says
    whether alethia's process is alive (no request, no wait), and when it is not the person
    is told once (``OFF_NOTICE``) and the chat goes on. The turn is not queued: a queue held
    in this process would be lost with it anyway, and one on disk would be the person's
    words in the clear, which alethia exists to prevent; the person knows memory is off
    and can start alethia. When it runs again, recording resumes, and the person is told.
    Alethia alive but not answering (a long ``rotate``, a hung process) costs one turn the
    full ``timeout``: later turns only ask ``status`` (``probe_timeout``) until it answers.
    """

    open_client: Callable[[], contextlib.AbstractContextManager[MemoryClient]]
    notice: Callable[[str], None]
    enabled: bool = True
    timeout: float = APPEND_TIMEOUT_S
    probe_timeout: float = PROBE_TIMEOUT_S
    _client: MemoryClient | None = None
    _hung: bool = False  # an append timed out: ask status before waiting on one again
    _exits: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    _off: str | None = None

    def check(self) -> bool:
        """Whether turns can be written now; says ``OFF_NOTICE`` (once) when they cannot.
        A chat calls it as it starts, so the person knows before the first turn."""
        if not self.enabled:
            return False
        try:
            if self._connected().running():
                return True
            raise MemoryUnavailable(OFF_NOTICE)
        except RunaError as error:
            self._went_off(error)
            return False

    def record(self, turn: Turn) -> str | None:
        """Write ``turn``; its record id, or None when it was not written (said once)."""
        if not self.enabled:
            return None
        try:
            client = self._connected()
            if not client.running():
                raise MemoryUnavailable(OFF_NOTICE)
            if self._hung:
                client.call("status", timeout=self.probe_timeout)
                self._hung = False
            record_id = client.call("append", timeout=self.timeout, **turn.fields())
        except RunaError as error:
            self._hung = (isinstance(error, MemoryUnavailable) and self._client is not None
                          and self._client.running())  # alive, yet no answer in time
            self._went_off(error)
            return None
        if self._off is not None:
            self._off = None
            self.notice("memory is on again: alethia records this conversation")
        return str(record_id.get(proto.ID) or "") or None

    def _connected(self) -> MemoryClient:
        if self._client is None:
            self._client = self._exits.enter_context(self.open_client())
        return self._client

    def _went_off(self, error: RunaError) -> None:
        said = (HUNG_NOTICE if self._hung
                else OFF_NOTICE if isinstance(error, ServiceUnavailable | stackbus.BusNotRunning)
                else f"memory is off: this turn was not recorded ({error})")
        if self._off != said:
            self.notice(said)
        self._off = said

    def close(self) -> None:
        self._exits.close()
        self._client = None


def recorder_for(config: Config, registry: Registry, paths: Paths, stack: str,
                 client_name: str, notice: Callable[[str], None]) -> TurnRecorder:
    """The recorder of a chat or ``runa ask`` on ``stack``: off, and silent, when the person
    said so (``[memory] record = false``) or when this installation runs no alethia (its
    component disabled or not registered: nothing was meant to be recorded)."""
    served = any(c.name == proto.SERVICE for c in registry.enabled)
    return TurnRecorder(lambda: connect(config, paths, stack, client_name), notice,
                        enabled=bool(config["memory.record"]) and served)
