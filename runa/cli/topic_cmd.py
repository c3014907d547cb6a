"""``runa topic list|snapshot|restore``: tieto's topics as wholes (one SQLite file each)."""

from __future__ import annotations

import argparse
from pathlib import Path

from runa.cli.context import CliContext
from runa.cli.voice import print_json


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "topic",
        help="list tieto's topics, snapshot one to a file, restore one from a snapshot",
        description="A topic is one SQLite file (texts, metadata, vectors, full-text index). "
        "'snapshot' copies it with SQLite's online backup API, consistent even while it is "
        "in use; 'restore' checks that a file is a topic snapshot, then replaces the topic "
        "with it (creating the topic if needed), so it answers exactly as when the snapshot "
        "was taken. The tieto daemon does it when it runs. Exit status: 0 done; 64 a bad "
        "topic name; 66 no such topic or snapshot file; 74 the snapshot cannot be written or "
        "read.",
        epilog="Example: runa topic snapshot notes ~/notes-2026-11.sqlite",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="the topics")
    listing.add_argument("--json", action="store_true",
                         help="machine-readable output: [{\"topic\": NAME}, ...]")
    snap = actions.add_parser("snapshot", help="copy TOPIC to the new file FILE")
    snap.add_argument("topic", metavar="TOPIC")
    snap.add_argument("file", type=Path, metavar="FILE")
    back = actions.add_parser("restore", help="replace TOPIC with the snapshot FILE")
    back.add_argument("topic", metavar="TOPIC")
    back.add_argument("file", type=Path, metavar="FILE")
    parser.set_defaults(func=cmd_topic)


def cmd_topic(ctx: CliContext, args: argparse.Namespace) -> int:
    from runa.tieto import open_tieto

    with open_tieto(ctx.config, ctx.paths, ctx.stack, "topic") as tieto:
        if args.action == "list" and args.json:
            print_json([{"topic": topic} for topic in tieto.topics()])
        elif args.action == "list":
            for topic in tieto.topics():
                print(topic)
        elif args.action == "snapshot":
            size = tieto.snapshot(args.topic, args.file)
            print(f"topic {args.topic}: snapshot {args.file} ({size} bytes)")
        else:
            tieto.restore(args.topic, args.file)
            print(f"topic {args.topic}: restored from {args.file}")
    return 0
