"""The saved model state of one conversation: a file format that knows when not to be trusted.

llama.cpp's sequence state (the KV cache rows of one sequence) is only
meaningful to the same model, the same llama.cpp state format and the same KV
layout (cache type, flash attention). Restoring it anywhere else fails at best
and silently produces garbage at worst, so every file says what it belongs to,
and the reader refuses a file that is truncated, damaged or foreign *before*
llama.cpp sees it. The caller then re-processes the kept history.

Layout (little-endian)::

    magic    8 bytes  b"RUNASEQ\\x01"
    length   u32      bytes of the JSON header
    header   JSON     {"format", "conversation", "model", "llama", "kv", "n_tokens",
                       "data_bytes", "checksum", "saved"}
    tokens   n_tokens x i32   the tokens the KV rows hold, position by position
    data     data_bytes       llama_state_seq_get_data output

``checksum`` is ``crc32:<8 hex>`` over tokens and data: it catches damage (a bad
disk, a truncated copy), not tampering; whoever can write the file can run code
as the stack's user anyway (DESIGN §6). CRC-32 reads 3.5 GB/s here, SHA-256 1.5
GB/s; the check sits on the path of every resumed conversation.
"""

from __future__ import annotations

import ctypes
import json
import mmap
import os
import struct
import sys
import time
import zlib
from array import array
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import llama_cpp

from runa.splinfer.errors import InferenceError

MAGIC = b"RUNASEQ\x01"
FORMAT = 1
_LENGTH = struct.Struct("<I")
MAX_HEADER = 64 * 1024


class StateError(InferenceError):
    """A saved state cannot be used; the conversation's history is re-processed instead."""

    kind = "unusable"

    def __init__(self, path: Path, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"{path}: {problem}")


class StateMissing(StateError):
    kind = "missing"


class StateCorrupt(StateError):
    kind = "corrupt"


class StateForeign(StateError):
    """Made by another model, llama.cpp or KV layout."""

    kind = "foreign"


@dataclass(frozen=True)
class StateIdentity:
    """What a saved state belongs to; all three must match to restore it."""

    model: str
    """sha256 of the GGUF file."""
    llama: str
    """llama-cpp-python, llama.cpp and sequence-state format versions."""
    kv: str
    """The KV layout: cache types and flash attention (which transposes V)."""


def llama_identity() -> str:
    version = llama_cpp.llama_version().decode("utf-8", errors="replace")
    return (f"llama-cpp-python {llama_cpp.__version__}; llama.cpp {version}; "
            f"seq-state {llama_cpp.LLAMA_STATE_SEQ_VERSION}")


def kv_identity(flash_attn: bool, cache_type_k: str = "f16", cache_type_v: str = "f16") -> str:
    return f"k={cache_type_k} v={cache_type_v} fa={'on' if flash_attn else 'off'}"


@dataclass(frozen=True)
class StateHeader:
    format: int
    conversation: str
    model: str
    llama: str
    kv: str
    n_tokens: int
    data_bytes: int
    checksum: str
    saved: float

    def meta(self, path: Path) -> dict[str, object]:
        """The bus metadata (``splinfer:conv:<id>``) for this state file."""
        return {"path": str(path), "n_tokens": self.n_tokens, "model": self.model,
                "llama_version": self.llama, "checksum": self.checksum}


@dataclass(frozen=True)
class SavedState:
    header: StateHeader
    tokens: list[int]
    data: ctypes.Array
    """The llama.cpp bytes, in a buffer llama_state_seq_set_data takes without a copy."""


def _token_bytes(tokens: Sequence[int]) -> bytes:
    packed = array("i", tokens)
    if sys.byteorder != "little":
        packed.byteswap()
    return packed.tobytes()


def _checksum(token_bytes: bytes, data: memoryview | ctypes.Array) -> str:
    return f"crc32:{zlib.crc32(data, zlib.crc32(token_bytes)):08x}"


