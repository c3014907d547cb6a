"""What every command says on standard error, and how it prints JSON: one voice for all.

Errors and notices read ``runa <command>: …`` (``runa bus get: no key 'x'``), made by
``runa.errors.error_line``; data for scripts is printed by ``print_json`` (one document) or
``json_line`` (one record a line, for streams), so every ``--json`` parses the same way.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, TextIO

from runa.errors import error_line

#: The name a command goes by before its arguments are parsed (and for ``runa`` alone).
PROGRAM = "runa"


def command_name(args: argparse.Namespace | None) -> str:
    """The command as typed, without its arguments: ``runa ask``, ``runa bus get``."""
    return str(getattr(args, "command_name", None) or PROGRAM)


def say(command: str, message: object, stream: TextIO | None = None) -> None:
    """One line for the person on standard error, prefixed with the command."""
    print(error_line(command, message), file=stream or sys.stderr, flush=True)


def print_json(value: Any, stream: TextIO | None = None) -> None:
    """One JSON document on standard output (indented; text as UTF-8, not escaped)."""
    print(json.dumps(value, indent=2, ensure_ascii=False, default=str), file=stream or sys.stdout)


def json_line(value: Any) -> str:
    """One record of a stream of JSON lines (``bus watch --channel``)."""
    return json.dumps(value, ensure_ascii=False, default=str)
