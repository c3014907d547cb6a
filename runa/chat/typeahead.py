"""What is typed while an answer streams: not echoed into the answer, not sent blind.

During an answer the terminal is in cooked mode, so keys would be echoed between the
answer's words, and a line ended with Enter would be read by the next prompt and sent
before the person saw it. ``TypeAhead.held`` turns echo and line editing off for the
answer (Ctrl-C still interrupts), then takes what was typed; the next prompt shows it as
text already typed, to edit or send.
"""

from __future__ import annotations

import os
import re
import select
import termios
from collections.abc import Iterator
from contextlib import contextmanager

#: Escape sequences a key can send (arrows, function keys): dropped, they edit nothing here.
_ESCAPES = re.compile(r"\x1b(?:\[[0-9;?]*[ -/]*[@-~]|O.|.)?", re.DOTALL)
_ERASE = ("\x7f", "\x08")
_KILL_LINE = "\x15"


def typed_text(raw: bytes) -> str:
    """The text ``raw`` keys leave, as the terminal's line editing would have made it."""
    text = _ESCAPES.sub("", raw.decode("utf-8", errors="ignore")).replace("\r", "\n")
    kept: list[str] = []
    for char in text:
        if char in _ERASE:
            if kept and kept[-1] != "\n":
                kept.pop()
        elif char == _KILL_LINE:
            while kept and kept[-1] != "\n":
                kept.pop()
        elif char in "\n\t" or char >= " ":
            kept.append(char)
    return "".join(kept).strip("\n")


class TypeAhead:
    """Holds the keys typed on terminal ``fd`` during an answer until the next prompt."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.kept = ""

    @contextmanager
    def held(self) -> Iterator[None]:
        try:
            saved = termios.tcgetattr(self.fd)
        except termios.error:
            yield  # not a terminal after all: nothing to hold
            return
        quiet = list(saved)
        quiet[3] &= ~(termios.ECHO | termios.ICANON)  # ISIG stays: Ctrl-C still stops
        quiet[3] |= termios.NOFLSH  # and does not throw away what was typed before it
        quiet[6] = list(saved[6])
        quiet[6][termios.VMIN], quiet[6][termios.VTIME] = 0, 0
        termios.tcsetattr(self.fd, termios.TCSANOW, quiet)
        try:
            yield
        finally:
            raw = self._drain()
            termios.tcsetattr(self.fd, termios.TCSANOW, saved)
            text = typed_text(raw)
            if text:
                self.kept = f"{self.kept}\n{text}" if self.kept else text

    def _drain(self) -> bytes:
        chunks = []
        while select.select([self.fd], [], [], 0)[0]:
            chunk = os.read(self.fd, 4096)
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)

    def take(self) -> str:
        """What was typed since the last prompt (and forget it)."""
        text, self.kept = self.kept, ""
        return text
