"""``runa ingest --status/--cancel`` reaching the tieto daemon: the bus it opened is closed
whatever happens on the way."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import isolated_env

from runa.cli.context import CliContext
from runa.cli.ingest_cmd import _daemon
from runa.splinter import Bus, Geometry, create_segment
from runa.splinter.errors import ChannelTableFull


def open_files(path: str) -> int:
    """How many file descriptors of this process are open on ``path``."""
    fds = Path("/proc/self/fd")
    return sum(1 for fd in fds.iterdir() if _target(fd) == path)


def _target(fd: Path) -> str:
    try:
        return str(fd.readlink())
    except OSError:  # closed since the listing
        return ""


def test_the_bus_is_closed_when_no_reply_queue_can_be_made(tmp_path: Path) -> None:
    env = {**isolated_env(tmp_path), "RUNA_BUS_DIR": str(tmp_path)}
    path = str(tmp_path / f"runa-{env['RUNA_STACK']}-main")
    create_segment(path, Geometry(slots=64, channels=4))
    with Bus.open(path) as filler:
        for n in range(4):  # every channel taken: the client's reply queue cannot be made
            filler.queue(f"taken.{n}")
        before = open_files(path)
        with pytest.raises(ChannelTableFull):
            _daemon(CliContext(env=env))
        assert open_files(path) == before, "the bus opened for the daemon was left open"
