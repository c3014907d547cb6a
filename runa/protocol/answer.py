"""A grounded answer as every side sees it: the hits, the numbered sources, the citations.

A completion is grounded only if something relevant was found: when the best
hit's cosine similarity is under the sieve (``tieto.sieve``) no model is asked
and the answer says plainly that the topic does not say. Otherwise the chunks
that pass the sieve are numbered [1]..[n] in the prompt, the model is told to
cite them, and :class:`CitationFilter` keeps only citations of those numbers in
the streamed text: a model (the 135M default above all) may invent a [7] when
there are three sources, and a citation of a chunk that was never retrieved
must not reach the person. An answer that cites none of its sources is not
grounded (``grounded: false``): small models often answer from nothing, so it is
marked where the person reads it, or, with ``tieto.uncited = "refuse"``, held
back until complete and replaced by "I don't know" and the best passage
(:class:`GroundedAnswer`).

These shapes are part of the wire contract: tieto builds them (``runa.tieto.answer``),
the chat's ``/rag`` (which asks splinfer itself, with the sources in the user's turn)
and ``runa recall --complete`` read them, without importing tieto.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

INSTRUCTIONS = (
    "You answer questions using only the numbered sources you are given. After each fact, "
    "write the number of its source in brackets, like [1]. If the sources do not contain "
    "the answer, say that you do not know."
)
UNCITED_MARK = ("[not grounded: the answer cites none of its sources, so nothing ties it to "
                "them; check it against them]")
#: The longest bracket content still read as a citation: "[1, 2, 3]" and the like.
_MAX_CITATION = 16
_CITATION_BODY = re.compile(r"^\d+(\s*,\s*\d+)*$")


@dataclass(frozen=True)
class Hit:
    """One retrieved chunk and where it is (a ``recall`` response's ``hit``)."""

    text: str
    score: float
    """The ranking score of the mode: fused (hybrid), cosine (vector), -BM25 (fts)."""
    similarity: float | None
    """Cosine similarity to the question (None in fts mode without an embedder)."""
    source: str
    line: int
    chunk: int
    start: int
    end: int
    record: str
    meta: dict[str, Any]
    ranks: dict[str, int] = field(default_factory=dict)
    id: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Grounding:
    """What a question found: the sources the model may cite, or why there are none."""

    question: str
    topic: str
    sources: tuple[Hit, ...]
    best_similarity: float | None
    sieve: float
    uncited: str = "mark"
    """What an answer citing none of the sources gets: one of ``UNCITED``."""

    @property
    def known(self) -> bool:
        return bool(self.sources)

    def describe_sources(self) -> list[dict[str, Any]]:
        """The numbered sources as plain data (JSON, the bus)."""
        return [source_dict(n, hit) for n, hit in enumerate(self.sources, start=1)]

    def unknown_text(self) -> str:
        if self.best_similarity is None:
            why = "nothing in it matches"
        else:
            why = (f"the closest passage has similarity {self.best_similarity:.2f}, under "
                   f"the sieve {self.sieve:.2f}")
        return (f"I don't know: topic {self.topic} has nothing relevant to that question "
                f"({why}).")

    def uncited_text(self) -> str:
        """What replaces an answer citing none of the sources (``uncited = "refuse"``)."""
        best = self.sources[0]
        where = f"{best.source.rsplit('/', 1)[-1]}:{best.line}" if best.source else best.record
        similarity = "" if best.similarity is None else f", similarity {best.similarity:.2f}"
        return (f"I don't know: the answer the model wrote cites none of the sources of topic "
                f"{self.topic}, so it is not shown. The best passage, [1] {where}"
                f"{similarity}:\n{best.text.strip()}")


def source_dict(n: int, hit: Hit) -> dict[str, Any]:
    return {"n": n, "id": hit.id, "source": hit.source, "line": hit.line, "chunk": hit.chunk,
            "record": hit.record, "score": hit.score, "similarity": hit.similarity,
            "text": hit.text}


def sources_block(sources: Sequence[Hit]) -> str:
    parts = []
    for n, hit in enumerate(sources, start=1):
        where = hit.source.rsplit("/", 1)[-1] if hit.source else hit.record
        parts.append(f"[{n}] ({where})\n{hit.text.strip()}")
    return "\n\n".join(parts)


def prompt(grounding: Grounding) -> tuple[str, str]:
    """(system, user) for a one-shot completion."""
    user = f"Sources:\n\n{sources_block(grounding.sources)}\n\nQuestion: {grounding.question}"
    return INSTRUCTIONS, user


def chat_turn(grounding: Grounding) -> str:
    """The user turn of a chat with retrieval: instructions travel with the sources, so the
    conversation's own system prompt (and its saved model state) stays as it is."""
    return (f"{INSTRUCTIONS}\n\nSources:\n\n{sources_block(grounding.sources)}\n\n"
            f"Question: {grounding.question}")


class CitationFilter:
    """Streams text through, keeping only citations [n] with 1 <= n <= ``count``.

    A ``[`` opens a possible citation; it is held back until its ``]`` (or until it
    clearly is not one), so a piece boundary inside ``[12]`` changes nothing.
    ``[2, 9]`` with three sources becomes ``[2]``; ``[9]`` disappears. ``cited``
    lists the kept numbers in order of first appearance.
    """

    def __init__(self, count: int) -> None:
        self.count = count
        self.cited: list[int] = []
        self.dropped: list[int] = []
        self._held = ""

    def feed(self, text: str) -> str:
        out: list[str] = []
        for char in text:
            if self._held:
                self._held += char
                if char == "]":
                    out.append(self._resolve(self._held[1:-1]))
                    self._held = ""
                elif char == "[":
                    out.append(self._held[:-1])
                    self._held = "["
                elif len(self._held) > _MAX_CITATION or not re.fullmatch(r"[\d,\s]", char):
                    out.append(self._held)
                    self._held = ""
            elif char == "[":
                self._held = "["
            else:
                out.append(char)
        return "".join(out)

    def finish(self) -> str:
        rest, self._held = self._held, ""
        return rest

    def _resolve(self, body: str) -> str:
        if not _CITATION_BODY.match(body.strip()):
            return f"[{body}]"
        numbers = [int(n) for n in re.findall(r"\d+", body)]
        kept = [n for n in numbers if 1 <= n <= self.count]
        self.dropped += [n for n in numbers if n not in kept]
        for n in kept:
            if n not in self.cited:
                self.cited.append(n)
        return f"[{', '.join(map(str, kept))}]" if kept else ""


class GroundedAnswer:
    """The answer on its way to the person: citations filtered (:class:`CitationFilter`);
    with ``uncited = "refuse"`` held back until complete and shown only if it cites a
    source, else replaced by :meth:`Grounding.uncited_text`. ``feed``/``finish`` as the
    filter's; ``outcome()`` is what the final payload says about it."""

    def __init__(self, grounding: Grounding) -> None:
        self.grounding = grounding
        self.citations = CitationFilter(len(grounding.sources))
        self.hold = grounding.uncited == "refuse"
        self.withheld = False
        self._held: list[str] = []

    @property
    def cited(self) -> list[int]:
        return self.citations.cited

    @property
    def grounded(self) -> bool:
        return bool(self.citations.cited)

    def feed(self, text: str) -> str:
        shown = self.citations.feed(text)
        if not self.hold:
            return shown
        self._held.append(shown)
        return ""

    def finish(self) -> str:
        rest = self.citations.finish()
        if not self.hold:
            return rest
        text, self._held = "".join(self._held) + rest, []
        if self.grounded:
            return text
        self.withheld = True
        return self.grounding.uncited_text()

    def outcome(self) -> dict[str, Any]:
        return {"citations": self.cited, "dropped_citations": self.citations.dropped,
                "grounded": self.grounded, "withheld": self.withheld}


def sources_heading(final: dict[str, Any]) -> str:
    """What goes above the sources listed after an answer (``final``: its last payload)."""
    if final.get("grounded", bool(final.get("citations"))):  # (an older daemon: no field)
        return "Sources:"
    mark = "" if final.get("withheld") else UNCITED_MARK + "\n"
    return f"{mark}Sources given to the model:"
