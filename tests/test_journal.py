"""Structured records reach the real journald and come back with their fields."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import uuid

import pytest
from support import wait_for

from runa import log

pytestmark = pytest.mark.real_systemd


def test_a_record_with_runa_component_is_written_and_read_back(user_manager) -> None:
    from systemd import journal

    component = f"test-{uuid.uuid4().hex[:12]}"
    script = textwrap.dedent(f"""
        from runa import log
        logger = log.setup({component!r}, target="journal")
        log.event(logger, "restart", "component restarted", incarnation=3, reason="watchdog")
    """)
    subprocess.run([sys.executable, "-c", script], check=True, timeout=30)

    def find():
        reader = journal.Reader()
        reader.add_match(RUNA_COMPONENT=component)
        return list(reader)

    records = wait_for(find, 10, f"a journal record with RUNA_COMPONENT={component}")
    assert len(records) == 1
    record = records[0]
    assert record["MESSAGE"] == "component restarted"
    assert record["RUNA_EVENT"] == "restart"
    assert record["RUNA_INCARNATION"] == "3"
    assert record["RUNA_REASON"] == "watchdog"
    assert record["SYSLOG_IDENTIFIER"] == f"runa-{component}"


def test_without_a_journal_records_go_to_stderr_with_their_fields(capsys) -> None:
    import io

    stream = io.StringIO()
    logger = log.setup("demo", target="stderr", stream=stream)
    log.event(logger, "ready", "demo ready", incarnation=2)
    assert stream.getvalue().strip() == (
        f"demo: info: demo ready [RUNA_EVENT=ready RUNA_INCARNATION=2 "
        f"RUNA_PID={__import__('os').getpid()}]")


def test_field_names_are_checked() -> None:
    assert log.field_name("conversation") == "RUNA_CONVERSATION"
    with pytest.raises(ValueError):
        log.field_name("bad-name")
