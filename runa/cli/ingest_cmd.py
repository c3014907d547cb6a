"""``runa ingest PATH... --topic T``: bring documents into a topic's index, incrementally."""

from __future__ import annotations

import argparse
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from runa.cli.context import CliContext
from runa.cli.numbers import timeout_seconds
from runa.cli.voice import command_name, print_json, say
from runa.errors import UsageError, error_line
from runa.tieto import COLUMN_TYPES, parse_declaration

if TYPE_CHECKING:  # the index and the model load only when the command runs
    from runa.client import ServiceClient
    from runa.tieto import IngestEvent, IngestReport


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "ingest",
        help="add documents to a topic's index (tieto)",
        description="Index Markdown/text files (with optional YAML front matter) and JSONL "
        'files (one {"text": ..., "meta": {...}} per line) into TOPIC, creating it if needed. '
        "Directories are walked for .md, .markdown, .txt, .text and .jsonl files. When the "
        "tieto daemon runs it does the work (its model stays loaded), else this command "
        "does. Unchanged "
        "files are skipped (sha256); files gone from a directory given again are removed. "
        "A broken file is reported with its line and the rest goes on. Exit status: 0 all "
        "ingested; 65 some files or lines failed (each is named on standard error); 64 bad "
        "usage; 66 the embedding model is not installed (run 'runa models setup'). Anything "
        "that is not a regular file (a FIFO, a socket) is skipped and named. Ctrl-C stops the "
        "ingest; the files ingested until then are kept (exit 130). --status lists the tieto "
        "daemon's running and waiting ingests with their ids; --cancel stops one (exit 66: "
        "no such ingest).",
        epilog="Example: runa ingest ~/notes --topic notes --filterable year:integer",
    )
    parser.add_argument("paths", nargs="*", type=Path, metavar="PATH",
                        help="files or directories")
    parser.add_argument("--topic", metavar="T", help="the topic to add to")
    parser.add_argument("--status", action="store_true",
                        help="list the ingests the tieto daemon runs or has waiting: id, state, "
                        "topic, progress, paths (with --json: as JSON)")
    parser.add_argument("--cancel", nargs="?", const="", metavar="ID",
                        help="cancel the ingest ID (its id as --status shows it, or all of it); "
                        "without ID the running one. A running ingest stops at its next file "
                        "or embedding batch and keeps what it did")
    parser.add_argument(
        "--filterable", action="append", metavar="KEY:TYPE", type=parse_declaration,
        help="declare a front-matter key filterable in the vector search itself (repeat for "
        f"more; TYPE is one of {', '.join(COLUMN_TYPES)}); given again with other keys, the "
        "topic's declared keys are replaced. Undeclared keys can be filtered on too.")
    parser.add_argument("--rebuild", action="store_true",
                        help="start the topic over: forget everything it holds, then ingest")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="no progress, only problems and the summary")
    parser.add_argument("--timeout", type=float, default=60.0, metavar="S",
                        help="when the tieto daemon does the work: give up when nothing "
                        "arrives for S seconds and it has no heartbeat; with --cancel: wait "
                        "up to S seconds for the ingest to stop (0.1 to 86400; default: "
                        "%(default)s)")
    parser.set_defaults(func=cmd_ingest)


