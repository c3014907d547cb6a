"""A word tokenizer and an engine stand-in that drives a gate as splinfer's engine does."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from runa.policy import GateStep, Matrix, PolicySet, StreamGate, Tier1, parse_matrix, parse_set
from runa.policy.files import PACKAGED


class WordTokenizer:
    """Pieces are given explicitly (to split a phrase where a real model would) or made up
    from words, each with its leading space; ids are assigned as pieces are first seen."""

    fingerprint = "test:words"

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}
        self.texts: dict[int, str] = {}

    def id_of(self, piece: str) -> int:
        if piece not in self.ids:
            self.ids[piece] = len(self.ids) + 10
            self.texts[self.ids[piece]] = piece
        return self.ids[piece]

    def tokenize(self, text: str) -> list[int]:
        return [self.id_of(p) for p in re.findall(r" ?\w+| ?[^\w ]| +", text)]

    def piece(self, token: int) -> bytes:
        return self.texts[token].encode()

    def text(self, tokens: Sequence[int]) -> str:
        return "".join(self.texts[t] for t in tokens)


@dataclass
class Stream:
    """What the person saw, what the model was fed, and each step, as the engine keeps them."""

    shown: list[int] = field(default_factory=list)
    model: list[int] = field(default_factory=list)
    held: list[int] = field(default_factory=list)
    steps: list[GateStep] = field(default_factory=list)
    stopped: bool = False
    #: After each piece fed: how many of the pieces were on screen.
    shown_after: list[int] = field(default_factory=list)

    def apply(self, step: GateStep) -> None:
        self.steps.append(step)
        for _ in range(step.take_back):
            self.held.pop()
            self.model.pop()
        for _ in range(step.release):
            self.shown.append(self.held.pop(0))
        self.shown.extend(step.insert)
        self.model.extend(step.insert)
        self.stopped = step.stop


def run(gate: StreamGate, tokenizer: WordTokenizer, pieces: Sequence[str]) -> Stream:
    """Feed ``pieces`` (token texts) through ``gate``; finish unless it stopped."""
    stream = Stream()
    for piece in pieces:
        token = tokenizer.id_of(piece)
        stream.held.append(token)
        stream.model.append(token)
        stream.apply(gate.feed(token, tokenizer.piece(token)))
        stream.shown_after.append(len(stream.shown))
        if stream.stopped:
            return stream
    stream.apply(gate.finish())
    return stream


def packaged_set(name: str) -> PolicySet:
    return parse_set(PACKAGED / "sets" / f"{name}.yaml")


def matrix_of(tmp_path: Path, text: str, name: str = "m.yaml") -> Matrix:
    path = tmp_path / name
    path.write_text(text)
    return Matrix(tuple(parse_matrix(path)))


def tier(tmp_path: Path, matrix_text: str, policy: str = "default",
         tokenizer: WordTokenizer | None = None) -> tuple[Tier1, WordTokenizer]:
    tokenizer = tokenizer or WordTokenizer()
    return Tier1(matrix_of(tmp_path, matrix_text), packaged_set(policy), tokenizer), tokenizer
