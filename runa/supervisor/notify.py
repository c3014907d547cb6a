"""The receiving end of sd_notify: a datagram socket that knows who sent each message."""

from __future__ import annotations

import contextlib
import os
import select
import socket
import struct
from dataclasses import dataclass
from pathlib import Path

_CREDS = struct.Struct("iII")  # struct ucred: pid, uid, gid


@dataclass(frozen=True)
class Notification:
    pid: int
    fields: dict[str, str]


def parse(datagram: bytes) -> dict[str, str]:
    """``READY=1\\nSTATUS=x`` → ``{"READY": "1", "STATUS": "x"}``; junk lines are ignored."""
    fields = {}
    for line in datagram.decode("utf-8", "replace").splitlines():
        key, sep, value = line.partition("=")
        if sep and key:
            fields[key] = value
    return fields


class NotifyListener:
    """Binds ``path`` and yields notifications with the sender's pid (SO_PASSCRED)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists() or path.is_socket():
            path.unlink()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind(str(path))
        os.chmod(path, 0o600)

    def fileno(self) -> int:
        return self.sock.fileno()

    def receive(self, timeout: float) -> list[Notification]:
        """Every notification that arrives within ``timeout`` seconds (at least one wait)."""
        out: list[Notification] = []
        ready, _, _ = select.select([self.sock], [], [], max(timeout, 0.0))
        while ready:
            data, ancdata, _flags, _addr = self.sock.recvmsg(4096, socket.CMSG_SPACE(_CREDS.size))
            pid = 0
            for level, kind, payload in ancdata:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = _CREDS.unpack(payload[: _CREDS.size])[0]
            out.append(Notification(pid, parse(data)))
            ready, _, _ = select.select([self.sock], [], [], 0)
        return out

    def close(self) -> None:
        self.sock.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