class IngestProgress:
    """One updating line on a terminal; a line per changed file otherwise; problems always."""

    def __init__(self, stream: TextIO = sys.stderr, quiet: bool = False,
                 command: str = "runa ingest") -> None:
        self.stream = stream
        self.command = command
        self.tty = stream.isatty()
        self.quiet = quiet
        self.width = 0
        self.ingested = 0
        """Files ingested so far: what an interrupted ingest keeps."""

    def _line(self, text: str) -> None:
        if self.tty:
            self.stream.write("\r" + text.ljust(self.width)[: max(self.width, len(text))])
            self.width = len(text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def _clear(self) -> None:
        if self.tty and self.width:
            self.stream.write("\r" + " " * self.width + "\r")
            self.width = 0

    def __call__(self, event: IngestEvent) -> None:
        if event.stage in ("failed", "skipped"):
            self._clear()
            self.stream.write(error_line(self.command, event.message) + "\n")
            return
        if event.stage == "ingested":
            self.ingested += 1
        if self.quiet:
            return
        where = f"[{event.done}/{event.total}]" if event.total else ""
        if event.stage == "embed":
            if self.tty:
                self._line(f"{where} {event.path}: embedded {event.chunks} chunks")
        elif event.stage == "ingested":
            self._line(f"{where} {event.path}: {event.chunks} chunks")
        elif event.stage == "removed":
            self._line(f"removed {event.path}")
        elif event.stage == "unchanged" and self.tty:
            self._line(f"{where} {event.path}: unchanged")

    def finish(self) -> None:
        self._clear()


def summary(topic: str, report: IngestReport) -> str:
    parts = [f"{report.ingested} ingested ({report.chunks_embedded} chunks embedded)",
             f"{report.unchanged} unchanged"]
    if report.removed:
        parts.append(f"{report.removed} removed")
    if report.failed:
        parts.append(f"{report.failed} with problems")
    if report.skipped:
        parts.append(f"{len(report.skipped)} skipped (not regular files)")
    return f"topic {topic}: {report.files} files: {', '.join(parts)} in {report.seconds:.1f} s"


def cmd_ingest(ctx: CliContext, args: argparse.Namespace) -> int:
    from runa.tieto import open_tieto

    timeout_seconds(args.timeout)
    if args.status or args.cancel is not None:
        if args.paths or args.topic or (args.status and args.cancel is not None):
            raise UsageError("--status and --cancel take no PATH or --topic, nor each other")
        return _status(ctx, args) if args.status else _cancel(ctx, args)
    if not args.paths or not args.topic:
        raise UsageError("give PATH... and --topic T (or --status, or --cancel)")
    progress = IngestProgress(quiet=args.quiet, command=command_name(args))
    try:
        with open_tieto(ctx.config, ctx.paths, ctx.stack, "ingest",
                        timeout=args.timeout) as tieto:
            try:
                report = tieto.ingest(args.paths, args.topic, filterable=args.filterable,
                                      rebuild=args.rebuild, progress=progress)
            except KeyboardInterrupt:
                tieto.cancel()  # the daemon's ingest stops at its next file or batch
                progress.finish()
                say(command_name(args), "ingest stopped; the files ingested until then are "
                    f"kept ({progress.ingested} this time)")
                return 130
    finally:
        progress.finish()
    if args.json:
        print_json({"topic": args.topic, **report.as_dict()})
    else:
        print(summary(args.topic, report), file=sys.stderr)
    return 0 if report.ok else 65


def _daemon(ctx: CliContext) -> ServiceClient | None:
    """A client of the running tieto daemon, or None when it does not run."""
    from runa import stackbus as bus_mod
    from runa.client import ServiceClient, ServiceUnavailable

    try:
        bus = bus_mod.connect(ctx.config, ctx.stack)
    except bus_mod.BusNotRunning:
        return None
    with ExitStack() as opened:  # closed unless the client is handed on, bus included
        opened.callback(bus.close)
        client = opened.enter_context(ServiceClient(bus, "tieto", "ingest"))
        try:
            client.check_running(grace=0.0)
        except ServiceUnavailable:
            return None
        opened.pop_all()
    return client


def _status(ctx: CliContext, args: argparse.Namespace) -> int:
    from runa.tieto import list_ingests

    client = _daemon(ctx)
    if client is None and args.json:
        print_json([])  # nothing runs in the background
        return 0
    if client is None:
        print("tieto is not running: no ingest runs in the background (one without it runs "
              "inside the command that started it)")
        return 0
    with client.bus, client:
        ingests = list_ingests(client)
    if args.json:
        print_json([vars(i) for i in ingests])
        return 0
    if not ingests:
        print("no ingests running or waiting")
        return 0
    rows = [("ID", "STATE", "TOPIC", "PROGRESS", "PATHS")] + [
        (i.short_id, i.state, i.topic, i.progress(), " ".join(i.paths)) for i in ingests]
    widths = [max(len(row[c]) for row in rows) for c in range(4)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)) + "  "
              + row[4])
    return 0


def _cancel(ctx: CliContext, args: argparse.Namespace) -> int:
    from runa.client import ServiceUnavailable
    from runa.tieto import cancel_ingest, find_ingest, list_ingests

    client = _daemon(ctx)
    if client is None:
        raise ServiceUnavailable("tieto is not running, so no ingest runs in the background; "
                                 "stop one running in its own command with Ctrl-C")
    with client.bus, client:
        target = find_ingest(list_ingests(client), args.cancel or None)
        last = cancel_ingest(client, target, args.timeout)
    waiting = "waiting " if last.state == "waiting" else ""
    say(command_name(args), f"cancelled the {waiting}ingest into {last.topic} "
        f"({last.short_id}); {last.kept()}")
    return 0
