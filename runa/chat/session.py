"""One person's conversation with splinfer, spoken in its bus protocol (docs/protocol.md).

The session knows which conversation, persona and policy set it is in and which sampling
settings it sends; it talks only through a client object (``ServiceClient`` in use, a fake in the
tests), so nothing here starts processes or touches the terminal.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol

from runa.chat.params import SessionParams
from runa.chat.upload import in_pieces
from runa.client import ServiceFault
from runa.errors import RunaError, UsageError
from runa.memory_client import Turn
from runa.policy import PolicyLibrary
from runa.protocol.answer import GroundedAnswer, Grounding, chat_turn
from runa.protocol.splinfer import chat, request
from runa.splinter import Envelope, Fault


class Retriever(Protocol):
    """What ``/rag`` needs of tieto (runa.chat.rag.Retrieval)."""

    def topics(self) -> list[str]: ...

    def ground(self, question: str, topic: str) -> Grounding: ...


class ChatClient(Protocol):
    """What the session needs of ``runa.client.ServiceClient``."""

    def request(self, payload: dict[str, Any], *, idle_timeout: float = ...,
                before_send: Callable[[dict[str, Any]], dict[str, Any]] | None = ...
                ) -> Iterator[Envelope]: ...

    def call(self, payload: dict[str, Any], *, idle_timeout: float = ...) -> dict[str, Any]: ...

    def cancel(self, wait: float = ...) -> Envelope | None: ...


class NotSupported(RunaError):
    """The running splinfer predates an operation (conversations, personas)."""

    exit_code = 69


class UnknownPersona(RunaError):
    """A persona name splinfer does not have; the message lists the ones it has."""

    exit_code = 66  # EX_NOINPUT, as every name of something that does not exist

    def __init__(self, name: str, known: list[str]) -> None:
        self.name = name
        self.known = known
        super().__init__(f"no persona {name!r}; known: {', '.join(known) or '(none)'}")


class UnknownConversation(RunaError):
    """A conversation id splinfer has never seen (or has forgotten)."""

    exit_code = 66  # EX_NOINPUT


def new_conversation_id() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True)
class Persona:
    name: str
    description: str = ""
    source: str = ""
    params: tuple[tuple[str, object], ...] = ()
    """The sampling settings the persona sets (splinfer 0.x before this sends none)."""


@dataclass(frozen=True)
class Personas:
    """splinfer's answer to ``personas``."""

    personas: tuple[Persona, ...]
    default: str | None

    @property
    def names(self) -> list[str]:
        return [persona.name for persona in self.personas]

    def get(self, name: str | None) -> Persona | None:
        return next((p for p in self.personas if p.name == name), None)


@dataclass(frozen=True)
class PolicyChoice:
    """One policy set as ``/policy`` lists it."""

    name: str
    description: str
    locked: str | None
    """Why the administrator's lock forbids it, or None."""


class Start(Enum):
    """How ``runa chat`` came to its conversation id."""

    FRESH = "fresh"  # a new id made up here
    RESUME = "resume"  # the remembered id: gone from splinfer means start afresh under it
    EXPLICIT = "explicit"  # --conversation ID: it must exist
    EXPLICIT_NEW = "explicit_new"  # --new --conversation ID: it must not exist yet


