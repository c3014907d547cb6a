"""journald's native protocol over its datagram socket, with the socket's path injectable.

One record is one datagram of fields: ``KEY=value\\n``, or ``KEY\\n`` + the value's
length (64-bit little-endian) + the value + ``\\n`` when the value holds a newline. A record
too large for a datagram goes in a sealed memfd passed alongside an empty one, as
libsystemd does. A send never blocks: a journal that stopped reading is an ``OSError``
the caller handles like a journal that is gone.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
import struct
from collections.abc import Mapping
from pathlib import Path

JOURNAL_SOCKET = Path("/run/systemd/journal/socket")
_SEALS = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL


def encode(fields: Mapping[str, object]) -> bytes:
    """One record in the native protocol; values are written as ``str`` (bytes as they are)."""
    out = bytearray()
    for key, value in fields.items():
        data = value if isinstance(value, bytes) else str(value).encode("utf-8", "replace")
        name = key.encode("ascii")
        if b"\n" in data:
            out += name + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
        else:
            out += name + b"=" + data + b"\n"
    return bytes(out)


class JournalSocket:
    """A sender of records to the journal listening at ``path`` (closed with ``close``)."""

    def __init__(self, path: Path = JOURNAL_SOCKET) -> None:
        self.path = path
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)

    def send(self, fields: Mapping[str, object]) -> None:
        """Send one record; ``OSError`` when the journal is gone, refuses or is not reading."""
        data = encode(fields)
        try:
            self._socket.sendto(data, socket.MSG_DONTWAIT, str(self.path))
        except OSError as e:
            if e.errno not in (errno.EMSGSIZE, errno.ENOBUFS):
                raise
            self._send_large(data)

    def _send_large(self, data: bytes) -> None:
        fd = os.memfd_create("runa-journal", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            os.write(fd, data)
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _SEALS)
            self._socket.sendmsg([], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                       struct.pack("i", fd))],
                                 socket.MSG_DONTWAIT, str(self.path))
        finally:
            os.close(fd)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._socket.close()
