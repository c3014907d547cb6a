"""A journal that goes away costs no log line and shows no traceback (issue 15, defect 13).

A real Unix datagram socket stands in for journald; closing and removing it is what a
stopped or crashed journald looks like to a writer.
"""

from __future__ import annotations

import fcntl
import io
import logging
import os
import shutil
import socket
import struct
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import wait_for

from runa import log
from runa.journald import JournalSocket
from runa.testing import FakeClock


def fields_of(datagram: bytes) -> dict[str, str]:
    """The fields of one native-protocol record (values without newlines, as here)."""
    return dict(line.split("=", 1) for line in datagram.decode().splitlines() if line)


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[tuple[socket.socket, Path]]:
    path = tmp_path / "journal.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(path))
    listener.settimeout(5)
    yield listener, path
    listener.close()


def test_records_reach_the_journal_with_their_fields(journal) -> None:
    listener, path = journal
    logger = log.setup("demo", target="journal", stream=io.StringIO(), journal_socket=path)
    log.event(logger, "ready", "demo ready", incarnation=2)
    record = fields_of(listener.recv(65536))
    assert record["MESSAGE"] == "demo ready"
    assert record["PRIORITY"] == "6"
    assert record["SYSLOG_IDENTIFIER"] == "runa-demo"
    assert record["RUNA_COMPONENT"] == "demo"
    assert record["RUNA_EVENT"] == "ready"
    assert record["RUNA_INCARNATION"] == "2"


def test_a_journal_that_goes_away_falls_back_to_stderr_saying_so_once(journal, capsys) -> None:
    listener, path = journal
    stream = io.StringIO()
    logger = log.setup("demo", target="journal", stream=stream, journal_socket=path)
    logger.info("first, to the journal")
    assert fields_of(listener.recv(65536))["MESSAGE"] == "first, to the journal"

    listener.close()  # journald stopped: the socket file is still there, nobody reads
    logger.info("second, journal refused")
    path.unlink()  # and then gone altogether
    logger.warning("third, journal gone")

    assert stream.getvalue().splitlines() == [
        "demo: warning: journal unavailable (Connection refused); logging to stderr",
        "demo: info: second, journal refused",
        "demo: warning: third, journal gone",
    ]
    assert "Logging error" not in capsys.readouterr().err


def record(message: str) -> logging.LogRecord:
    return logging.makeLogRecord({"msg": message, "levelno": logging.WARNING,
                                  "levelname": "WARNING", "RUNA_COMPONENT": "demo"})


def test_the_journal_is_tried_again_later(tmp_path: Path) -> None:
    path = tmp_path / "journal.sock"
    clock = FakeClock(100.0)
    stream = io.StringIO()
    handler = log.JournalHandler("runa-demo", JournalSocket(path),
                                 logging.StreamHandler(stream), retry_s=30,
                                 clock=clock)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        handler.handle(record("while the journal is away"))
        listener.bind(str(path))
        listener.settimeout(5)
        clock.advance(10)
        handler.handle(record("too soon to try again"))
        clock.advance(30)
        handler.handle(record("back in the journal"))
        assert fields_of(listener.recv(65536))["MESSAGE"] == "back in the journal"
    finally:
        listener.close()
        handler.close()
    assert stream.getvalue().splitlines() == [
        "journal unavailable (No such file or directory); logging to stderr",
        "while the journal is away",
        "too soon to try again",
        "journal available again; logging to the journal",
    ]


def test_a_daemon_whose_journald_dies_keeps_logging_without_a_traceback(tmp_path: Path) -> None:
    """The default socket path, as a daemon under systemd meets it, in a private mount
    namespace so the machine's own journal is not touched."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare for a private /run")
    script = textwrap.dedent("""
        import os, socket, subprocess
        subprocess.run(["mount", "-t", "tmpfs", "tmpfs", "/run"], check=True)
        os.makedirs("/run/systemd/journal")
        journald = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        journald.bind("/run/systemd/journal/socket")
        from runa import log
        logger = log.setup("demo", target="auto")
        logger.info("to the journal")
        print(journald.recv(65536).count(b"MESSAGE=to the journal"), flush=True)
        journald.close()
        logger.info("after journald stopped")
        os.unlink("/run/systemd/journal/socket")
        logger.info("after its socket went away")
    """)
    done = subprocess.run(["unshare", "--mount", "--propagation", "private", sys.executable,
                           "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "1"
    assert "Traceback" not in done.stderr and "Logging error" not in done.stderr, done.stderr
    assert done.stderr.splitlines() == [
        "demo: warning: journal unavailable (Connection refused); logging to stderr",
        "demo: info: after journald stopped",
        "demo: info: after its socket went away",
    ]


def test_a_record_too_large_for_a_datagram_goes_in_a_sealed_memfd(journal) -> None:
    listener, path = journal
    logger = log.setup("demo", target="journal", stream=io.StringIO(), journal_socket=path)
    text = "x" * 400_000  # over the datagram limit (SO_SNDBUF, ~200 KiB)
    logger.info(text)
    data, ancillary, _flags, _address = listener.recvmsg(
        65536, socket.CMSG_SPACE(struct.calcsize("i")))
    assert data == b""
    [(level, kind, fd_bytes)] = ancillary
    assert (level, kind) == (socket.SOL_SOCKET, socket.SCM_RIGHTS)
    fd = struct.unpack("i", fd_bytes[:4])[0]
    try:
        assert fcntl.fcntl(fd, fcntl.F_GET_SEALS) & fcntl.F_SEAL_WRITE
        record = fields_of(os.pread(fd, os.fstat(fd).st_size, 0))  # journald maps it
    finally:
        os.close(fd)
    assert record["MESSAGE"] == text and record["RUNA_COMPONENT"] == "demo"


@pytest.mark.real_systemd
def test_the_real_journald_takes_a_record_larger_than_a_datagram(user_manager) -> None:
    from systemd import journal

    component = f"test-{uuid.uuid4().hex[:12]}"
    script = textwrap.dedent(f"""
        from runa import log
        logger = log.setup({component!r}, target="journal")
        log.event(logger, "big", "x" * 400_000, incarnation=1)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 0 and done.stderr == "", done.stderr

    def find() -> list[dict[str, object]]:
        reader = journal.Reader()
        reader.add_match(RUNA_COMPONENT=component)
        return list(reader)

    [record] = wait_for(find, 10, f"a journal record with RUNA_COMPONENT={component}")
    assert record["MESSAGE"] == "x" * 400_000 and record["RUNA_EVENT"] == "big"
