"""The command-line parser every ``runa`` command shares.

Three things argparse does not do as Runa wants: a mistake on the command line is a
``UsageError`` (exit 64, EX_USAGE, like every other usage mistake a command finds itself)
printed in the command's voice, not argparse's ``prog: error:`` and exit 2; the global
options (``--stack``, ``--version``) are taken after the command as well as before it; and
each command knows its own name (``runa bus get``) for its messages.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator, Sequence
from typing import Any, NoReturn

from runa import __version__
from runa.errors import UsageError


class CommandLineError(UsageError):
    """argparse could not make sense of the command line of ``command``."""

    def __init__(self, command: str, message: str) -> None:
        self.command = command
        super().__init__(f"{message} (see '{command} --help')")


class CommandParser(argparse.ArgumentParser):
    """An ArgumentParser that raises CommandLineError instead of exiting with status 2."""

    def error(self, message: str) -> NoReturn:
        raise CommandLineError(self.prog, message)

    def parse_args(self, args: Sequence[str] | None = None,  # type: ignore[override]
                   namespace: None = None) -> argparse.Namespace:
        """As argparse's, but words left over are the command's mistake, said in its name
        (argparse reports them as the top-level parser's)."""
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            raise CommandLineError(getattr(parsed, "command_name", self.prog),
                                   f"unrecognized arguments: {' '.join(extras)}")
        return parsed


def add_global_options(parser: argparse.ArgumentParser | argparse._ArgumentGroup,
                       default: Any = None) -> None:
    """``--version`` and ``--stack``; ``default`` SUPPRESS where a command repeats them."""
    parser.add_argument("--version", action="version", version=f"runa {__version__}")
    parser.add_argument(
        "--stack",
        metavar="NAME",
        default=default,
        help="the stack to talk to: u<uid> (your own, the default) or 'shared' "
        "(also RUNA_STACK)",
    )


def subcommand_parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """Every parser below ``parser`` (commands and their actions), each once."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            seen: list[argparse.ArgumentParser] = []
            for sub in action.choices.values():
                if all(sub is not other for other in seen):
                    seen.append(sub)
                    yield sub
                    yield from subcommand_parsers(sub)


def finish(root: argparse.ArgumentParser) -> None:
    """Give each command its name and the global options, once every command is registered.

    The root's values stay when a command's global option is not given (SUPPRESS), and the
    deepest parser's ``command_name`` wins, as argparse copies a subparser's values last.
    """
    root.set_defaults(command_name=root.prog)
    for sub in subcommand_parsers(root):
        sub.set_defaults(command_name=sub.prog)
        add_global_options(sub.add_argument_group("global options (also before the command)"),
                           default=argparse.SUPPRESS)
