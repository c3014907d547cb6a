"""The exception types every layer of Runa raises.

Each error carries enough context to tell a person what went wrong and where;
the CLI turns them into one-line messages and meaningful exit codes.
"""

from __future__ import annotations


class RunaError(Exception):
    """Base of every error Runa raises on purpose."""

    #: Process exit status the CLI uses when this error ends a command.
    exit_code = 1


class ConfigError(RunaError):
    """A configuration layer holds a value Runa cannot use.

    Names the file (or environment variable), the dotted key and the bad value.
    """

    exit_code = 78  # EX_CONFIG

    def __init__(self, source: str, key: str, value: object, problem: str) -> None:
        self.source = source
        self.key = key
        self.value = value
        self.problem = problem
        super().__init__(f"{source}: {key} = {value!r}: {problem}")


class UsageError(RunaError):
    """The command line asks for something that cannot be done as asked."""

    exit_code = 64  # EX_USAGE


def error_line(command: str, message: object) -> str:
    """How every error (and notice) about a command reads: ``runa ask: <what happened>``.

    The one place the prefix is made, so the CLI and the chat loop speak with one voice.
    """
    return f"{command}: {message}"
