"""``--timeout`` of the commands that wait for a service: a number of seconds in range, or
one usage error naming it (before anything is sent)."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import runa


@pytest.mark.parametrize("command", [
    ("ask", "hello"),
    ("chat",),
    ("chat", "--list"),
    ("ingest", "NOTES", "--topic", "notes"),
    ("ingest", "--cancel"),
], ids=" ".join)
@pytest.mark.parametrize("timeout", ["0", "-1", "nan", "inf", "100000"])
def test_a_timeout_out_of_range_is_one_usage_error(
        runa_env: dict[str, str], tmp_path: Path, command: tuple[str, ...], timeout: str) -> None:
    notes = tmp_path / "notes.md"
    notes.write_text("# Notes\n")
    command = tuple(str(notes) if word == "NOTES" else word for word in command)
    result = runa(*command, "--timeout", timeout, env=runa_env)
    assert result.returncode == 64, result.stderr
    assert result.stderr == f"runa {command[0]}: --timeout {float(timeout)}: must be from 0.1 " \
        "to 86400 seconds\n"
    assert result.stdout == ""


def test_a_timeout_in_range_goes_on_to_the_service(runa_env: dict[str, str]) -> None:
    result = runa("ask", "--timeout", "0.1", "hello", env=runa_env)
    assert result.returncode == 69 and "runa up" in result.stderr, result.stderr
