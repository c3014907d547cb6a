"""``runa --help`` for a newcomer (start here, commands by purpose) and ``runa help terms``.

argparse lists subcommands in one flat block; a person in their first hour needs the two
commands that get them talking first, then the rest grouped by what they are for, and a
word list for Runa's own names (splinfer, tieto, gilgul, …).
"""

from __future__ import annotations

import argparse

from runa.errors import UsageError

START_HERE = (
    ("runa up -d", "start Runa in the background (the model, the bus and the services)"),
    ("runa chat", "talk with the model; /help lists the chat commands, Ctrl-D leaves"),
)

#: (heading, command names), in the order ``runa --help`` shows them.
GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Talk with the model", ("chat", "ask", "memory")),
    ("Answer from your documents (tieto, the retrieval service)",
     ("ingest", "recall", "topic")),
    ("Run and look after Runa", ("up", "down", "status", "ps", "models", "config", "policy",
                                 "audit", "secret", "api-key")),
    ("For operators and developers", ("bus", "units", "daemon")),
    ("Help", ("help",)),
)

TERMS: tuple[tuple[str, str], ...] = (
    ("stack", "one running Runa: its bus, its services and its state. Yours is u<uid>; "
     "'shared' is the machine's (--stack, RUNA_STACK)."),
    ("splinfer", "the inference service: it holds the model (llama.cpp), answers 'runa ask' "
     "and 'runa chat', and keeps the conversations."),
    ("splinter", "the bus: shared memory through which Runa's processes talk, with a small "
     "key-value store ('runa bus')."),
    ("keeper", "the bus's caretaker ('runa daemon splinter'): creates the buses, clears "
     "what dead processes left, lets old keys decay."),
    ("tieto", "the retrieval service: indexes your documents into topics ('runa ingest') "
     "and finds the passages that answer a question ('runa recall', '/rag on TOPIC')."),
    ("whisper", "the semantic policy tier: judges what a prompt or an answer means, for "
     "the policy set to block it, note it or let it be (docs/whisper.md)."),
    ("gilgul", "reincarnation: restarts a component that failed or stopped heartbeating, "
     "backs off, and holds it after too many failures ('runa audit' shows what it did); "
     "under systemd a daemon of its own, without systemd inside 'runa up'."),
    ("supervisor", "what 'runa up' runs where there is no systemd: it starts the components "
     "as child processes and lets gilgul restart them."),
    ("component", "one replaceable process of Runa (splinter, splinfer, tieto, gilgul …), "
     "declared once in the component registry (runa/data/components.toml, "
     "/etc/runa/components.d): its daemon, its settings, its unit."),
    ("incarnation", "one life of a component: 0 at the first start, one more at each "
     "restart ('runa audit' lists them)."),
    ("heartbeat", "the '<component>:health' key each component rewrites every second; one "
     "that stops is restarted by gilgul."),
    ("protocol", "what requests and answers on the bus look like (docs/protocol.md); "
     "clients, services and 'runa config check' share one definition."),
    ("persona", "a named system prompt with its own sampling settings ('/persona' in chat; "
     "files in runa/data/personas and ~/.config/runa/personas)."),
    ("conversation", "the messages of one chat, kept by splinfer, with a saved model state so "
     "resuming is fast ('runa chat --list')."),
    ("topic", "a named collection of ingested documents in tieto."),
    ("alethia", "Runa's memory: every chat turn, encrypted record by record, hash-chained and "
     "signed by day ('runa memory'; docs/memory.md)."),
    ("model state", "llama.cpp's memory of a conversation (the KV cache), saved to disk; "
     "it only saves time and is dropped when old or over the size limit."),
    ("GGUF", "the model file format llama.cpp reads; any GGUF chat model can replace the "
     "small default (runa models setup explains how)."),
)


def commands_text(helps: dict[str, str]) -> str:
    """The start-here block and the grouped commands, with each command's one-line help."""
    width = max(len(name) for name in helps)
    lines = ["Start here:"]
    lines += [f"  {command:<{width + 8}}{text}" for command, text in START_HERE]
    for heading, names in GROUPS:
        lines += ["", f"{heading}:"]
        lines += [f"  {name:<{width + 8}}{helps[name]}" for name in names if name in helps]
    missing = sorted(set(helps) - {name for _, names in GROUPS for name in names})
    if missing:
        lines += ["", "Other:"] + [f"  {name:<{width + 8}}{helps[name]}" for name in missing]
    return "\n".join(lines)


def terms_text() -> str:
    width = max(len(term) for term, _ in TERMS)
    lines = ["Runa's names, and what each thing does:", ""]
    lines += [f"  {term:<{width}}  {text}" for term, text in TERMS]
    return "\n".join(lines)


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "help", help="this overview; 'runa help terms' explains Runa's names",
        description="Without a topic: the overview of 'runa --help'. 'runa help terms' "
        "explains Runa's names (splinfer, tieto, gilgul, …); 'runa help COMMAND' shows "
        "that command's options.")
    parser.add_argument("topic", nargs="?", metavar="terms|COMMAND",
                        help="what to explain")
    parser.set_defaults(func=cmd_help)


def cmd_help(ctx: object, args: argparse.Namespace) -> int:
    root: argparse.ArgumentParser = args.root_parser
    if args.topic is None:
        root.print_help()
    elif args.topic == "terms":
        print(terms_text())
    else:
        subparsers = next(a for a in root._actions
                          if isinstance(a, argparse._SubParsersAction))
        command = subparsers.choices.get(args.topic)
        if command is None:
            raise UsageError(f"no help topic {args.topic!r}: try 'terms' or one of: "
                             f"{', '.join(sorted(subparsers.choices))}")
        command.print_help()
    return 0
