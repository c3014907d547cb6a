"""``runa api-key show|rotate``: the bearer key of the OpenAI-compatible API (threadwell)."""

from __future__ import annotations

import argparse

from runa.cli.context import CliContext
from runa.cli.secret_cmd import client
from runa.crypto.process import undumpable
from runa.threadwell import apikey

EXIT_TEXT = ("Exit status: 0 done; 69 Runa is not running, or the vault is locked ('runa "
             "secret unlock').")


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "api-key", help="show or rotate the key of the OpenAI-compatible API",
        description="The bearer key a client of Runa's OpenAI-compatible API (threadwell) "
        "sends ('Authorization: Bearer KEY'; OPENAI_API_KEY for the official clients). It is "
        f"kept in the vault as {apikey.SECRET}, made on first use. " + EXIT_TEXT)
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    actions.add_parser("show", help="print the key (made now if there is none)",
                       description="Print the API key on standard output. " + EXIT_TEXT)
    actions.add_parser("rotate", help="replace the key with a new one and print it",
                       description="Make a new API key and print it; a running threadwell "
                       "refuses the old one within seconds (it asks the vault again before it "
                       "trusts a key held longer than that). " + EXIT_TEXT)
    parser.set_defaults(func=cmd_api_key)


def cmd_api_key(ctx: CliContext, args: argparse.Namespace) -> int:
    undumpable()  # the key is in this process's memory from here on
    with client(ctx) as asker:
        key = apikey.rotate(asker) if args.action == "rotate" else apikey.fetch(asker)
    print(key)
    return 0
