"""The model's vocabulary through llama.cpp's C API: tokenize, pieces, end-of-turn.

Kept apart from the engine so prompt building can be tested against any
tokenizer with the same three methods.
"""

from __future__ import annotations

import ctypes
from collections.abc import Mapping
from types import MappingProxyType

import llama_cpp

#: Tokens whose text llama.cpp turns into the token only when asked to parse
#: special tokens. User-defined tokens are split out in both modes, so they are
#: not a way to smuggle template markers into user text.
_PARSE_ONLY_WHEN_SPECIAL = llama_cpp.LLAMA_TOKEN_ATTR_CONTROL | llama_cpp.LLAMA_TOKEN_ATTR_UNKNOWN


class Vocab:
    """A view of a loaded model's vocabulary; valid while the model is loaded."""

    def __init__(self, vocab: llama_cpp.llama_vocab_p) -> None:
        self._vocab = vocab
        self.n_tokens = int(llama_cpp.llama_vocab_n_tokens(vocab))
        self._piece_buf = ctypes.create_string_buffer(64)
        self._special = MappingProxyType(self._find_special())

    def _find_special(self) -> dict[str, int]:
        found: dict[str, int] = {}
        for token in range(self.n_tokens):
            if llama_cpp.llama_vocab_get_attr(self._vocab, token) & _PARSE_ONLY_WHEN_SPECIAL:
                raw = llama_cpp.llama_vocab_get_text(self._vocab, token)
                text = raw.decode("utf-8", errors="replace") if raw else ""
                if text:
                    found.setdefault(text, token)
        return found

    @property
    def special_tokens(self) -> Mapping[str, int]:
        """Text of every control/unknown token -> its id (template markers and the like)."""
        return self._special

    def tokenize(self, text: str, *, special: bool, add_special: bool = False) -> list[int]:
        """Token ids for ``text``; ``special`` parses control-token text into those tokens."""
        data = text.encode("utf-8")
        n_max = max(16, len(data) + 8)
        buf = (llama_cpp.llama_token * n_max)()
        n = llama_cpp.llama_tokenize(self._vocab, data, len(data), buf, n_max, add_special, special)
        if n < 0:
            n_max = -n
            buf = (llama_cpp.llama_token * n_max)()
            n = llama_cpp.llama_tokenize(
                self._vocab, data, len(data), buf, n_max, add_special, special
            )
            if n < 0:
                raise RuntimeError(f"llama_tokenize failed ({n}) for {len(data)} bytes")
        return list(buf[:n])

    def piece(self, token: int) -> bytes:
        """The bytes ``token`` stands for in output text (control tokens: empty)."""
        buf = self._piece_buf
        n = llama_cpp.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, False)
        if n < 0:
            self._piece_buf = buf = ctypes.create_string_buffer(-n)
            n = llama_cpp.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, False)
        return buf.raw[:n]

    def is_eog(self, token: int) -> bool:
        """True for end-of-generation tokens (EOS, end of turn …)."""
        return bool(llama_cpp.llama_vocab_is_eog(self._vocab, token))

    def token_text(self, token: int) -> str:
        raw = llama_cpp.llama_vocab_get_text(self._vocab, token)
        return raw.decode("utf-8", errors="replace") if raw else ""

    @property
    def bos(self) -> int:
        return int(llama_cpp.llama_vocab_bos(self._vocab))

    @property
    def eos(self) -> int:
        return int(llama_cpp.llama_vocab_eos(self._vocab))
