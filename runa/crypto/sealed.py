"""Sealed payloads: what the coven and alethia buses carry, encrypted (DESIGN §2).

A stack's **bus key** is 32 random bytes in a 0600 file in its runtime directory
(``<runtime>/bus.key``, see ``key_path``), created by the first process that needs it
(``O_EXCL``: two first users agree on one key) and gone with the runtime directory at
logout or reboot. Every process of the stack's uid can read it, so sealing keeps secrets
and memories out of ``/dev/shm``, ``runa bus export`` and a dump of the segment, not away
from code running as the same user (docs/security.md says so plainly).

A sealed payload is ``{"sealed": "<base64 of nonce ‖ ciphertext>"}``. The plaintext is a
small binary frame so that a secret value never has to become a Python ``str``:
``u32 length of the JSON fields ‖ the JSON fields (UTF-8) ‖ the value bytes`` (the value may
be empty). XChaCha20-Poly1305 with a random 24-byte nonce; the associated data binds the
payload to its bus and purpose (``context``, e.g. ``coven/request``), so a sealed reply
cannot be replayed as a request or on another bus.
"""

from __future__ import annotations

import base64
import binascii
import errno
import json
import os
import stat
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runa.crypto import sodium
from runa.errors import RunaError

KEY_FILE = "bus.key"
FIELD = "sealed"
_LENGTH = struct.Struct("<I")
_AD_PREFIX = b"runa-sealed-v1\0"


class SealError(RunaError):
    """A sealed payload that is not one, or was not sealed with this stack's bus key."""

    exit_code = 65  # EX_DATAERR


class BusKeyError(RunaError):
    """The bus key file cannot be read or created, or is exposed to others."""

    exit_code = 77  # EX_NOPERM


def key_path(runtime: Path) -> Path:
    """Where stack's bus key lives: ``<runtime dir>/bus.key`` (``Paths.runtime``)."""
    return runtime / KEY_FILE


@dataclass
class Opened:
    """A payload opened: its fields, and its value in a buffer the caller wipes."""

    fields: dict[str, Any]
    value: bytearray = field(default_factory=bytearray)

    def wipe(self) -> None:
        sodium.wipe(self.value)


