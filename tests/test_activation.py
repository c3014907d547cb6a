"""Socket activation both ways (runa.activation): sockets bound on loopback here, handed to a
child as fds 3, 4, … with LISTEN_FDS and its own LISTEN_PID, and taken there."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from runa import activation

# The child takes what it was handed and says, for each socket, its family and address.
CHILD = """
import os, socket, sys
from runa import activation
env = dict(os.environ)
got = activation.inherited(env)
for sock in got:
    print(sock.fileno(), sock.family.name, sock.getsockname()[0], sock.getsockname()[1])
print("left", sorted(k for k in env if k.startswith("LISTEN_")))
"""


def test_a_child_takes_the_loopback_sockets_handed_over_as_fds_from_3() -> None:
    sockets = activation.bind_loopback(0)
    try:
        assert sockets[0].getsockname()[0] == "127.0.0.1"
        assert all(sock.getsockname()[0] in ("127.0.0.1", "::1") for sock in sockets)
        port = sockets[0].getsockname()[1]
        argv, env, move = activation.handing_over(
            sockets, [sys.executable, "-c", CHILD], {**os.environ, "PYTHONPATH": os.getcwd()})
        done = subprocess.run(argv, env=env, preexec_fn=move, close_fds=False,
                              capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        lines = done.stdout.splitlines()
        assert lines[0] == f"3 AF_INET 127.0.0.1 {port}"
        assert [line.split()[0] for line in lines[:-1]] == [
            str(3 + n) for n in range(len(sockets))]
        assert lines[-1] == "left []"  # taken: a grandchild is not handed them again
    finally:
        for sock in sockets:
            sock.close()


def test_sockets_for_another_process_are_not_taken() -> None:
    env = {"LISTEN_PID": str(os.getpid() + 1), "LISTEN_FDS": "1"}
    with pytest.raises(activation.NoSockets):
        activation.inherited(env)
    assert env == {}


def test_the_ipv6_socket_takes_ipv6_alone() -> None:
    sockets = activation.bind_loopback(0)
    try:
        if len(sockets) == 2:
            v6 = sockets[1]
            assert v6.family == socket.AF_INET6
            assert v6.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1
    finally:
        for sock in sockets:
            sock.close()
