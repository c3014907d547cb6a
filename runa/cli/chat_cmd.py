"""``runa chat``: talk with the running model, one conversation at a time (runa.chat)."""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
from contextlib import ExitStack

from runa import stackbus as bus_mod
from runa.chat import (
    ChatFiles,
    ChatSession,
    LineReader,
    NotSupported,
    PastTurns,
    Repl,
    SessionParams,
    Start,
    StreamReader,
    TerminalReader,
    TypeAhead,
    conversations,
    new_conversation_id,
    valid_conversation_id,
)
from runa.cli.ask_cmd import add_sampling_flags, sampling_params
from runa.cli.context import CliContext
from runa.cli.numbers import timeout_seconds
from runa.cli.voice import command_name, print_json
from runa.client import ServiceClient
from runa.errors import UsageError
from runa.memory_client import connect, recorder_for
from runa.policy import PolicyLibrary
from runa.protocol.splinfer import request


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "chat",
        help="talk with the running model (a REPL; resumes your last conversation)",
        description="A conversation with the model: answers stream as they are written, "
        "the inference service (splinfer) keeps the conversation (and its model state), and "
        "'runa chat' resumes the last one. Enter sends, Alt-Enter starts a new line; Ctrl-C "
        "stops an answer, Ctrl-D leaves; /help lists the commands (/persona, /policy, /new, "
        "/conversations, /resume, /history, /save, /params, /rag, /remember, /multiline, "
        "/quit). When "
        "standard input is not a terminal, each line is one question in a conversation of "
        "its own (unless --conversation names one) and each answer is printed; it ends at "
        "the end of input. "
        "Exit status: 0 done; 64 a bad option or sampling value; 65 refused (a value "
        "splinfer will not take); 66 no such persona, policy set or conversation; 69 Runa is "
        "not running; 70 the model failed; 75 busy, try again; 77 the policy set is below the "
        "administrator's lock; 130 interrupted (piped input).",
        epilog="Examples: 'runa chat --persona tutor --temp 0.7'; "
        "'echo \"Name three colours.\" | runa chat'; 'runa chat --list'; "
        "'runa chat --export 3f2a > chat.md'",
    )
    parser.add_argument("--new", action="store_true",
                        help="start a new conversation instead of resuming the last one")
    parser.add_argument("--conversation", metavar="ID",
                        help="resume conversation ID, or the one whose id starts with ID "
                        "(with --new: start one under that id; 1-64 of A-Z a-z 0-9 _ . -)")
    found = parser.add_argument_group(
        "finding conversations (ID: the whole id or any unique start of it)")
    found.add_argument("--list", action="store_true",
                       help="list the kept conversations, the latest used first, and leave")
    found.add_argument("--json", action="store_true", help="with --list: machine-readable")
    found.add_argument("--export", metavar="ID",
                       help="print conversation ID (both sides) and leave")
    found.add_argument("--format", choices=("md", "json"), default="md",
                       help="with --export: Markdown (the default) or JSON")
    found.add_argument("--delete", metavar="ID",
                       help="delete conversation ID: its history and its saved model state")
    parser.add_argument("--persona", metavar="NAME",
                        help="talk to persona NAME (/persona lists them)")
    parser.add_argument("--policy", metavar="NAME",
                        help="run the conversation under policy set NAME from now on (/policy "
                        "lists them; checked against the administrator's lock first)")
    parser.add_argument("--timeout", type=float, default=60.0, metavar="S",
                        help="give up when nothing arrives for S seconds and splinfer has no "
                        "heartbeat (0.1 to 86400; default: %(default)s)")
    add_sampling_flags(parser)
    parser.set_defaults(func=cmd_chat)


def starting_point(args: argparse.Namespace, files: ChatFiles, *,
                   interactive: bool = True) -> tuple[str, Start]:
    """The conversation id to use and how it was chosen (see ``Start``).

    Piped input gets a conversation of its own: a script's questions must not become
    the conversation the person's next ``runa chat`` resumes.
    """
    if args.conversation is not None:
        check_id_option("--conversation", args.conversation)
        return args.conversation, Start.EXPLICIT_NEW if args.new else Start.EXPLICIT
    remembered = None if args.new or not interactive else files.last_conversation()
    if remembered is None:
        return new_conversation_id(), Start.FRESH
    return remembered, Start.RESUME


def check_id_option(option: str, value: str) -> None:
    if not valid_conversation_id(value):
        raise UsageError(f"{option} {value!r}: an id is 1 to 64 characters of "
                         "A-Z a-z 0-9 _ . - (not . or ..)")


