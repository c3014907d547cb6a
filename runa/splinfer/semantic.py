"""splinfer's side of tier 2: asking whisper, and what its answers (or its silence) do.

Before the first token the prompt is judged by whisper (``judge``), waiting at most
``splinfer.whisper_timeout_ms``: its hits become interventions of the answer's set
(``runa.policy.tier2.interventions``) merged with tier 1's verdict, so a block generates
nothing and a whisper adds its note. While the answer streams, every
``splinfer.whisper_window_tokens`` tokens its latest text is sent to whisper without waiting
(``SemanticGate``); an answer arriving later with a block halts the stream with the set's
refusal, a whisper keeps its note for the next turn. When the answer ends, every window
still pending is waited for (each at most the timeout). Under a set with ``delay`` cells the
stream waits for each window's judgement instead.

When whisper cannot answer (not running, no heartbeat, died, too slow, an error) the set's
fail rule applies (``runa.policy.tier2.unavailable``: closed blocks, open flags) and the
answer says so (a notice). When the registry disables whisper, tier 2 is off: nothing is
asked and no fail rule applies (``WhisperLink.off``). docs/policy.md, "Tier 2".
"""

from __future__ import annotations

import logging
import math
import os
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from runa.policy import Action, GateStep, Intervention, PolicySet, StreamGate, tier2
from runa.policy.tier2 import Judgement
from runa.policy.tiers import PromptCheck, notice_of, pooled, unavailable
from runa.protocol import whisper as protocol
from runa.protocol.heartbeat import health_key
from runa.splinter import Bus, Envelope
from runa.splinter import envelope as env_mod
from runa.splinter.errors import BadSchema, SplinterError

SERVICE = protocol.SERVICE
#: How many characters of the answer one output window sends at most.
WINDOW_CHARS = 4096
#: Tokens of the text before a window sent with it, so a phrase cut by the window's edge is
#: whole in one judgement (at most half a window). Not the whole previous window: every token
#: embedded about once, not twice, is what keeps whisper off generation's cores.
OVERLAP_TOKENS = 16
#: Characters of a text judged within one ``splinfer.whisper_timeout_ms`` (about 250 tokens,
#: one window of the embedding model).
TIMEOUT_CHARS = 1000
#: Answers kept for requests not collected yet (late ones are dropped oldest first).
MAX_KEPT = 256
#: How often an answer whose windows wait checks that whisper still runs (seconds).
ALIVE_EVERY_S = 0.1


class WhisperDown(Exception):
    """whisper did not answer; the message says why (for the notice and the journal)."""