class ChatSession:
    """The state of one REPL: conversation id, chosen persona and policy, sampling settings."""

    def __init__(self, client: ChatClient, conversation: str, *, persona: str | None = None,
                 params: SessionParams | None = None, timeout: float = 60.0,
                 new_id: Callable[[], str] = new_conversation_id,
                 remember: Callable[[str], None] = lambda _conversation: None,
                 retriever: Retriever | None = None, policy: str | None = None,
                 policies: PolicyLibrary | None = None,
                 record: Callable[[Turn], object] = lambda _turn: None) -> None:
        self.client = client
        self.conversation = conversation
        self.chosen_persona = persona
        """Sent with every question once chosen (--persona, /persona); None: splinfer's."""
        self.persona = persona
        """The conversation's persona as last heard from splinfer (for the prompt)."""
        self.policies = policies
        """The stack's policy sets behind the lock: ``/policy`` lists and checks with it."""
        self.chosen_policy = policy
        """Sent with every question once chosen (--policy, /policy, checked against the
        lock first); None: the set splinfer keeps for the conversation."""
        self.policy = policy
        """The conversation's policy set as last heard from splinfer (None: not yet)."""
        self.params = params or SessionParams()
        self.timeout = timeout
        self.messages = 0
        """Messages in this conversation that splinfer keeps (decides the re-read notice)."""
        self.keeps_conversations = True
        self.history_persona: str | None = None
        """The persona splinfer named in its last ``history`` answer."""
        self.last: dict[str, Any] = {}
        self._new_id = new_id
        self._remember = remember
        self.retriever = retriever
        self.rag_topic: str | None = None
        """With /rag on: the topic every question takes its sources from."""
        self.grounding: Grounding | None = None
        """The sources of the last answer (None without /rag)."""
        self.max_request_bytes: int | None = None
        """The bus's envelope size: a longer message is sent in pieces (``chat_part``)."""
        self.on_reading: Callable[[int], None] | None = None
        """Told the prompt tokens splinfer evaluates first, when it announces a long one."""
        self.record = record
        """Given each answered turn (``runa.memory_client.TurnRecorder.record``: alethia)."""
        self._asked = ""
        self._answered: list[str] = []

    # -- starting --------------------------------------------------------------------------

    def start(self, how: Start) -> list[str]:
        """Check the conversation and the persona with splinfer; notices for the person."""
        if how is not Start.FRESH:  # a made-up id is new: asking would only log a refusal
            self._look_up(how)
        notices = self._check_persona_at_start()
        self._remember(self.conversation)
        if not self.keeps_conversations:
            notices.append("this splinfer keeps no conversations yet: each question is "
                           "answered on its own")
        elif self.messages:
            notices.append(f"resuming conversation {self.conversation} ({self.messages} "
                           "messages; /history shows them, /new starts another)")
        else:
            notices.append(f"new conversation {self.conversation}")
        return notices

    def _look_up(self, how: Start) -> None:
        """Whether splinfer knows the conversation, as ``how`` requires; its persona if so."""
        try:
            known = self.history()
        except UnknownConversation:
            if how is Start.EXPLICIT:
                raise UnknownConversation(
                    f"splinfer has no conversation {self.conversation!r}; start one under "
                    f"that id with: runa chat --new --conversation {self.conversation}"
                ) from None
            return  # remembered but gone (forgotten, or another machine's): start afresh
        except NotSupported:
            self.keeps_conversations = False
            return
        if how is Start.EXPLICIT_NEW:
            raise UsageError(f"conversation {self.conversation!r} exists already; "
                             f"resume it with: runa chat --conversation {self.conversation}")
        self.messages = len(known)
        if self.persona is None:
            self.persona = self.history_persona

    def _check_persona_at_start(self) -> list[str]:
        try:
            personas = self.personas()
        except NotSupported:  # personas came with conversations (issue 6): neither is there
            self.keeps_conversations = False
            return (["this splinfer has no personas yet; --persona is ignored"]
                    if self.chosen_persona else [])
        if self.chosen_persona is not None:
            if self.chosen_persona not in personas.names:
                raise UnknownPersona(self.chosen_persona, personas.names)
            if self.messages and self.history_persona not in (None, self.chosen_persona):
                return [self._reread_notice()]
        if self.persona is None:
            self.persona = personas.default
        return []

    # -- operations --------------------------------------------------------------------------

    def _call(self, payload: dict[str, Any]) -> dict[str, Any]:
        try:
            return self.client.call(payload, idle_timeout=self.timeout)
        except ServiceFault as fault:
            if fault.code == Fault.BAD_SCHEMA and "unknown op" in str(fault):
                raise NotSupported(f"this splinfer does not answer {payload['op']!r} yet "
                                   "(it predates conversations and personas)") from None
            raise

    def call(self, payload: dict[str, Any]) -> dict[str, Any]:
        """One query to splinfer, its answer (NotSupported if it predates ``op``)."""
        return self._call(payload)

    def personas(self) -> Personas:
        answer = self._call(request("personas"))
        return Personas(
            tuple(Persona(str(p.get("name", "")), str(p.get("description") or ""),
                          str(p.get("source") or ""),
                          tuple(dict(p.get("params") or {}).items()))
                  for p in answer.get("personas", [])),
            answer.get("default"))

    def history(self) -> list[dict[str, str]]:
        """The conversation's messages as splinfer keeps them (system prompt left out)."""
        try:
            answer = self._call(request("history", conversation=self.conversation))
        except ServiceFault as fault:
            if fault.code == Fault.BAD_SCHEMA:  # the only thing wrong with a valid id
                raise UnknownConversation(
                    f"splinfer has no conversation {self.conversation!r} yet") from None
            raise
        self.history_persona = answer.get("persona")
        self.policy = self.chosen_policy or answer.get("policy") or self.policy
        return [m for m in answer.get("messages", []) if m.get("role") != "system"]

    def switch_persona(self, name: str) -> str:
        """Use persona ``name`` from the next question on; a notice for the person."""
        personas = self.personas()
        if name not in personas.names:
            raise UnknownPersona(name, personas.names)
        was = self.persona
        self.chosen_persona = self.persona = name
        if name == was:
            return f"persona {name} (unchanged)"
        if self.messages:
            return self._reread_notice()
        return f"persona {name}"

    def policy_sets(self) -> list[PolicyChoice]:
        """Every policy set, with why the lock forbids it when it does."""
        policies = self._policies()
        return [PolicyChoice(name, policies.get(name).description, policies.below_lock(name))
                for name in policies.names()]

    def switch_policy(self, name: str) -> str:
        """Use policy set ``name`` from the next question on; a notice for the person.

        Checked here at once: a set below the lock (PolicyLocked, with the reason) or an
        unknown one (UnknownPolicyError) changes nothing.
        """
        self._policies().resolve(name, "/policy in chat")
        was = self.policy
        self.chosen_policy = self.policy = name
        if name == was:
            return f"policy {name} (unchanged)"
        return f"policy {name}: this conversation runs under it from your next message on"

    def _policies(self) -> PolicyLibrary:
        if self.policies is None:
            raise NotSupported("policy sets are not available in this chat")
        return self.policies

    def _reread_notice(self) -> str:
        return (f"persona {self.chosen_persona}: its system prompt replaces the old one, so "
                "this conversation's history is re-read once, with your next message")

    def new(self) -> str:
        """Start a new conversation (splinfer keeps the old one); its id.

        It keeps the persona the prompt shows, not splinfer's default.
        """
        self.conversation = self._new_id()
        self.messages = 0
        if self.persona is not None:
            self.chosen_persona = self.persona
        self._remember(self.conversation)
        return self.conversation

    def resume(self, conversation: str) -> str:
        """Go on with another kept conversation, in its own persona and policy; a notice."""
        was = (self.conversation, self.messages, self.persona, self.chosen_persona,
               self.policy, self.chosen_policy)
        self.conversation, self.messages = conversation, 0
        self.persona = self.chosen_persona = self.policy = self.chosen_policy = None
        try:
            self._look_up(Start.EXPLICIT)
        except RunaError:
            (self.conversation, self.messages, self.persona, self.chosen_persona,
             self.policy, self.chosen_policy) = was
            raise
        self._remember(conversation)
        return (f"resuming conversation {conversation} ({self.messages} messages; "
                "/history shows them)")

    def payload(self, text: str) -> dict[str, Any]:
        return chat(text, conversation=self.conversation, params=self.params.payload(),
                    persona=self.chosen_persona or None, policy=self.chosen_policy or None)

    def rag(self, topic: str | None) -> str:
        """Take sources from ``topic`` from the next question on (None: stop); a notice."""
        if topic is None:
            self.rag_topic = self.grounding = None
            return "retrieval off: questions go to the model alone"
        if self.retriever is None:
            raise NotSupported("retrieval is not available in this chat")
        known = self.retriever.topics()
        if topic not in known:
            raise UsageError(f"no topic {topic!r} (known topics: {', '.join(known) or 'none'}"
                             f"); create it with 'runa ingest PATH... --topic {topic}'")
        self.rag_topic = topic
        return (f"retrieval on: each question goes with the best passages of topic {topic}, "
                "and the answer lists its sources")

    def ask(self, text: str) -> Iterator[str]:
        """Stream the answer to ``text`` piece by piece; its counters land in ``last``.

        With /rag on, the question goes with its sources and only citations of them are
        kept (an answer citing none is marked, or withheld: runa.protocol.answer.GroundedAnswer);
        with none relevant, the answer says so without asking the model.
        """
        self.last = {}
        self.grounding = None
        self._asked, self._answered = text, []
        citations: GroundedAnswer | None = None
        if self.rag_topic is not None and self.retriever is not None:
            self.grounding = self.retriever.ground(text, self.rag_topic)
            if not self.grounding.known:
                self.last = {"finish_reason": "no_sources"}
                unknown = self.grounding.unknown_text()
                self._answered.append(unknown)
                yield unknown
                self._turn_done()
                return
            citations = GroundedAnswer(self.grounding)
            text = chat_turn(self.grounding)
        payload = self.payload(text)
        upload = in_pieces(self._call, payload, self.max_request_bytes)
        try:
            yield from self._stream(payload, upload, citations)
        except ServiceFault as fault:
            if fault.code == Fault.NOT_AUTHORIZED and self.chosen_policy is not None:
                # The lock changed since the check: the conversation keeps its set.
                self.chosen_policy = self.policy = None
            raise
        self._turn_done()

    def _turn_done(self) -> None:
        """Hand the turn just answered (what the person typed, not the sources sent with
        it under /rag) to ``record``."""
        self.record(Turn.answered(self.conversation, self._asked, "".join(self._answered),
                                  self.last, persona=self.persona))

    def _stream(self, payload: dict[str, Any],
                upload: Callable[[dict[str, Any]], dict[str, Any]] | None,
                citations: GroundedAnswer | None) -> Iterator[str]:
        for envelope in self.client.request(payload, idle_timeout=self.timeout,
                                            before_send=upload):
            piece = envelope.payload.get("text", "")
            reading = envelope.payload.get("reading")
            if isinstance(reading, int) and self.on_reading is not None:
                self.on_reading(reading)
            if citations is not None:
                piece = citations.feed(piece) + (citations.finish() if envelope.eof else "")
            if envelope.eof:
                self.last = dict(envelope.payload)
                self.persona = self.last.get("persona") or self.persona
                self.policy = self.last.get("policy") or self.policy
                if self.keeps_conversations:
                    self.messages += 2
                if citations is not None:
                    self.last.update(citations.outcome())
            if piece:
                self._answered.append(piece)
                yield piece

    def cancel(self) -> dict[str, Any] | None:
        """Tell splinfer to stop the running answer; its final payload if it came in time."""
        envelope = self.client.cancel()
        if envelope is not None and envelope.type != "error":
            self.last = dict(envelope.payload)
            if self.keeps_conversations:
                self.messages += 2  # the question is in the history either way
            self._turn_done()  # what was answered before the stop
            return self.last
        return None