def cmd_chat(ctx: CliContext, args: argparse.Namespace) -> int:
    timeout_seconds(args.timeout)
    managing = [name for name in ("list", "export", "delete") if getattr(args, name)]
    if len(managing) > 1:
        raise UsageError(f"--{managing[0]} and --{managing[1]} do not go together")
    if args.json and managing != ["list"]:
        raise UsageError("--json goes with --list (--export takes --format json)")
    if args.format != "md" and managing != ["export"]:
        raise UsageError("--format goes with --export ID")
    if managing and managing[0] != "list":
        check_id_option(f"--{managing[0]}", getattr(args, managing[0]))
    if managing:
        return manage(ctx, args, managing[0])
    return converse(ctx, args)


def manage(ctx: CliContext, args: argparse.Namespace, what: str) -> int:
    """--list, --export ID, --delete ID: answered by splinfer, no REPL."""
    with bus_mod.connect(ctx.config, ctx.stack) as bus, ServiceClient(bus, "splinfer",
                                                                       "chat") as client:
        client.check_running()
        session = ChatSession(client, "-", timeout=args.timeout)
        call = session.call
        if what == "list":
            found = conversations.listing(call)
            if args.json:
                print_json({"conversations": found.conversations,
                            "omitted": found.omitted,
                            "state_bytes": found.state_bytes,
                            "state_max_bytes": found.state_max_bytes,
                            "state_max_age_s": found.state_max_age_s})
            else:
                width = shutil.get_terminal_size((120, 24)).columns
                print("\n".join(conversations.table(found, width)))
            return 0
        conversation = conversations.resolve(call, getattr(args, what))
        if what == "export":
            sys.stdout.write(conversations.render(
                conversations.full_history(call, conversation), args.format))
            return 0
        call(request("forget", conversation=conversation))
        files = ChatFiles.for_person(ctx.env, ctx.stack)
        if files.last_conversation() == conversation:
            files.forget_last()
        print(f"deleted conversation {conversation} (its history and saved state)")
        return 0


def converse(ctx: CliContext, args: argparse.Namespace) -> int:
    from runa.chat import Retrieval  # numpy and the index load only for /rag
    from runa.tieto import open_tieto

    files = ChatFiles.for_person(ctx.env, ctx.stack)
    params = SessionParams(sampling_params(args))
    policies = PolicyLibrary.for_stack(ctx.paths, ctx.config)
    if args.policy is not None:  # before anything is sent: locked 77, unknown 66
        policies.resolve(args.policy, "--policy")
    interactive = sys.stdin.isatty() and sys.stdout.isatty()
    conversation, how = starting_point(args, files, interactive=interactive)
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
        memory = recorder_for(ctx.config, ctx.registry, ctx.paths, ctx.stack, "chat",
                              lambda text: print(f"[{text}]", file=notices, flush=True))
        stack.callback(memory.close)
        retrieval = Retrieval(lambda: open_tieto(ctx.config, ctx.paths, ctx.stack, "chat",
                                                 timeout=args.timeout),
                              uncited=ctx.config["tieto.uncited"])
        stack.callback(retrieval.close)
        past = PastTurns(lambda: connect(ctx.config, ctx.paths, ctx.stack, "chat-remember"))
        stack.callback(past.close)
        if how is Start.EXPLICIT:
            conversation = session_resolve(client, conversation, args.timeout)
        session = ChatSession(client, conversation, persona=args.persona, params=params,
                              timeout=args.timeout,
                              remember=files.remember if interactive else _keep_nothing,
                              retriever=retrieval, policy=args.policy, policies=policies,
                              record=memory.record)
        session.max_request_bytes = bus.geometry.max_envelope
        for notice in session.start(how):
            print(notice, file=notices)
        memory.check()
        reader: LineReader = (TerminalReader(files.ensure_history()) if interactive
                              else StreamReader(sys.stdin))
        if interactive:
            print("Enter sends, Alt-Enter starts a new line; Ctrl-C stops an answer, Ctrl-D "
                  "leaves, /help lists the commands.", file=notices)
        return Repl(session, reader, out=sys.stdout, notices=notices, interactive=interactive,
                    typeahead=TypeAhead(sys.stdin.fileno()) if interactive else None,
                    speaker=command_name(args), past=past).run()


def _keep_nothing(_conversation: str) -> None:
    """Piped runs remember no conversation (see ``starting_point``)."""


def session_resolve(client: ServiceClient, prefix: str, timeout: float) -> str:
    """The full id ``--conversation`` names (a unique start is enough)."""
    try:
        return conversations.resolve(ChatSession(client, prefix, timeout=timeout).call, prefix)
    except conversations.ConversationNotFound:
        return prefix  # the session says there is none, with the way to start it
    except NotSupported:
        return prefix  # an older splinfer: whole ids only