class WhisperLink:
    """splinfer's line to whisper: one reply queue, answers matched by request id.

    ``off``: why tier 2 is off (the registry disables whisper), or empty when it is on.
    """

    def __init__(self, bus: Bus, timeout_s: float, *, off: str = "",
                 clock: Callable[[], float] = time.monotonic,
                 keepalive: Callable[[], None] = lambda: None) -> None:
        self.bus = bus
        self.timeout_s = timeout_s
        self.off = off
        self.clock = clock
        self.keepalive = keepalive
        """Called while waiting, so a waiting daemon keeps its watchdog fed."""
        self.reply_name = f"splinfer.whisper.{os.getpid()}.{uuid.uuid4().hex[:8]}"
        self.replies = bus.queue(self.reply_name)
        self._answers: dict[str, Envelope] = {}
        self._asked: set[str] = set()  # requests whose answers are wanted
        self.asked = 0
        self.failures = 0
        self.last_problem = ""

    def close(self) -> None:
        self.replies.close()

    def alive_or_raise(self) -> None:
        """WhisperDown when whisper's queue has no live owner or whisper no heartbeat."""
        owner = self.bus.queue_owner(SERVICE)
        if owner is None:
            raise WhisperDown("whisper is not running")
        if not owner.alive:
            raise WhisperDown(f"whisper died (pid {owner.pid}) and is restarting")
        if self.bus.get(health_key(SERVICE)) is None:
            raise WhisperDown("whisper has no heartbeat")

    def send(self, text: str, side: str, wait_s: float | None = None) -> str:
        """Ask for a judgement without waiting; the request's id (WhisperDown if it cannot
        be asked). It expires unanswered after ``wait_s`` (default ``timeout_s``): nobody
        waits for it any longer."""
        self.alive_or_raise()
        ttl = max(1, int((wait_s or self.timeout_s) * 1000))
        query = env_mod.query("splinfer", SERVICE, protocol.judge(text, side),
                              reply_to=self.reply_name, ttl_ms=ttl)
        try:
            self.bus.sender(SERVICE).send(query)
        except SplinterError as error:
            raise WhisperDown(f"whisper cannot be asked: {error}") from None
        self.asked += 1
        if len(self._asked) >= MAX_KEPT:  # a backstop: every asker forgets what it leaves
            self._asked.discard(next(iter(self._asked)))
        self._asked.add(query.id)
        return query.id

    def _read(self, timeout: float) -> bool:
        """Read one reply (kept when its request is still wanted); whether one came."""
        try:
            envelope = self.replies.recv(timeout)
        except BadSchema:
            return True
        if envelope is None:
            return False
        if envelope.id in self._asked:
            self._answers[envelope.id] = envelope
        return True

    def answer(self, request_id: str) -> Judgement | None:
        """The judgement if it has arrived (None: not yet); WhisperDown for an error."""
        while request_id not in self._answers:
            if not self._read(0):
                return None
        self._asked.discard(request_id)
        return _judgement(self._answers.pop(request_id))

    def wait(self, request_id: str, deadline: float) -> Judgement:
        """The judgement, waiting until ``deadline`` (this clock); WhisperDown if none."""
        while True:
            found = self.answer(request_id)
            if found is not None:
                return found
            left = deadline - self.clock()
            if left <= 0:
                raise WhisperDown("whisper did not answer in time")
            self._read(min(left, 0.05))
            self.keepalive()
            if request_id not in self._answers:
                self.alive_or_raise()

    def judge(self, text: str, side: str) -> Judgement:
        """Ask and wait at most ``timeout_s`` (WhisperDown saying why on failure). A text
        longer than one request carries goes in parts, judged together and pooled."""
        requests: list[str] = []
        try:
            wait_s = self.wait_for(text)
            deadline = self.clock() + wait_s
            for part in protocol.parts(text):
                requests.append(self.send(part, side, wait_s))
            return pooled([self.wait(request, deadline) for request in requests])
        except WhisperDown as error:
            for request in requests:
                self.forget(request)
            self.failures += 1
            self.last_problem = str(error)
            raise

    def wait_for(self, text: str) -> float:
        """How long a judgement of ``text`` is waited for: ``timeout_s`` for every
        ``TIMEOUT_CHARS`` characters begun (a long prompt is many windows)."""
        return self.timeout_s * max(1, math.ceil(len(text) / TIMEOUT_CHARS))

    def forget(self, request_id: str) -> None:
        """Nobody waits for this request any more: its answer, now or later, is dropped."""
        self._asked.discard(request_id)
        self._answers.pop(request_id, None)

    def describe(self) -> dict[str, Any]:
        if self.off:
            return {"tier2": "off", "why": self.off}
        out: dict[str, Any] = {"tier2": "on", "asked": self.asked, "failures": self.failures,
                               "timeout_ms": round(self.timeout_s * 1000)}
        if self.last_problem:
            out["last_problem"] = self.last_problem
        return out


def _judgement(envelope: Envelope) -> Judgement:
    if envelope.type == "error":
        raise WhisperDown(f"whisper failed: {envelope.payload.get('message', 'an error')}")
    try:
        return Judgement.from_dict(envelope.payload)
    except (AttributeError, KeyError, TypeError, ValueError) as error:
        raise WhisperDown(f"whisper's answer is unreadable: {error}") from None


# -- the prompt ------------------------------------------------------------------------------

def check_prompt(link: WhisperLink, text: str, policy: PolicySet, conversation: str = "",
                 side: str = "prompt") -> PromptCheck:
    """Ask whisper about a whole text (a prompt); the fail rule's intervention when it
    cannot answer."""
    try:
        judgement = link.judge(text, side)
    except WhisperDown as error:
        return unavailable(policy, str(error), conversation, side)
    found = tier2.interventions(judgement, policy, side, conversation=conversation)
    return PromptCheck(tuple(found), judgement)



# -- the answer ---------------------------------------------------------------------------------

