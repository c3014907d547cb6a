"""What a new person reads first: ``runa --help``, ``runa help terms`` and the next steps."""

from __future__ import annotations

from pathlib import Path

from support import runa

HELP_TRANSCRIPT = Path(__file__).parent.parent / "docs/help.txt"


def help_env(env: dict[str, str]) -> dict[str, str]:
    return {**env, "COLUMNS": "100"}  # the width the transcript was taken at


def test_help_matches_the_committed_transcript(runa_env: dict[str, str]) -> None:
    result = runa("--help", env=help_env(runa_env))
    assert result.returncode == 0
    assert result.stdout == HELP_TRANSCRIPT.read_text(), (
        "runa --help changed: update docs/help.txt with 'COLUMNS=100 runa --help'")


def test_help_starts_here_then_groups_every_command(runa_env: dict[str, str]) -> None:
    text = runa("--help", env=help_env(runa_env)).stdout
    start = text.index("Start here:")
    assert start < text.index("runa up -d") < text.index("runa chat") < \
        text.index("Talk with the model:")
    assert "Other:" not in text  # every command has its group
    for command in ("chat", "ask", "ingest", "recall", "up", "down", "status", "models",
                    "help"):
        assert f"\n  {command} " in text, command
    assert "runa help terms" in text
    assert runa("help", env=help_env(runa_env)).stdout == text


def test_help_terms_says_what_each_name_does(runa_env: dict[str, str]) -> None:
    result = runa("help", "terms", env=runa_env)
    assert result.returncode == 0
    for term, meaning in (("splinfer", "the inference service"), ("tieto", "retrieval"),
                          ("gilgul", "restart"), ("splinter", "the bus"),
                          ("whisper", "semantic policy tier")):
        line = next(line for line in result.stdout.splitlines()
                    if line.strip().startswith(term + " "))
        assert meaning in line, line
    chat_help = runa("help", "chat", env=runa_env)
    assert chat_help.returncode == 0 and "--list" in chat_help.stdout


def test_status_of_a_stopped_stack_says_how_to_start(runa_env: dict[str, str]) -> None:
    result = runa("status", env=runa_env)
    assert result.returncode == 3
    assert "not running; start it with 'runa up -d', then talk with 'runa chat'" in \
        result.stdout
