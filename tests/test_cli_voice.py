"""One voice in the CLI: every command words its errors, exits and prints JSON the same way.

What a script or a person notices: an error is one line ``runa <command>: …`` on standard
error; the same mistake ends every command with the same status (64 a command line that is
wrong as written, 66 one naming something that is not there); ``--json`` output parses; and
the global options work after the command as well as before it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from support import runa

from runa import __version__
from runa.chat.conversations import ConversationNotFound
from runa.chat.session import UnknownConversation, UnknownPersona
from runa.cli.main import build_parser, main
from runa.cli.voice import command_name
from runa.splinter import Bus
from runa.tieto.errors import UnknownTopicError
from runa.tieto.ingests import NoSuchIngest
from runa.tieto.snapshot import SnapshotMissing


@dataclass(frozen=True)
class Said:
    status: int
    out: str
    err: str


Cli = Callable[..., Said]


@pytest.fixture
def cli(runa_env: dict[str, str], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> Cli:
    """``runa ARGV...`` in this process (fast), in the test's own isolated environment."""
    for key in [k for k in os.environ if k.startswith("RUNA_")]:
        monkeypatch.delenv(key)
    for key, value in runa_env.items():
        monkeypatch.setenv(key, value)

    def run(*argv: str) -> Said:
        status = main(list(argv))
        out, err = capsys.readouterr()
        return Said(status, out, err)

    return run


def one_line(said: Said, command: str) -> str:
    """The error ``command`` printed: exactly one line in its voice, and nothing else."""
    assert said.out == "", said.out
    assert said.err.endswith("\n") and said.err.count("\n") == 1, said.err
    assert said.err.startswith(f"{command}: ") and "runa: runa" not in said.err, said.err
    return said.err.removeprefix(f"{command}: ").rstrip("\n")


# -- the same mistake, the same status --------------------------------------------------------

SAMPLING_COMMANDS = [("ask", "hi"), ("chat",),
                     ("recall", "a question", "--topic", "notes", "--complete")]
SAMPLING_MISTAKES = [
    (("--temp", "-1"), "command line: temp = -1.0 is not allowed; allowed: 0 (greedy) to 100"),
    (("--top-p", "1.5"), "command line: top_p = 1.5 is not allowed; allowed: 0 to 1 (1 = off)"),
    (("--temp", "warm"), "argument --temp: invalid float value: 'warm'"),
    (("--no-such-option",), "unrecognized arguments: --no-such-option"),
    (("--timeout", "nan"), "--timeout nan: must be from 0.1 to 86400 seconds"),
]


@pytest.mark.parametrize("command", SAMPLING_COMMANDS, ids=lambda c: c[0])
@pytest.mark.parametrize(("flags", "message"), SAMPLING_MISTAKES, ids=lambda m: " ".join(m)
                         if isinstance(m, tuple) else "")
def test_the_same_mistake_ends_ask_chat_and_recall_alike(
        cli: Cli, command: tuple[str, ...], flags: tuple[str, ...], message: str) -> None:
    """A bad --temp was 65 in ask (splinfer refused it) and 64 in chat; a bad type was 2."""
    said = cli(*command, *flags)
    assert said.status == 64
    assert one_line(said, f"runa {command[0]}").startswith(message)


@pytest.mark.parametrize(("argv", "command"), [
    (("chat", "--conversation", ".."), "runa chat"),
    (("chat", "--export", ".."), "runa chat"),
    (("topic", "snapshot", "../x", "x.sqlite"), "runa topic snapshot"),
    (("status", "--stack", "a/b"), "runa status"),
    (("--stack", "a/b", "status"), "runa status"),
    (("models", "setup", "no-such-model"), "runa models setup"),
    (("help", "no-such-topic"), "runa help"),
    (("daemon", "no-such-component"), "runa daemon"),
    (("no-such-command",), "runa"),
    (("bus",), "runa bus"),
    (("ask",), "runa ask"),
], ids=lambda v: " ".join(v) if isinstance(v, tuple) else "")
def test_a_command_line_wrong_as_written_is_64_in_every_command(
        cli: Cli, argv: tuple[str, ...], command: str) -> None:
    said = cli(*argv)
    assert said.status == 64
    one_line(said, command)


def test_a_name_of_something_that_is_not_there_is_66_in_every_command(
        cli: Cli, tmp_path: Path) -> None:
    for argv, command in [
        (("recall", "a question", "--topic", "nosuch"), "runa recall"),
        (("topic", "snapshot", "nosuch", str(tmp_path / "x.sqlite")), "runa topic snapshot"),
        (("topic", "restore", "notes", str(tmp_path / "missing.sqlite")), "runa topic restore"),
    ]:
        said = cli(*argv)
        assert said.status == 66, (argv, said)
        one_line(said, command)


@pytest.mark.parametrize("error", [UnknownPersona, UnknownConversation, ConversationNotFound,
                                   UnknownTopicError, NoSuchIngest, SnapshotMissing])