class SemanticGate:
    """Tier 1's gate of one answer with tier 2 watching its windows (a StreamGate).

    Every ``window`` tokens the text since the last window (with the window before it, so a
    sentence cut by the edge is read whole) goes to whisper; its answer is looked at on each
    later token. A block then withdraws what tier 1 still holds and ends the answer with the
    set's refusal; a whisper's note is kept for the next turn. ``wait``: every window is
    waited for (a set with ``delay`` cells). whisper failing applies the fail rule once.
    """

    def __init__(self, inner: StreamGate, link: WhisperLink, policy: PolicySet,
                 refusal: Callable[[], Sequence[int]], *, window: int, wait: bool = False,
                 conversation: str = "", cancelled: Callable[[], bool] = lambda: False,
                 logger: logging.Logger | None = None) -> None:
        self.inner = inner
        self.link = link
        self.policy = policy
        self.refusal = refusal
        self.window = window
        self.wait = wait
        self.conversation = conversation
        self.cancelled = cancelled
        self.logger = logger
        self.own: list[Intervention] = []
        self.notes: list[str] = []
        self.notice = ""
        """Why tier 2 did not watch the whole answer (the fail rule applied), else empty."""
        self._pieces: list[bytes] = []
        self._judged = 0  # tokens already sent in a window
        self._pending: list[tuple[str, int, float]] = []  # (request id, token index, sent)
        self._held = 0
        self._block: Intervention | None = None
        self._down = False
        self._alive_checked = -math.inf

    @property
    def interventions(self) -> Sequence[Intervention]:
        return [*self.inner.interventions, *self.own]

    @property
    def whispers(self) -> Sequence[str]:
        return list(dict.fromkeys([*self.inner.whispers, *self.notes]))

    def feed(self, token: int, piece: bytes) -> GateStep:
        self._pieces.append(piece)
        self._collect()
        if self._block is None and not self._down and \
                len(self._pieces) - self._judged >= self.window:
            self._ask(final=False)
        if self._block is not None:
            return self._halt(fed=1)
        step = self.inner.feed(token, piece)
        self._track(step, fed=1)
        return step

    def finish(self) -> GateStep:
        if self.cancelled():
            self._collect()  # the person stopped it: what came counts, nothing is waited for
        else:
            if self._block is None and not self._down and len(self._pieces) > self._judged:
                self._ask(final=True)  # the tail
            self._settle()
        self._forget_pending()
        if self._block is not None:
            return self._halt(fed=0)
        step = self.inner.finish()
        self._track(step, fed=0)
        return step

    def _track(self, step: GateStep, fed: int) -> None:
        """How many tokens tier 1 holds after ``step`` (runa.policy.stream's rules)."""
        held = self._held + fed - min(step.take_back, self._held + fed)
        self._held = 0 if step.take_back or step.insert or step.stop else held - step.release

    def _halt(self, fed: int) -> GateStep:
        block = self._block
        assert block is not None
        self._forget_pending()
        take_back = self._held + fed
        self._held = 0
        return GateStep(take_back=take_back, insert=tuple(self.refusal()), stop=True,
                        reason=f"policy {self.policy.name}: {block.category or block.rule}")

    def _ask(self, *, final: bool) -> None:
        start = max(0, self._judged - min(OVERLAP_TOKENS, self.window // 2))
        self._judged = len(self._pieces)
        text = b"".join(self._pieces[start:]).decode("utf-8", "replace")[-WINDOW_CHARS:]
        index = start
        try:
            request = self.link.send(text, "output")
            if self.wait and not final:
                judgement = self.link.wait(request, self.link.clock() + self.link.timeout_s)
                self._take(judgement, index)
            else:
                self._pending.append((request, index, self.link.clock()))
        except WhisperDown as error:
            self._fail(str(error))

    def _settle(self) -> None:
        """The answer ends: every window still pending is waited for (each until its
        timeout), so a late block or whisper still applies, and whisper not answering
        applies the fail rule."""
        for request, index, sent in list(self._pending):
            if self._block is not None or self._down:
                break  # decided: the rest cannot change the answer
            try:
                self._take(self.link.wait(request, sent + self.link.timeout_s), index)
            except WhisperDown as error:
                self._fail(str(error))

    def _collect(self) -> None:
        """Take the judgements that have arrived; a window unanswered too long, or whisper
        found dead while windows wait, is a failure."""
        pending = len(self._pending)
        still = []
        for request, index, sent in self._pending:
            try:
                judgement = self.link.answer(request)
            except WhisperDown as error:
                self._fail(str(error))  # forgets every pending window
                return
            if judgement is not None:
                self._take(judgement, index)
            else:
                still.append((request, index, sent))
        self._pending = still
        if not still or self._down:
            return
        now = self.link.clock()
        if now - still[0][2] > self.link.timeout_s:
            self._fail(f"whisper did not answer within {self.link.timeout_s * 1000:.0f} ms")
        elif len(still) == pending and now - self._alive_checked >= ALIVE_EVERY_S:
            self._alive_checked = now  # nothing came: whisper may have died meanwhile
            try:
                self.link.alive_or_raise()
            except WhisperDown as error:
                self._fail(str(error))

    def _forget_pending(self) -> None:
        for request, _, _ in self._pending:
            self.link.forget(request)
        self._pending = []

    def _take(self, judgement: Judgement, index: int) -> None:
        for item in tier2.interventions(judgement, self.policy, "output", token_index=index,
                                        conversation=self.conversation):
            self.own.append(item)
            if item.action == Action.WHISPER.value:
                note = self.policy.whisper(item.category)
                if note and note not in self.notes:
                    self.notes.append(note)
            if item.action == Action.BLOCK.value and self._block is None:
                self._block = item

    def _fail(self, why: str) -> None:
        if self._down:
            return
        self._down = True
        self.link.failures += 1
        self.link.last_problem = why
        self._forget_pending()
        failed = tier2.unavailable(self.policy, "output", why, self.conversation)
        failed = replace(failed, token_index=len(self._pieces))
        self.own.append(failed)
        self.notice = notice_of(failed)
        if failed.action == Action.BLOCK.value:
            self._block = failed
