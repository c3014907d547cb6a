"""Entry point of the ``runa`` command.

Exit status: 0 success; 1 a failure the message explains; 64 a mistake on the
command line (as argparse finds it or as the command does); 66 it names something
that does not exist; 69 a needed service is not running; 70 an internal error; 78 a
configuration error. Each subcommand's ``--help`` says more (docs/runa.1.md: EXIT STATUS).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from runa.cli import (
    api_key_cmd,
    ask_cmd,
    audit_cmd,
    bus_cmd,
    chat_cmd,
    config_cmd,
    daemon_cmd,
    help_cmd,
    ingest_cmd,
    memory_cmd,
    models_cmd,
    policy_cmd,
    recall_cmd,
    secret_cmd,
    stack_cmd,
    topic_cmd,
    units_cmd,
)
from runa.cli.context import CliContext
from runa.cli.parser import CommandLineError, CommandParser, add_global_options, finish
from runa.cli.voice import command_name, say
from runa.errors import RunaError
from runa.paths import check_stack_name

COMMAND_MODULES = (chat_cmd, ask_cmd, stack_cmd, models_cmd, bus_cmd, config_cmd, units_cmd,
                   daemon_cmd, ingest_cmd, recall_cmd, topic_cmd, audit_cmd, policy_cmd,
                   secret_cmd, memory_cmd, api_key_cmd, help_cmd)


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog="runa",
        usage="runa [--stack NAME] COMMAND [OPTIONS]",
        description="Runa: a local, offline LLM runtime of small cooperating processes. "
        "Nothing leaves this machine.",
        epilog="Run 'runa COMMAND --help' for the options of one command, 'runa help terms'\n"
        "for what Runa's names mean. Docs: docs/ in the source tree, man runa(1) when installed.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_global_options(parser)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True,
                                     help=argparse.SUPPRESS, prog=parser.prog)
    for module in COMMAND_MODULES:
        module.register(commands)
    helps = {action.dest: action.help or "" for action in commands._choices_actions}
    parser.description = f"{parser.description}\n\n{help_cmd.commands_text(helps)}"
    parser.set_defaults(root_parser=parser)
    finish(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except CommandLineError as error:
        say(error.command, error)
        return error.exit_code
    ctx = CliContext.from_environ(stack=args.stack)
    try:
        check_stack_name(ctx.stack, "--stack" if args.stack else "RUNA_STACK")
        return int(args.func(ctx, args) or 0)
    except RunaError as error:
        say(command_name(args), error)
        return error.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `runa status | head`: stop quietly, as other tools do
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - stdout is gone for good
        return 141


if __name__ == "__main__":
    sys.exit(main())
