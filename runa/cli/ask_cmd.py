"""``runa ask``: one question to the running model, the answer streamed to stdout."""

from __future__ import annotations

import argparse
import sys
import uuid

from runa import stackbus as bus_mod
from runa.chat import SessionParams, in_pieces, intervention_summary, whisper_lines
from runa.cli.context import CliContext
from runa.cli.numbers import timeout_seconds
from runa.cli.voice import command_name, print_json, say
from runa.client import ServiceClient
from runa.errors import UsageError
from runa.memory_client import Turn, recorder_for
from runa.policy import PolicyLibrary
from runa.protocol.splinfer import chat

# llama.cpp's spellings, as `llama-cli` takes them; the bus carries the long names.
SAMPLING_FLAGS = (
    (("--temp",), float, "temp", "temperature; 0 = greedy (always the likeliest token)"),
    (("--top-k",), int, "top_k", "keep the K likeliest tokens (0 = off)"),
    (("--top-p",), float, "top_p", "nucleus sampling threshold (1 = off)"),
    (("--min-p",), float, "min_p", "drop tokens below P times the likeliest (0 = off)"),
    (("--repeat-penalty",), float, "repeat_penalty", "penalise repeats (1 = off)"),
    (("-n", "--n-predict"), int, "n_predict", "at most N tokens (-1 = until done)"),
    (("-s", "--seed"), int, "seed", "random seed (-1 = a new one each time)"),
)


def add_sampling_flags(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """The sampling flags, in their own help group (or in ``parser`` if it is a group)."""
    group = parser if isinstance(parser, argparse._ArgumentGroup) \
        else parser.add_argument_group("sampling (llama.cpp's options)")
    for flags, kind, dest, text in SAMPLING_FLAGS:
        group.add_argument(*flags, type=kind, dest=dest, default=None, help=text)


def sampling_params(args: argparse.Namespace) -> dict[str, object]:
    """The sampling flags given, checked by splinfer's own rules before anything is sent:
    a value out of range is a usage error (64) in every command that takes them."""
    given = {dest: getattr(args, dest) for _, _, dest, _ in SAMPLING_FLAGS
             if getattr(args, dest) is not None}
    return SessionParams(given).payload() if given else {}


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "ask",
        help="ask the running model one question; the answer streams to stdout",
        description="Send one question to splinfer over the bus and stream the answer to "
        "standard output; notes from the policy (whispers) go to standard error. Ctrl-C stops "
        "the answer. Exit status: 0 answered; 64 a bad option or sampling value (the message "
        "names it); 65 the request was refused (a prompt longer than the context); 66 no such "
        "policy set; 69 Runa is not running; 70 the model failed; 75 busy, try again; 77 the "
        "policy set is below the administrator's lock; 130 interrupted.",
        epilog="Example: runa ask --temp 0 'Write one sentence about the sea.'",
    )
    parser.add_argument("question", nargs="+", help="the question ('-' reads standard input)")
    parser.add_argument("--system", metavar="TEXT", help="a system prompt for this question")
    parser.add_argument("--policy", metavar="NAME",
                        help="answer under policy set NAME ('runa policy list'; checked against "
                        "the administrator's lock first)")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object (text, counters, the policy set, its "
                        "interventions and whispers) instead of streaming")
    parser.add_argument("--timeout", type=float, default=60.0, metavar="S",
                        help="give up when nothing arrives for S seconds and splinfer has no "
                        "heartbeat, or died and has not come back (0.1 to 86400; default: "
                        "%(default)s)")
    add_sampling_flags(parser)
    parser.set_defaults(func=cmd_ask)


def cmd_ask(ctx: CliContext, args: argparse.Namespace) -> int:
    timeout_seconds(args.timeout)
    params = sampling_params(args)
    question = sys.stdin.read() if args.question == ["-"] else " ".join(args.question)
    if not question.strip():
        raise UsageError("the question is empty")
    if args.policy is not None:  # before anything is sent: locked 77, unknown 66
        PolicyLibrary.for_stack(ctx.paths, ctx.config).resolve(args.policy, "--policy")
    payload = chat(question, params=params, system=args.system or None, policy=args.policy)
    pieces: list[str] = []

    def asked_again(notice: str) -> None:
        """splinfer died mid-answer and answers again: what was printed is void."""
        if not args.json and pieces:
            sys.stdout.write("\n")
            sys.stdout.flush()
        pieces.clear()
        say(command_name(args), notice)

    with bus_mod.connect(ctx.config, ctx.stack) as bus, ServiceClient(
            bus, "splinfer", "ask", on_restart=asked_again) as client:
        final: dict[str, object] = {}
        upload = in_pieces(lambda query: client.call(query, idle_timeout=args.timeout),
                           payload, bus.geometry.max_envelope)
        try:
            for envelope in client.request(payload, idle_timeout=args.timeout,
                                           before_send=upload):
                piece = envelope.payload.get("text", "")
                pieces.append(piece)
                if not args.json and piece:
                    sys.stdout.write(piece)
                    sys.stdout.flush()
                if envelope.eof:
                    final = envelope.payload
        except KeyboardInterrupt:
            client.cancel()
            if not args.json:
                sys.stdout.write("\n")
            say(command_name(args), "answer stopped")
            return 130
        memory = recorder_for(ctx.config, ctx.registry, ctx.paths, ctx.stack, "ask",
                              lambda text: say(command_name(args), text))
        try:
            memory.record(Turn.answered(str(final.get("conversation") or uuid.uuid4().hex),
                                        question, "".join(pieces), final))
        finally:
            memory.close()
    if args.json:
        print_json({"policy": None, "interventions": [], "whispers": [], **final,
                    "text": "".join(pieces)})
        return 0
    sys.stdout.write("\n")
    sys.stdout.flush()
    for line in whisper_lines(final):
        print(line, file=sys.stderr, flush=True)
    summary = intervention_summary(final) if sys.stderr.isatty() else None
    if summary:
        print(summary, file=sys.stderr, flush=True)
    return 0