class BusKey:
    """The stack's bus key, held in a locked, wipeable buffer."""

    def __init__(self, key: bytearray) -> None:
        if len(key) != sodium.KEY_BYTES:
            raise ValueError(f"a bus key is {sodium.KEY_BYTES} bytes, not {len(key)}")
        self._key = sodium.lock_memory(key)

    @classmethod
    def load_or_create(cls, path: Path) -> BusKey:
        """The key in ``path``, created (0600, its directory 0700) if there is none.

        A key file that others can read, that is not this user's, or that is not exactly
        one key long is refused (``BusKeyError``) rather than used or replaced; so is a
        directory that is not this user's or that others can write (under a ``/tmp``
        fallback someone else may have made it first, to delete or replace the key).
        """
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            _check_directory(path.parent)
            if path.exists() or path.is_symlink():
                return cls(_read_key(path))
            key = sodium.new_key()
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
                         | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, key)
                os.fsync(fd)
            finally:
                os.close(fd)
            try:
                os.link(tmp, path)  # whole or not at all; the first of two creators wins
            except FileExistsError:
                sodium.wipe(key)
                return cls(_read_key(path))
            finally:
                tmp.unlink(missing_ok=True)
            return cls(key)
        except OSError as error:
            raise BusKeyError(f"the bus key {path} cannot be read or created: "
                              f"{error.strerror or error}") from None

    def close(self) -> None:
        """Wipe the key; the object cannot seal or open anything afterwards."""
        sodium.wipe(self._key)
        self._key = bytearray()

    def seal(self, context: str, fields: Mapping[str, Any],
             value: sodium.Buffer = b"") -> dict[str, str]:
        """The payload ``{"sealed": …}`` carrying ``fields`` (JSON-able) and ``value``."""
        header = json.dumps(dict(fields), separators=(",", ":")).encode()
        plain = bytearray(_LENGTH.size + len(header) + len(value))
        try:
            _LENGTH.pack_into(plain, 0, len(header))
            plain[_LENGTH.size:_LENGTH.size + len(header)] = header
            plain[_LENGTH.size + len(header):] = value
            nonce = sodium.random_bytes(sodium.NONCE_BYTES)
            sealed = sodium.encrypt(self._key, nonce, plain, _AD_PREFIX + context.encode())
        finally:
            sodium.wipe(plain)
        return {FIELD: base64.b64encode(nonce + sealed).decode("ascii")}

    def open(self, context: str, payload: Mapping[str, Any]) -> Opened:
        """The fields and value of a sealed ``payload``; ``SealError`` naming what is wrong."""
        text = payload.get(FIELD)
        if not isinstance(text, str):
            raise SealError(f"the payload has no '{FIELD}' string: on this bus every payload "
                            "is sealed with the stack's bus key")
        try:
            raw = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise SealError(f"'{FIELD}' is not base64") from None
        if len(raw) < sodium.NONCE_BYTES + sodium.MAC_BYTES:
            raise SealError(f"'{FIELD}' is too short to be a sealed payload")
        plain = sodium.decrypt_into(self._key, raw[:sodium.NONCE_BYTES],
                                    raw[sodium.NONCE_BYTES:], _AD_PREFIX + context.encode())
        if plain is None:
            raise SealError(f"the payload was not sealed with this stack's bus key for "
                            f"{context!r} (altered, replayed, or from another stack)")
        try:
            (length,) = _LENGTH.unpack_from(plain, 0)
            end = _LENGTH.size + length
            if end > len(plain):
                raise SealError("the sealed frame's length runs past its end")
            fields = json.loads(bytes(plain[_LENGTH.size:end]))
            if not isinstance(fields, dict):
                raise SealError("the sealed fields are not a JSON object")
            value = sodium.lock_memory(bytearray(memoryview(plain)[end:]))  # one copy, wiped
        except (struct.error, ValueError) as error:
            raise SealError(f"the sealed frame is malformed: {error}") from None
        finally:
            sodium.wipe(plain)
        return Opened(fields, value)


def _check_directory(directory: Path) -> None:
    """A real directory of this user that no one else can write; read access is closed
    (0700), as ``runa.supervisor.rundir`` does for the runtime directory."""
    info = directory.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o022:
        kind = "a symbolic link" if stat.S_ISLNK(info.st_mode) else (
            "a directory" if stat.S_ISDIR(info.st_mode) else "not a directory")
        raise BusKeyError(f"the bus key's directory {directory} is {kind} owned by uid "
                          f"{info.st_uid} with mode {stat.S_IMODE(info.st_mode):04o}, not a "
                          "directory of yours that only you can write: refusing to use it")
    if info.st_mode & 0o077:
        os.chmod(directory, 0o700, follow_symlinks=False)


def _read_key(path: Path) -> bytearray:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)
        if info.st_uid != os.getuid() or info.st_mode & 0o077:
            raise BusKeyError(f"the bus key {path} is readable by others or not yours "
                              f"(mode {info.st_mode & 0o777:o}): remove it; the next start "
                              "makes a new one")
        key = sodium.lock_memory(bytearray(sodium.KEY_BYTES))
        got = os.readv(fd, [key])
        if got != sodium.KEY_BYTES or info.st_size != sodium.KEY_BYTES:
            sodium.wipe(key)
            raise BusKeyError(f"the bus key {path} is {info.st_size} bytes, not "
                              f"{sodium.KEY_BYTES} (damaged): remove it and restart the stack")
        return key
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise BusKeyError(f"the bus key {path} is a symlink; not followed") from None
        raise
    finally:
        os.close(fd)
