"""``runa recall "question" --topic T``: the chunks of a topic that answer a question best."""

from __future__ import annotations

import argparse
import sys
import textwrap
from typing import TYPE_CHECKING

from runa.cli.ask_cmd import add_sampling_flags, sampling_params
from runa.cli.context import CliContext
from runa.cli.numbers import timeout_seconds
from runa.cli.voice import command_name, print_json, say
from runa.errors import UsageError
from runa.protocol.answer import sources_heading
from runa.protocol.tieto import MODES, UNCITED, check_number

if TYPE_CHECKING:  # the index and the model load only when the command runs
    from runa.protocol.answer import Hit
    from runa.tieto import Local, Remote


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "recall",
        help="find the passages of a topic that answer a question (tieto)",
        description="Search TOPIC by meaning (the embedding model) and by words (full text), "
        "fused by their standardised scores (tieto.fusion), and print the best chunks with "
        "their source file, line, the score they are ranked by and their cosine similarity. "
        "Filters narrow the candidates before "
        "the search: KEY OP VALUE with "
        "OP one of = != < <= > >= in; numbers and dates compare as such, a missing key never "
        "matches, a list matches if any item does. Exit status: 0 (also with no hits); "
        "64 a bad filter or a number out of range; 65 the topic was built with another "
        "embedding model; 66 no such topic, or the embedding model is not installed (run "
        "'runa models setup'); with "
        "--complete also 69 Runa (splinfer) is not running, 130 interrupted. When the tieto "
        "daemon runs it answers (its model stays loaded), else this command does.",
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
    parser.add_argument("--json", action="store_true", help="print the hits (or the answer) "
                        "as JSON")
    answer = parser.add_argument_group("answering (--complete)")
    answer.add_argument("--complete", action="store_true",
                        help="answer the question with the running model from the best chunks, "
                        "citing them as [1], [2], ...; says it does not know when no chunk "
                        "reaches the sieve; an answer citing none of them is marked, or "
                        "refused with tieto.uncited = refuse")
    answer.add_argument("--sieve", type=float, default=None, metavar="X",
                        help="least cosine similarity of a source (default: tieto.sieve)")
    answer.add_argument("--uncited", choices=UNCITED, default=None,
                        help="an answer citing none of its sources: mark it, or refuse it "
                        "(\"I don't know\" and the best passage) (default: tieto.uncited)")
    answer.add_argument("--timeout", type=float, default=60.0, metavar="S",
                        help="give up when nothing arrives for S seconds and the service has "
                        "no heartbeat (0.1 to 86400; default: %(default)s)")
    add_sampling_flags(answer)
    parser.set_defaults(func=cmd_recall)


def check_numbers(args: argparse.Namespace) -> None:
    """UsageError (OutOfRange) naming the flag and its range for a number out of it."""
    for field, value in (("k", args.k), ("min_similarity", args.min_similarity),
                         ("sieve", args.sieve)):
        if value is not None:
            check_number(field, value, "--" + field.replace("_", "-"))
    timeout_seconds(args.timeout)
    sampling_params(args)  # checked here too, before anything is opened


def _overrides(args: argparse.Namespace) -> dict[str, object]:
    chosen = {"k": args.k, "mode": args.mode, "min_similarity": args.min_similarity}
    return {key: value for key, value in chosen.items() if value is not None}


def format_hit(rank: int, hit: Hit, width: int = 100) -> str:
    """The hit's place, the score the hits are sorted by, and its cosine beside it."""
    where = f"{hit.source}:{hit.line}" if hit.source else hit.record
    similarity = "" if hit.similarity is None else f"  similarity {hit.similarity:.3f}"
    body = textwrap.indent(hit.text.strip(), "   ")
    return f"{rank}. {where} (chunk {hit.chunk})  score {hit.score:.3f}{similarity}\n{body}\n"


def cmd_recall(ctx: CliContext, args: argparse.Namespace) -> int:
    from runa.tieto import open_tieto

    question = sys.stdin.read() if args.question == ["-"] else " ".join(args.question)
    if not args.complete and (args.sieve is not None or args.uncited or sampling_params(args)):
        raise UsageError("--sieve, --uncited and the sampling options go with "
                         "--complete")
    check_numbers(args)
    with open_tieto(ctx.config, ctx.paths, ctx.stack, "recall", timeout=args.timeout) as tieto:
        if args.complete:
            return answer(tieto, question, args, args.uncited or ctx.config["tieto.uncited"])
        hits = tieto.recall(question, args.topic, args.filters, **_overrides(args))
    if args.json:
        print_json({"topic": args.topic, "question": question, "sorted_by": "score",
                    "hits": [h.as_dict() for h in hits]})
        return 0
    if not hits:
        print(f"no chunk of topic {args.topic} matches", file=sys.stderr)
    for rank, hit in enumerate(hits, start=1):
        print(format_hit(rank, hit))
    return 0


def format_source(source: dict[str, object]) -> str:
    where = f"{source['source']}:{source['line']}" if source.get("source") else source["record"]
    score, similarity = source.get("score"), source.get("similarity")
    tail = f"  score {score:.3f}" if isinstance(score, float) else ""
    tail += f"  similarity {similarity:.3f}" if isinstance(similarity, float) else ""
    return f"[{source['n']}] {where} (chunk {source['chunk']}){tail}"


def answer(tieto: Local | Remote, question: str, args: argparse.Namespace, uncited: str
           ) -> int:
    """Stream the grounded answer, then its sources (the cited ones, else all given)."""
    overrides = {**_overrides(args), "sieve": args.sieve, "uncited": uncited}
    pieces: list[str] = []
    head: dict[str, object] = {}
    final: dict[str, object] = {}
    try:
        for payload in tieto.complete(question, args.topic, args.filters,
                                      params=sampling_params(args), **overrides):
            if "sources" in payload:
                head = payload
                continue
            piece = str(payload.get("text", ""))
            pieces.append(piece)
            if not args.json and piece:
                sys.stdout.write(piece)
                sys.stdout.flush()
            if payload.get("eof"):
                final = payload
    except KeyboardInterrupt:
        tieto.cancel()
        sys.stdout.write("\n")
        say(command_name(args), "answer stopped")
        return 130
    sources = list(head.get("sources") or [])  # type: ignore[call-overload]
    cited = [int(n) for n in final.get("citations") or []]  # type: ignore[attr-defined]
    if args.json:
        final = {k: v for k, v in final.items() if k not in ("eof", "text")}
        print_json({"topic": args.topic, "question": question, "answer": "".join(pieces),
                    **final, "sources": sources,
                    "best_similarity": head.get("best_similarity"),
                    "sieve": head.get("sieve"), "uncited": head.get("uncited")})
        return 0
    sys.stdout.write("\n")
    if sources:
        shown = [s for s in sources if s["n"] in cited] or sources
        print("\n" + sources_heading(final))
        for source in shown:
            print(format_source(source))
    return 0
