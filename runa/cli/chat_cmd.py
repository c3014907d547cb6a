"""``runa chat``: talk with the running model, one conversation at a time (runa.chat)."""

from __future__ import annotations

import argparse
import signal
import sys
from contextlib import ExitStack

from runa import bus as bus_mod
from runa.chat.files import ChatFiles, valid_conversation_id
from runa.chat.params import SessionParams
from runa.chat.repl import LineReader, Repl, StreamReader, TerminalReader
from runa.chat.session import ChatSession, Start, new_conversation_id
from runa.cli.ask_cmd import add_sampling_flags, sampling_params
from runa.cli.context import CliContext
from runa.client import ServiceClient
from runa.errors import UsageError


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "chat",
        help="talk with the running model (a REPL; resumes your last conversation)",
        description="A conversation with splinfer: answers stream as they are written, "
        "splinfer keeps the conversation (and its model state), and 'runa chat' resumes "
        "the last one. Ctrl-C stops an answer, Ctrl-D leaves; /help lists the commands "
        "(/persona, /new, /history, /params, /rag, /quit). When standard input is not a terminal, "
        "each line is one question and each answer is printed; it ends at the end of input. "
        "Exit status: 0 done; 64 a bad option or sampling value; 65 refused (unknown "
        "persona or conversation, a value splinfer will not take); 69 Runa is not running; "
        "70 the model failed; 75 busy, try again; 130 interrupted (piped input).",
        epilog="Examples: 'runa chat --persona tutor --temp 0.7'; "
        "'echo \"Name three colours.\" | runa chat --new'",
    )
    parser.add_argument("--new", action="store_true",
                        help="start a new conversation instead of resuming the last one")
    parser.add_argument("--conversation", metavar="ID",
                        help="resume conversation ID (with --new: start one under that id); "
                        "1-64 of A-Z a-z 0-9 _ . -")
    parser.add_argument("--persona", metavar="NAME",
                        help="talk to persona NAME (/persona lists them)")
    parser.add_argument("--timeout", type=float, default=60.0, metavar="S",
                        help="give up when nothing arrives for S seconds and splinfer has no "
                        "heartbeat (default: %(default)s)")
    add_sampling_flags(parser)
    parser.set_defaults(func=cmd_chat)


def starting_point(args: argparse.Namespace, files: ChatFiles) -> tuple[str, Start]:
    """The conversation id to use and how it was chosen (see ``Start``)."""
    if args.conversation is not None:
        if not valid_conversation_id(args.conversation):
            raise UsageError(f"runa chat: --conversation {args.conversation!r}: an id is 1 to "
                             "64 characters of A-Z a-z 0-9 _ . - (not . or ..)")
        return args.conversation, Start.EXPLICIT_NEW if args.new else Start.EXPLICIT
    remembered = None if args.new else files.last_conversation()
    if remembered is None:
        return new_conversation_id(), Start.FRESH
    return remembered, Start.RESUME


def cmd_chat(ctx: CliContext, args: argparse.Namespace) -> int:
    from runa.chat.rag import Retrieval  # numpy and the index load only for /rag
    from runa.tieto.access import open_tieto

    files = ChatFiles.for_person(ctx.env, ctx.stack)
    params = SessionParams(sampling_params(args))
    conversation, how = starting_point(args, files)
    interactive = sys.stdin.isatty() and sys.stdout.isatty()
    notices = sys.stdout if interactive else sys.stderr
    if interactive:  # Ctrl-C must stop answers even if started with SIGINT ignored
        signal.signal(signal.SIGINT, signal.default_int_handler)
    def asked_again(notice: str) -> None:
        """splinfer died mid-answer and answers again: what was printed so far is void."""
        if notices is not sys.stdout:
            print(file=sys.stdout, flush=True)  # the new answer starts on a line of its own
        print(f"\n[{notice}]", file=notices, flush=True)

    with bus_mod.connect(ctx.config, ctx.stack) as bus, ServiceClient(
            bus, "splinfer", "chat", on_restart=asked_again) as client, ExitStack() as stack:
        client.check_running(restart_wait=args.timeout)
        retrieval = Retrieval(lambda: open_tieto(ctx.config, ctx.paths, ctx.stack, "chat",
                                                 timeout=args.timeout))
        stack.callback(retrieval.close)
        session = ChatSession(client, conversation, persona=args.persona, params=params,
                              timeout=args.timeout, remember=files.remember,
                              retriever=retrieval)
        for notice in session.start(how):
            print(notice, file=notices)
        reader: LineReader = (TerminalReader(files.ensure_history()) if interactive
                              else StreamReader(sys.stdin))
        if interactive:
            print("Ctrl-C stops an answer, Ctrl-D leaves, /help lists the commands.",
                  file=notices)
        return Repl(session, reader, out=sys.stdout, notices=notices,
                    interactive=interactive).run()
