"""Types of the C fast path built from ``_fastchan.c`` (type checkers do not read the .so)."""

from typing import Literal

from _typeshed import WriteableBuffer

class Channel:
    """One channel handle's lock, append and wait, over the segment's words."""

    def __init__(
        self, words: WriteableBuffer, state: int, state_word: int, tail_word: int,
        head_word: int, reserve_word: int, sent_word: int, received_word: int,
        recovered_word: int, flags: int, nflags: int, ring: int, cap: int, max_record: int,
        lock: int, wrap: int, queue: bool, position_word: int = ..., flag: int = ...,
        substate_word: int = ..., sub_state: int = ...,
    ) -> None: ...
    def append(self, data: bytes, /) -> bool:
        """False: nothing was written; run the Python path."""
    def receive(self, timeout: float | None, /) -> bytes | Literal[False] | None:
        """None on timeout; False when the Python path must look (and raise)."""
