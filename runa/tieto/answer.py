"""Answers from retrieved chunks: the sieve, and the completion asked of splinfer.

The shapes (the grounding, the numbered-sources prompt, the citation filter) are the
wire contract's (``runa.protocol.answer``); here tieto keeps the hits at or above the
sieve and asks splinfer, through a ``ChatStream`` (``runa.client.ServiceClient`` in use),
so this module runs the same in the daemon, in ``runa recall --complete`` without the
daemon, and in the tests.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Protocol

from runa.protocol.answer import GroundedAnswer, Grounding, Hit, prompt
from runa.protocol.splinfer import chat as chat_request
from runa.splinter import Envelope


class ChatStream(Protocol):
    """What a completion needs of splinfer's client (``runa.client.ServiceClient``)."""

    def request(self, payload: dict[str, Any], *, idle_timeout: float = ...
                ) -> Iterator[Envelope]: ...


def ground(question: str, topic: str, hits: Sequence[Hit], sieve: float,
           uncited: str = "mark") -> Grounding:
    """Keep the hits at or above the sieve, best first; none means "I don't know"."""
    similarities = [h.similarity for h in hits if h.similarity is not None]
    best = max(similarities) if similarities else None
    kept = tuple(h for h in hits if h.similarity is not None and h.similarity >= sieve)
    return Grounding(question, topic, kept, best, sieve, uncited)


def complete(grounding: Grounding, splinfer: ChatStream, *, params: dict[str, Any] | None = None,
             idle_timeout: float = 60.0) -> Iterator[dict[str, Any]]:
    """The answer as payloads: ``{"sources", "known", ...}`` first, then ``{"text": piece}``,
    and last a payload with ``"eof": True``, the citations, whether the answer is grounded
    (cites one of its sources) or withheld (``uncited = "refuse"``) and splinfer's counters.

    With nothing relevant the model is not asked: the one text piece says so.
    """
    yield {"sources": grounding.describe_sources(), "known": grounding.known,
           "best_similarity": grounding.best_similarity, "sieve": grounding.sieve,
           "uncited": grounding.uncited}
    if not grounding.known:
        yield {"eof": True, "text": grounding.unknown_text(), "citations": [], "known": False,
               "grounded": False, "withheld": False, "finish_reason": "no_sources"}
        return
    system, user = prompt(grounding)
    answer = GroundedAnswer(grounding)
    payload = chat_request(user, system=system, params=params or {})
    final: dict[str, Any] = {}
    text = ""
    for envelope in splinfer.request(payload, idle_timeout=idle_timeout):
        text = answer.feed(envelope.payload.get("text", ""))
        if envelope.eof:
            final = {k: v for k, v in envelope.payload.items() if k != "text"}
            text += answer.finish()
            break
        if text:
            yield {"text": text}
    yield {**final, "eof": True, "text": text, **answer.outcome(), "known": True}
