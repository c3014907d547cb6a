"""Cut a document into chunks that each fit the embedding model, counted in its own word-pieces.

all-MiniLM-L6-v2 was trained on at most 256 tokens, [CLS] and [SEP] included,
so a chunk holds at most 254 word-pieces; llama.cpp would otherwise cut the
input and drop the trailing [SEP] (notes/embedding-gguf-no-torch.md, pitfall 6).

The text is split only at whitespace — paragraphs, then sentences, then words —
because BERT's pre-tokenizer splits at whitespace too, so the word-piece count
of a span is the sum of the counts of its parts: each part is counted once by
the real tokenizer and the chunks are packed from those counts. Consecutive
chunks share up to ``overlap`` word-pieces of whole sentences (or words), so an
answer that straddles a boundary is still whole in one of them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

Counter = Callable[[str], int]
"""Word-pieces of a text without the special tokens (the embedding model's tokenizer)."""

_PARAGRAPH = re.compile(r"\n[ \t]*\n\s*")
_SENTENCE = re.compile(r"(?<=[.!?:;])\s+|\n\s*")
_WORD = re.compile(r"\s+")


@dataclass(frozen=True)
class Chunk:
    ordinal: int
    text: str
    start: int
    """Character offset of the chunk in the document text."""
    end: int
    n_tokens: int


@dataclass(frozen=True)
class _Unit:
    start: int
    end: int
    n_tokens: int


def _spans(text: str, start: int, end: int,
           separator: re.Pattern[str]) -> Iterator[tuple[int, int]]:
    """Non-blank pieces of ``text[start:end]`` between matches of ``separator``."""
    pos = start
    for match in separator.finditer(text, start, end):
        if match.start() > pos:
            yield pos, match.start()
        pos = match.end()
    if pos < end:
        yield pos, end


def _strip(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


class Chunker:
    """Splits texts into chunks of at most ``max_tokens`` word-pieces with ``overlap``."""

    def __init__(self, count: Counter, max_tokens: int = 254, overlap: int = 32) -> None:
        if max_tokens < 8:
            raise ValueError("max_tokens must be at least 8")
        if not 0 <= overlap < max_tokens // 2:
            raise ValueError("overlap must be at least 0 and under half of max_tokens")
        self.count = count
        self.max_tokens = max_tokens
        self.overlap = overlap

    def units(self, text: str) -> list[_Unit]:
        """The text as a sequence of spans, each within the limit, with their counts."""
        out: list[_Unit] = []
        for p_start, p_end in _spans(text, 0, len(text), _PARAGRAPH):
            for s_start, s_end in _spans(text, p_start, p_end, _SENTENCE):
                s_start, s_end = _strip(text, s_start, s_end)
                if s_start == s_end:
                    continue
                n = self.count(text[s_start:s_end])
                if n <= self.max_tokens:
                    out.append(_Unit(s_start, s_end, n))
                else:
                    out.extend(self._words(text, s_start, s_end))
        return out

    def _words(self, text: str, start: int, end: int) -> Iterator[_Unit]:
        for w_start, w_end in _spans(text, start, end, _WORD):
            n = self.count(text[w_start:w_end])
            if n <= self.max_tokens:
                yield _Unit(w_start, w_end, n)
            else:
                yield from self._characters(text, w_start, w_end)

    def _characters(self, text: str, start: int, end: int) -> Iterator[_Unit]:
        """A single 'word' longer than a chunk (a data blob): cut it by characters."""
        while start < end:
            low, high = start + 1, end
            while low < high:  # longest prefix within the limit
                mid = (low + high + 1) // 2
                if self.count(text[start:mid]) <= self.max_tokens:
                    low = mid
                else:
                    high = mid - 1
            yield _Unit(start, low, self.count(text[start:low]))
            start = low

    def split(self, text: str) -> list[Chunk]:
        """The chunks of ``text`` in order; empty for a blank text."""
        units = self.units(text)
        chunks: list[Chunk] = []
        i = 0
        while i < len(units):
            j, total = i, 0
            while j < len(units) and total + units[j].n_tokens <= self.max_tokens:
                total += units[j].n_tokens
                j += 1
            j, total = self._fit(text, units, i, j, total)
            start, end = units[i].start, units[j - 1].end
            chunks.append(Chunk(len(chunks), text[start:end], start, end, total))
            if j == len(units):
                break
            i = self._overlap_start(units, i, j)
        return chunks

    def _fit(self, text: str, units: list[_Unit], i: int, j: int, total: int) -> tuple[int, int]:
        """Counts add up across whitespace; pieces of one cut word are recounted together."""
        if all(units[k].end < units[k + 1].start for k in range(i, j - 1)):
            return j, total
        while True:
            total = self.count(text[units[i].start : units[j - 1].end])
            if total <= self.max_tokens or j - 1 == i:
                return j, total
            j -= 1

    def _overlap_start(self, units: list[_Unit], i: int, j: int) -> int:
        """Where the next chunk starts: the last units of this one that fit the overlap."""
        k, carried = j, 0
        while k - 1 > i and carried + units[k - 1].n_tokens <= self.overlap:
            carried += units[k - 1].n_tokens
            k -= 1
        return k
