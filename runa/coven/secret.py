"""A secret's name rules, its value's limits, and the one type a value travels in.

Names are shown in listings, audit events and errors, so they follow a conservative form
(``NAME_FORM``). Values are bytes, never ``str``: ``SecretBytes`` holds one in a bytearray
that is wiped when the holder is done with it, and whose ``repr``/``str`` show only its
length, so a value never reaches a log line, a traceback or an exception message.
"""

from __future__ import annotations

import contextlib
import re
from types import TracebackType
from typing import NoReturn

from runa.coven.errors import SecretNameError, SecretValueError
from runa.crypto import sodium

NAME_MAX = 64
NAME_FORM = ("a lowercase letter, then lowercase letters, digits, '.', '_' or '-' "
             f"(at most {NAME_MAX} characters), e.g. alethia.memory_key")
_NAME = re.compile(r"[a-z][a-z0-9._-]*")

VALUE_MAX = 64 * 1024  # bytes per secret: keys and tokens, not files
COUNT_MAX = 1024  # secrets per vault


def check_name(name: str) -> str:
    """``name`` if it is a usable secret name; a SecretNameError (exit 64) saying why not."""
    if not isinstance(name, str) or not name:
        raise SecretNameError(f"a secret needs a name: {NAME_FORM}")
    if len(name) > NAME_MAX:
        raise SecretNameError(f"secret name {name[:NAME_MAX]!r}… is {len(name)} characters; "
                              f"the limit is {NAME_MAX}")
    if not _NAME.fullmatch(name):
        raise SecretNameError(f"secret name {name!r} is not allowed: use {NAME_FORM}")
    return name


def check_value(name: str, value: bytes | bytearray | memoryview) -> int:
    """The size of ``value`` if it can be stored as ``name``; a SecretValueError if not."""
    if isinstance(value, str):
        raise SecretValueError(f"secret {name!r}: a value is bytes, not str")
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise SecretValueError(f"secret {name!r}: a value is bytes, not {type(value).__name__}")
    size = memoryview(value).nbytes
    if size == 0:
        raise SecretValueError(f"secret {name!r}: the value is empty")
    if size > VALUE_MAX:
        raise SecretValueError(f"secret {name!r}: the value is {size} bytes; the limit is "
                               f"{VALUE_MAX} bytes")
    return size


class SecretBytes:
    """A secret value in a buffer of its own: readable through ``view()``, wiped by ``wipe()``.

    Use it as a context manager to wipe on leaving; it is also wiped when collected. Two
    values compare in constant time. It cannot be pickled, and it has no ``__bytes__``: a
    copy the holder cannot wipe is made only on purpose (``bytes(value.view())``).
    """

    __slots__ = ("_buffer",)

    def __init__(self, data: bytes | bytearray | memoryview) -> None:
        self._buffer = sodium.lock_memory(bytearray(data))

    @classmethod
    def adopt(cls, buffer: bytearray) -> SecretBytes:
        """Take ``buffer`` over without copying it (the caller keeps no other reference)."""
        value = cls.__new__(cls)
        value._buffer = sodium.lock_memory(buffer)
        return value

    def view(self) -> memoryview:
        """The value, read-only, without a copy; valid until ``wipe``."""
        return memoryview(self._buffer).toreadonly()

    def wipe(self) -> None:
        """Zero the value and forget it; idempotent."""
        sodium.wipe(self._buffer)
        self._buffer = bytearray()

    @property
    def wiped(self) -> bool:
        return not self._buffer

    def __len__(self) -> int:
        return len(self._buffer)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, SecretBytes):
            return sodium.equal(self._buffer, other._buffer)
        if isinstance(other, (bytes, bytearray, memoryview)):
            return sodium.equal(self._buffer, other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable (wiped), so unhashable

    def __repr__(self) -> str:
        return f"<SecretBytes: {len(self._buffer)} bytes>"

    __str__ = __repr__

    def __reduce__(self) -> NoReturn:
        raise TypeError("a SecretBytes is not pickled: its value would leave the process")

    def __enter__(self) -> SecretBytes:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.wipe()

    def __del__(self) -> None:
        buffer = getattr(self, "_buffer", None)
        if buffer:
            with contextlib.suppress(Exception):  # at interpreter exit libsodium may be gone
                sodium.wipe(buffer)