def test_every_no_such_name_error_exits_66(error: type) -> None:
    """A persona, a conversation, a topic, an ingest, a snapshot file: the same status."""
    assert error.exit_code == 66


def test_a_malformed_bus_key_is_64_as_a_malformed_id(cli: Cli, bus: Bus) -> None:
    said = cli("bus", "get", "")
    assert said.status == 64
    assert one_line(said, "runa bus get").startswith("invalid key ''")


def test_a_mistake_is_one_line_as_a_person_sees_it(runa_env: dict[str, str]) -> None:
    result = runa("ask", "--temp", "warm", "hi", env=runa_env)
    assert (result.returncode, result.stdout) == (64, "")
    assert result.stderr == ("runa ask: argument --temp: invalid float value: 'warm' "
                             "(see 'runa ask --help')\n")


# -- global options after the command ---------------------------------------------------------

@pytest.mark.parametrize(("argv", "stack"), [
    (["--stack", "one", "status"], "one"),
    (["status", "--stack", "one"], "one"),
    (["status", "--json", "--stack", "one"], "one"),
    (["bus", "--stack", "one", "list"], "one"),
    (["bus", "list", "--stack", "one"], "one"),
    (["--stack", "one", "ask", "hi", "--stack", "two"], "two"),
    (["ask", "hi"], None),
])
def test_global_options_go_before_or_after_the_command(argv: list[str],
                                                        stack: str | None) -> None:
    assert build_parser().parse_args(argv).stack == stack


def test_a_stack_named_after_the_command_is_the_one_used(cli: Cli) -> None:
    said = cli("status", "--json", "--stack", "after1")
    assert said.status == 3  # not running
    assert json.loads(said.out)["stack"] == "after1"


def test_version_after_the_command(cli: Cli, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        cli("chat", "--version")
    assert done.value.code == 0
    assert capsys.readouterr().out == f"runa {__version__}\n"


@pytest.mark.parametrize(("argv", "name"), [
    (["ask", "hi"], "runa ask"),
    (["bus", "get", "k"], "runa bus get"),
    (["--stack", "x", "topic", "list"], "runa topic list"),
    (["daemon", "splinter"], "runa daemon"),
])
def test_each_command_knows_its_name_for_its_messages(argv: list[str], name: str) -> None:
    assert command_name(build_parser().parse_args(argv)) == name


# -- --json parses -----------------------------------------------------------------------------

@pytest.fixture
def bus(runa_env: dict[str, str], cli: Cli) -> Iterator[Bus]:
    assert cli("bus", "init").status == 0
    with Bus.open(f"/dev/shm/runa-{runa_env['RUNA_STACK']}-main") as opened:
        opened.set("greeting", "héllo".encode())
        opened.set("raw", b"\xff\x00")
        yield opened


@pytest.mark.parametrize("argv", [
    ("topic", "list", "--json"),
    ("bus", "get", "greeting", "--json"),
    ("bus", "list", "--json"),
    ("bus", "export"),
    ("models", "list", "--json"),
    ("status", "--json"),
    ("config", "show", "--json"),
    ("ingest", "--status", "--json"),
], ids=" ".join)
def test_every_json_output_parses(cli: Cli, bus: Bus, argv: tuple[str, ...]) -> None:
    said = cli(*argv)
    assert said.status in (0, 3), said.err  # status: 3, the stack is not running
    json.loads(said.out)


def test_topic_list_json_is_a_list_of_topics(cli: Cli) -> None:
    said = cli("topic", "list", "--json")
    assert (said.status, json.loads(said.out)) == (0, [])


def test_bus_get_json_gives_text_or_base64(cli: Cli, bus: Bus) -> None:
    text = cli("bus", "get", "greeting", "--json")
    assert json.loads(text.out) == {"key": "greeting", "value": "héllo", "bytes": 6}
    raw = cli("bus", "get", "raw", "--json")
    assert json.loads(raw.out) == {"key": "raw", "value": None, "value_base64": "/wA=",
                                   "bytes": 2}
    missing = cli("bus", "get", "nosuch", "--json")
    assert missing.status == 1
    assert one_line(missing, "runa bus get") == "no key 'nosuch'"


def test_a_detached_start_quotes_the_error_its_supervisor_said(
        runa_env: dict[str, str], tmp_path: Path) -> None:
    """'runa up -d' reads its background supervisor's error back from the log, in its voice."""
    bad = tmp_path / "etc/runa.toml"
    bad.parent.mkdir(parents=True, exist_ok=True)
    bad.write_text("[service]\nwatchdog_sec = 0\n")
    result = runa("up", "--detach", env=runa_env, timeout=120)
    assert result.returncode == 69, result.stderr
    assert result.stderr.startswith(
        f"runa up: the supervisor exited with status 78: {bad}: service.watchdog_sec = 0: "
        "must be at least 1; see "), result.stderr
