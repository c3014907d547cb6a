"""``runa recall "question" --topic T``: the chunks of a topic that answer a question best."""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from typing import TYPE_CHECKING

from runa.cli.context import CliContext

if TYPE_CHECKING:  # the index and the model load only when the command runs
    from runa.tieto.recall import Hit

MODES = ("hybrid", "vector", "fts")


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "recall",
        help="find the passages of a topic that answer a question (tieto)",
        description="Search TOPIC by meaning (the embedding model) and by words (full text), "
        "fused by reciprocal rank, and print the best chunks with their source file, line and "
        "cosine similarity. Filters narrow the candidates before the search: KEY OP VALUE with "
        "OP one of = != < <= > >= in; numbers and dates compare as such, a missing key never "
        "matches, a list matches if any item does. Exit status: 0 (also with no hits); "
        "64 a bad filter; 65 the topic was built with another embedding model; 66 no such "
        "topic, or the embedding model is not installed (run 'runa models setup').",
        epilog="Example: runa recall 'how do I reset my password?' --topic notes "
        "--filter 'year>=2020' --filter 'lang in en,fi'",
    )
    parser.add_argument("question", nargs="+", help="the question ('-' reads standard input)")
    parser.add_argument("--topic", required=True, metavar="T", help="the topic to search")
    parser.add_argument("--filter", action="append", default=[], dest="filters", metavar="EXPR",
                        help="KEY OP VALUE, e.g. 'year>=2020' (repeat: all must match)")
    parser.add_argument("--k", "-k", type=int, default=None, metavar="N",
                        help="how many chunks (default: tieto.k)")
    parser.add_argument("--mode", choices=MODES, default=None,
                        help="hybrid, vector or fts (default: tieto.mode)")
    parser.add_argument("--min-similarity", type=float, default=None, metavar="X",
                        help="drop chunks below this cosine similarity (default: "
                        "tieto.min_similarity)")
    parser.add_argument("--json", action="store_true", help="print the hits as JSON")
    parser.set_defaults(func=cmd_recall)


def _overrides(args: argparse.Namespace) -> dict[str, object]:
    chosen = {"k": args.k, "mode": args.mode, "min_similarity": args.min_similarity}
    return {key: value for key, value in chosen.items() if value is not None}


def format_hit(rank: int, hit: Hit, width: int = 100) -> str:
    where = f"{hit.source}:{hit.line}" if hit.source else hit.record
    similarity = "" if hit.similarity is None else f"  similarity {hit.similarity:.3f}"
    body = textwrap.indent(hit.text.strip(), "   ")
    return f"{rank}. {where} (chunk {hit.chunk}){similarity}\n{body}\n"


def cmd_recall(ctx: CliContext, args: argparse.Namespace) -> int:
    from runa.tieto.api import Tieto, TietoSettings

    question = sys.stdin.read() if args.question == ["-"] else " ".join(args.question)
    tieto = Tieto(TietoSettings.from_config(ctx.config, ctx.paths))
    try:
        hits = tieto.recall(question, args.topic, args.filters, **_overrides(args))
    finally:
        tieto.close()
    if args.json:
        print(json.dumps({"topic": args.topic, "question": question,
                          "hits": [h.as_dict() for h in hits]}, indent=2, ensure_ascii=False))
        return 0
    if not hits:
        print(f"no chunk of topic {args.topic} matches", file=sys.stderr)
    for rank, hit in enumerate(hits, start=1):
        print(format_hit(rank, hit))
    return 0
