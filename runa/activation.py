"""Socket activation (sd_listen_fds(3)) both ways: a component's listening sockets are bound
outside it, on loopback only, and handed over as fds 3, 4, … with ``LISTEN_FDS``/``LISTEN_PID``.

systemd does it with a component's ``.socket`` unit, Runa's own supervisor with
:func:`bind_loopback` and :func:`handing_over`; the component takes them with
:func:`inherited`. Its sandbox (a private network, AF_UNIX sockets only) could not bind them,
and needs not: an inherited socket is used, not made.
"""

from __future__ import annotations

import fcntl
import os
import socket
from collections.abc import Callable, Mapping, MutableMapping, Sequence

#: The first descriptor socket activation passes (sd_listen_fds(3)).
FIRST_FD = 3
#: The only addresses the API listens on.
LOOPBACK = ("127.0.0.1", "::1")


class NoSockets(RuntimeError):
    """No listening socket was handed over."""


def inherited(env: MutableMapping[str, str], pid: int | None = None) -> list[socket.socket]:
    """The sockets passed to this process (``LISTEN_PID`` names it), the variables then
    removed so a child does not take them for its own (sd_listen_fds with unset_environment)."""
    pid = os.getpid() if pid is None else pid
    try:
        ours = int(env.get("LISTEN_PID", "")) == pid
        count = int(env.get("LISTEN_FDS", "0"))
    except ValueError:
        ours, count = False, 0
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        env.pop(name, None)
    if not ours or count < 1:
        raise NoSockets("no listening socket was handed over (LISTEN_FDS)")
    sockets: list[socket.socket] = []
    for fd in range(FIRST_FD, FIRST_FD + count):
        os.set_inheritable(fd, False)
        sockets.append(socket.socket(fileno=fd))
    return sockets


def bind_loopback(port: int) -> list[socket.socket]:
    """Listening sockets on 127.0.0.1 and ::1 at ``port`` (what the socket unit declares);
    a machine without IPv6 gets the IPv4 one alone."""
    sockets: list[socket.socket] = []
    for host in LOOPBACK:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            sock = socket.socket(family, socket.SOCK_STREAM)
        except OSError:
            if family == socket.AF_INET6:
                continue
            raise
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        try:
            sock.bind((host, port))
        except OSError:
            sock.close()
            if family == socket.AF_INET6:
                continue
            for other in sockets:
                other.close()
            raise
        sock.listen(128)
        sockets.append(sock)
    return sockets


#: Runs ``argv`` with ``LISTEN_PID`` set to its own pid, which only the child knows: ``sh``
#: exports its ``$$`` and execs the program, which keeps that pid.
_WITH_OWN_PID = 'LISTEN_PID=$$; export LISTEN_PID; exec "$@"'


def handing_over(sockets: Sequence[socket.socket], argv: Sequence[str],
                 env: Mapping[str, str]) -> tuple[list[str], dict[str, str], Callable[[], None]]:
    """How to start ``argv`` with ``sockets`` as its fds 3, 4, …: the argv, the environment
    and a step for ``preexec_fn`` (run in the child before exec) that moves the sockets there.
    Give ``pass_fds`` as ``range(3, 3 + len(sockets))`` so they stay open across exec."""
    fds = [sock.fileno() for sock in sockets]

    def move() -> None:
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 64) for fd in fds]  # out of the way of 3, 4 …
        for index, fd in enumerate(high):
            os.dup2(fd, FIRST_FD + index)  # dup2 clears FD_CLOEXEC on the copy
            os.close(fd)

    names = ":".join("listen" for _ in sockets)
    return (["/bin/sh", "-c", _WITH_OWN_PID, "sh", *argv],
            {**env, "LISTEN_FDS": str(len(sockets)), "LISTEN_FDNAMES": names}, move)
