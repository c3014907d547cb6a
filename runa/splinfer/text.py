"""Bytes from tokens to text a person can read, one piece at a time.

A token's piece is bytes, and a multi-byte UTF-8 character is often split over
two or more tokens (byte-fallback tokens, byte-level BPE). Streaming must hold
the first bytes back until the character is complete, and never emit half a
character; bytes that can never become valid UTF-8 come out as U+FFFD.
"""

from __future__ import annotations

import codecs


class Utf8Stream:
    """Incremental decoder: feed piece bytes, get only complete characters back."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, data: bytes) -> str:
        return self._decoder.decode(data, final=False)

    def flush(self) -> str:
        """Whatever is still held back, with an unfinished character as U+FFFD."""
        return self._decoder.decode(b"", final=True)