def encode(conversation: str, identity: StateIdentity, tokens: Sequence[int],
           data: memoryview, *, now: float | None = None
           ) -> tuple[list[bytes | memoryview], int, StateHeader]:
    """(chunks to write, their total size, the header) for one state file."""
    token_bytes = _token_bytes(tokens)
    header = StateHeader(
        format=FORMAT, conversation=conversation, model=identity.model,
        llama=identity.llama, kv=identity.kv, n_tokens=len(tokens), data_bytes=data.nbytes,
        checksum=_checksum(token_bytes, data), saved=time.time() if now is None else now,
    )  # fmt: skip
    head = json.dumps(asdict(header), sort_keys=True).encode()
    chunks: list[bytes | memoryview] = [MAGIC, _LENGTH.pack(len(head)), head, token_bytes, data]
    return chunks, sum(memoryview(c).nbytes for c in chunks), header


def read_header(path: Path) -> tuple[StateHeader, int]:
    """The header and the offset of the token array; StateError if unreadable."""
    try:
        with open(path, "rb") as handle:
            start = handle.read(len(MAGIC) + _LENGTH.size)
            if len(start) < len(MAGIC) + _LENGTH.size or start[: len(MAGIC)] != MAGIC:
                raise StateCorrupt(path, "not a Runa state file (bad magic)")
            (length,) = _LENGTH.unpack_from(start, len(MAGIC))
            if length > MAX_HEADER:
                raise StateCorrupt(path, f"header of {length} bytes is too long")
            raw = handle.read(length)
    except FileNotFoundError:
        raise StateMissing(path, "no saved state") from None
    except OSError as error:
        raise StateCorrupt(path, f"cannot be read: {error.strerror}") from None
    try:
        header = StateHeader(**json.loads(raw))
    except (ValueError, TypeError) as error:
        raise StateCorrupt(path, f"damaged header: {error}") from None
    return header, len(start) + length


def read(path: Path, expect: StateIdentity, conversation: str) -> SavedState:
    """Read and verify a state file; StateMissing/StateCorrupt/StateForeign say why not.

    The file is mapped, not copied: the checksum and llama.cpp read the page cache
    directly (a 23 MB state: 8 ms instead of 30 ms to read and check it here).
    """
    header, offset = read_header(path)
    if header.format != FORMAT:
        raise StateForeign(path, f"state format {header.format}, this splinfer reads {FORMAT}")
    for name, mine in (("model", expect.model), ("llama", expect.llama), ("kv", expect.kv)):
        theirs = getattr(header, name)
        if theirs != mine:
            raise StateForeign(path, f"made with {name} {theirs!r}, not {mine!r}")
    if header.conversation != conversation:
        raise StateCorrupt(path, f"belongs to conversation {header.conversation!r}")
    n_token_bytes = 4 * header.n_tokens
    expected = offset + n_token_bytes + header.data_bytes
    try:
        with open(path, "rb") as handle:
            actual = os.fstat(handle.fileno()).st_size
            if actual != expected or header.n_tokens < 0 or header.data_bytes <= 0:
                raise StateCorrupt(path, f"{actual} bytes where the header promises {expected}")
            # Private and writable only so ctypes can point at it; nothing writes to it.
            mapped = mmap.mmap(handle.fileno(), 0, flags=mmap.MAP_PRIVATE,
                               prot=mmap.PROT_READ | mmap.PROT_WRITE)
    except OSError as error:
        raise StateCorrupt(path, f"cannot be read: {error.strerror}") from None
    token_bytes = mapped[offset : offset + n_token_bytes]
    data = (ctypes.c_uint8 * header.data_bytes).from_buffer(mapped, offset + n_token_bytes)
    if _checksum(token_bytes, data) != header.checksum:
        raise StateCorrupt(path, "checksum mismatch: the file is damaged")
    tokens = array("i")
    tokens.frombytes(token_bytes)
    if sys.byteorder != "little":
        tokens.byteswap()
    return SavedState(header, tokens.tolist(), data)
