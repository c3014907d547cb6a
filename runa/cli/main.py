"""Entry point of the ``runa`` command.

Exit status: 0 success; 1 a failure the message explains; 2 a bad command line
(argparse); 64 a request that cannot be done as asked; 69 a needed service is
not running; 70 an internal error; 78 a configuration error. Each subcommand's
``--help`` says more.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from runa import __version__
from runa.cli import (
    ask_cmd,
    audit_cmd,
    bus_cmd,
    chat_cmd,
    config_cmd,
    daemon_cmd,
    help_cmd,
    ingest_cmd,
    models_cmd,
    recall_cmd,
    stack_cmd,
    topic_cmd,
    units_cmd,
)
from runa.cli.context import CliContext
from runa.errors import RunaError
from runa.paths import check_stack_name

COMMAND_MODULES = (chat_cmd, ask_cmd, stack_cmd, models_cmd, bus_cmd, config_cmd, units_cmd,
                   daemon_cmd, ingest_cmd, recall_cmd, topic_cmd, audit_cmd, help_cmd)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="runa",
        usage="runa [--stack NAME] COMMAND [OPTIONS]",
        description="Runa: a local, offline LLM runtime of small cooperating processes. "
        "Nothing leaves this machine.",
        epilog="Run 'runa COMMAND --help' for the options of one command, 'runa help terms'\n"
        "for what Runa's names mean. Docs: docs/ in the source tree, man runa(1) when installed.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"runa {__version__}")
    parser.add_argument(
        "--stack",
        metavar="NAME",
        help="the stack to talk to: u<uid> (your own, the default) or 'shared' "
        "(also RUNA_STACK)",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True,
                                     help=argparse.SUPPRESS)
    for module in COMMAND_MODULES:
        module.register(commands)
    helps = {action.dest: action.help or "" for action in commands._choices_actions}
    parser.description = f"{parser.description}\n\n{help_cmd.commands_text(helps)}"
    parser.set_defaults(root_parser=parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    ctx = CliContext.from_environ(stack=args.stack)
    try:
        check_stack_name(ctx.stack, "--stack" if args.stack else "RUNA_STACK")
        return int(args.func(ctx, args) or 0)
    except RunaError as error:
        print(f"runa: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `runa status | head`: stop quietly, as other tools do
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - stdout is gone for good
        return 141


if __name__ == "__main__":
    sys.exit(main())
