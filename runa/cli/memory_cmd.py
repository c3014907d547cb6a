"""``runa memory``: a person's way to alethia, Runa's encrypted and signed memory.

What needs the keys (list, show, export, forget, rotate-key, status) is asked of the alethia
daemon on its bus, sealed; what needs none works on the files directly, with the stack
down too: ``verify`` (the chains and signatures, with the public key), ``snapshot`` and
``restore`` (the files as encrypted as they are). docs/memory.md is the manual.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import json
import os
import sys
import textwrap
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from runa import stackbus
from runa.alethia import store
from runa.cli.context import CliContext
from runa.cli.since import FORMS, parse_since
from runa.cli.voice import command_name, print_json
from runa.errors import RunaError, UsageError
from runa.memory_client import (
    MemoryClient,
    MemoryFault,
    MemoryUnavailable,
    connect,
    index_state,
    search_refused,
)
from runa.protocol import memory as proto

if TYPE_CHECKING:
    from runa.tieto import Chunker

EX_FAILED, EX_CANTCREAT, EX_IOERR = 1, 73, 74
EXIT_TEXT = ("Exit status: 0 done; 1 verify found a problem (each is named); 64 a bad "
             "option or id; 65 ingest: a file could not be used (each is named; the others "
             "are stored); 66 no such record, conversation, snapshot file or PATH; 69 Runa or "
             "alethia is not running, or search has no embedding model; 73 the export file "
             "exists (--force replaces it); 74 a file could not be read or written, or is "
             "not a snapshot; 77 a memory key that "
             "does not open the store.")
#: ``search``'s matches unless --k says; the most the daemon gives.
SEARCH_K, MAX_K = 5, 50
#: Excerpts are wrapped to this width.
EXCERPT_WIDTH = 96
#: Which embedding model counts an ingest's word-pieces (alethia's, which embeds the
#: passages; the shipped one where that setting is unknown); word-pieces consecutive
#: passages share (tieto's default).
EMBEDDING_SETTING, CHUNK_OVERLAP = "alethia.embedding_model", 32
#: Export progress on a terminal: a line every this many records.
PROGRESS_EVERY = 500


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "memory",
        help="your memory (alethia): search, list, show, ingest, export, forget, verify, "
        "snapshot, restore",
        description="alethia remembers every chat turn (what you said, the answer, the "
        "conversation and persona, what the policy did: rule, action and tier, never the "
        "matched text), each record encrypted on its own, hash-chained, and signed by day, "
        "so tampering is named. list, show, export and forget ask the alethia daemon, which "
        "holds the keys (from coven); verify, snapshot and restore work on the files and "
        "need no key, so verify works with Runa stopped. Turning recording off: '[memory] "
        "record = false' in ~/.config/runa/runa.toml. " + EXIT_TEXT,
        epilog="Examples: runa memory search \"the trip to Oslo\" --since 7d; "
        "runa memory ingest ~/notes; runa memory list --since 2d; "
        "runa memory show 2026-12-07/3; "
        "runa memory export ~/memory.jsonl; runa memory forget --conversation 3f2a9c; "
        "runa memory verify; runa memory snapshot ~/memory-2026-12.snap. docs/memory.md "
        "says more.")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    search = actions.add_parser(
        "search", help="the records nearest in meaning to QUERY: turns and documents",
        description="Find what you said, what Runa answered, and the documents you "
        "ingested, by meaning rather than by words: the best matches first, each with its "
        "score (cosine, -1 to 1), date, conversation and persona (a turn) or source and "
        "title (a document), and an excerpt. alethia embeds QUERY and searches its index; "
        "nothing leaves your machine. " + EXIT_TEXT)
    search.add_argument("query", metavar="QUERY", help="what to look for, in your words")
    _filters(search)
    search.add_argument("--kind", choices=proto.KINDS,
                        help="only chat turns, or only document passages")
    search.add_argument("--k", type=int, default=SEARCH_K, metavar="N",
                        help=f"how many matches (1 to {MAX_K}; default: %(default)s)")
    search.add_argument("--json", action="store_true",
                        help='one JSON object: {"query", "matches": [{"id", "score", "time", '
                        '"kind", "conversation", "persona", "text", and for a document '
                        '"source", "title", "passage"}]}')
    ingest = actions.add_parser(
        "ingest", help="store documents (Markdown, text, JSONL) in your memory, encrypted",
        description="Read each PATH (a directory: its .md, .markdown, .txt, .text and "
        ".jsonl files, hidden ones skipped) as 'runa ingest' reads it: YAML front matter is "
        "kept with each passage, a JSONL line is a document. Each is cut into passages that "
        "fit the embedding model and stored in alethia, encrypted and signed, so 'runa "
        "memory search' finds them. A file already stored unchanged (same sha256) is not "
        "stored again. A file that cannot be used is named with its problem and the others "
        "go on. Progress on standard error. " + EXIT_TEXT)
    ingest.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    ingest.add_argument("--json", action="store_true",
                        help='the summary as one JSON object: {"files", "stored", "passages", '
                        '"unchanged", "problems", "skipped", "missing"}')
    listing = actions.add_parser(
        "list", help="the records: id, time, kind, conversation, persona (never text)",
        description="List the remembered records, oldest first: id (YYYY-MM-DD/N: the UTC "
        "day and the record's place in it), time, kind, conversation and persona; a "
        "forgotten record is marked. " + EXIT_TEXT)
    _filters(listing)
    listing.add_argument("--json", action="store_true",
                         help='one JSON object: {"entries": [{"id", "time", "kind", '
                         '"conversation", "persona", "forgotten"}]}')
    show = actions.add_parser("show", help="one record, decrypted",
                              description="Print record ID decrypted: when, the "
                              "conversation and persona, what you said, the answer, and "
                              "what the policy did. " + EXIT_TEXT)
    show.add_argument("id", metavar="ID", help="a record's id, as 'list' shows it")
    show.add_argument("--json", action="store_true", help="the record as one JSON object")
    export = actions.add_parser(
        "export", help="every record, decrypted, to a file you choose (JSON lines)",
        description="Write your records, decrypted, oldest first, one JSON object a line, "
        "to FILE: created readable by you alone (0600), never over an existing file unless "
        "--force. On a terminal, progress is shown on standard error. A failure midway "
        "removes the partial file. " + EXIT_TEXT)
    export.add_argument("file", type=Path, metavar="FILE")
    export.add_argument("--force", action="store_true", help="replace FILE if it exists")
    _filters(export)
    forget = actions.add_parser(
        "forget", help="destroy a record, or a whole conversation, for good",
        description="Destroy the ciphertext of record ID (or of every record of "
        "conversation C) on disk, leaving a signed tombstone, so the chain still verifies "
        "and nothing of the text can be read back. On a terminal it asks first, unless "
        "--yes. " + EXIT_TEXT)
    which = forget.add_mutually_exclusive_group(required=True)
    which.add_argument("id", metavar="ID", nargs="?", help="the record to forget")
    which.add_argument("--conversation", metavar="C", help="forget every record of C")
    forget.add_argument("--yes", action="store_true", help="do not ask")
    verify = actions.add_parser(
        "verify", help="check every day's chain and signature (works with Runa stopped)",
        description="Walk every day's hash chain and check its signature with the store's "
        "public key: an altered, removed, reordered or inserted record and a day whose "
        "signature fails are each named (exit 1); untouched days verify on their own. "
        "Prints the public key's fingerprint: compare it with one you noted before. "
        "Needs no key and no running Runa. " + EXIT_TEXT)
    verify.add_argument("--json", action="store_true", help="the report as one JSON object")
    snapshot = actions.add_parser(
        "snapshot", help="copy the whole memory, as encrypted as it is, to a new file",
        description="Copy the store to the new file FILE, consistently (alethia is asked "
        "first to write and sign what is pending, when it runs). The copy is as encrypted "
        "as the store: it opens only with your keys in coven. " + EXIT_TEXT)
    snapshot.add_argument("file", type=Path, metavar="FILE")
    restore = actions.add_parser(
        "restore", help="replace the memory with a snapshot",
        description="Check that FILE is a snapshot that verifies, then replace the store "
        "with it at once; a running alethia is asked to give the store up first and reads "
        "the restored one after (if the restore fails, it opens the old one again). "
        "Records made since the snapshot are gone afterwards: on a terminal it asks "
        "first, unless --yes. " + EXIT_TEXT)
    restore.add_argument("file", type=Path, metavar="FILE")
    restore.add_argument("--yes", action="store_true", help="do not ask")
    actions.add_parser(
        "rotate-key", help="a new memory key from coven; the old one is removed",
        description="alethia re-wraps every day's key under a new memory key version that "
        "coven makes (nothing is re-encrypted, nothing lost); then the old versions are "
        "removed from coven as you, so a copy of an old key opens nothing new. " + EXIT_TEXT)
    status = actions.add_parser(
        "status", help="records, days, size, key version, durability, recording on or off",
        description="What alethia holds and how: records, days, bytes, the memory key's "
        "version, the public key's fingerprint, records not yet under a signature, how "
        "much an unclean stop may lose, and whether your turns are recorded. " + EXIT_TEXT)
    status.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(func=cmd_memory)


def _filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--since", metavar="WHEN", help=f"only records since WHEN: {FORMS}")
    parser.add_argument("--conversation", metavar="C", help="only conversation C's records")


def store_root(ctx: CliContext) -> Path:
    """Where alethia keeps its files (docs/alethia.md)."""
    return ctx.paths.data / "alethia"


def cmd_memory(ctx: CliContext, args: argparse.Namespace) -> int:
    action: str = args.action
    handler: Callable[[CliContext, argparse.Namespace], int] = ACTIONS[action]
    return handler(ctx, args)


@contextlib.contextmanager
def _alethia(ctx: CliContext) -> Iterator[MemoryClient]:
    with connect(ctx.config, ctx.paths, ctx.stack) as client:
        yield client


# -- asked of alethia ------------------------------------------------------------------------


def _list(ctx: CliContext, args: argparse.Namespace) -> int:
    since = parse_since(args.since, time.time())
    with _alethia(ctx) as client:
        entries = [e for page in client.pages("list", since=since,
                                              conversation=args.conversation) for e in page]
    if args.json:
        print_json({"entries": entries})
        return 0
    if not entries:
        print("no records" + (" match" if args.since or args.conversation else " yet"))
        return 0
    for entry in entries:
        forgotten = "  (forgotten)" if entry.get("forgotten") else ""
        print(f"{entry.get('id', '?'):<14}  {_when(entry.get('time'))}  "
              f"{entry.get('kind', '?'):<8}  {entry.get('conversation') or '-':<32}  "
              f"{entry.get('persona') or '-'}{forgotten}")
    return 0


def _search(ctx: CliContext, args: argparse.Namespace) -> int:
    since = parse_since(args.since, time.time())
    if not 1 <= args.k <= MAX_K:
        raise UsageError(f"--k {args.k}: from 1 to {MAX_K}")
    with _alethia(ctx) as client:
        return search(client, args.query, since=since, conversation=args.conversation,
                      kind=args.kind, k=args.k, as_json=args.json)


def search(client: MemoryClient, query: str, *, since: float | None = None,
           conversation: str | None = None, kind: str | None = None, k: int = SEARCH_K,
           as_json: bool = False, out: TextIO | None = None) -> int:
    """Print the matches alethia finds for ``query`` (``runa memory search``)."""
    out = out or sys.stdout
    try:
        matches = client.call("search", query=query, k=k, since=since,
                              conversation=conversation, kind=kind).get(proto.MATCHES) or []
    except MemoryFault as fault:
        raise search_refused(fault) from None
    if as_json:
        print_json({"query": query, "matches": matches}, stream=out)
        return 0
    if not matches:
        filtered = since is not None or conversation is not None or kind is not None
        state = index_state(client)
        print("nothing found" + (" with these filters" if filtered else "")
              + ("" if state in ("ready", None) else f" (alethia's index is {state}: "
                 "what is not indexed yet cannot be found; try again shortly)"), file=out)
        return 0
    for rank, match in enumerate(matches, start=1):
        print(f"{rank}. {_score(match.get('score'))}  {_when(match.get('time'))}  "
              f"{_origin(match)}  [{match.get('id', '?')}]", file=out)
        excerpt = " ".join(str(match.get("text") or "").split())
        print(textwrap.fill(excerpt, width=EXCERPT_WIDTH, initial_indent="   ",
                            subsequent_indent="   ") or "   (no text)", file=out)
    return 0


def _score(score: Any) -> str:
    return f"{score:.2f}" if isinstance(score, int | float) else "?"


def _origin(match: Mapping[str, Any]) -> str:
    """Where a match comes from: a turn's conversation and persona, a document's title and
    source."""
    if match.get("kind") == "document":
        title = match.get("title") or "-"
        passage = match.get("passage")
        where = f", passage {passage}" if isinstance(passage, int) else ""
        return f"document \"{title}\" ({match.get('source') or '-'}{where})"
    persona = f", persona {match['persona']}" if match.get("persona") else ""
    return f"turn in conversation {match.get('conversation') or '-'}{persona}"


def _ingest(ctx: CliContext, args: argparse.Namespace) -> int:
    from runa.cli.ingest_cmd import IngestProgress
    from runa.cli.memory_ingest import ingest, report

    with _alethia(ctx) as client:
        client.call("status", timeout=5.0)  # before the model loads and the files are read
        progress = IngestProgress(command=command_name(args))
        try:
            summary = ingest(client, args.paths, _chunker(ctx), progress=progress)
        finally:
            progress.finish()
    return report(summary, as_json=args.json)


def _chunker(ctx: CliContext) -> Chunker:
    """tieto's Chunker with its defaults (254 word-pieces, 32 shared), counting in the
    embedding model's word-pieces: the passages are what alethia embeds."""
    from runa.models import LlamaEmbedder, embedding_model_path
    from runa.tieto import Chunker

    name = ctx.config.get(EMBEDDING_SETTING, "default")
    model = LlamaEmbedder(embedding_model_path(name, tuple(ctx.paths.models),
                                               EMBEDDING_SETTING))
    return Chunker(model.count_tokens, model.max_tokens, CHUNK_OVERLAP)


def _show(ctx: CliContext, args: argparse.Namespace) -> int:
    with _alethia(ctx) as client:
        record = client.call("show", id=args.id).get(proto.RECORD) or {}
    if args.json:
        print_json(record)
        return 0
    body = record.get("body") or {}
    entry = record.get("entry") or record
    print(f"record {entry.get('id', args.id)}  {_when(entry.get('time'))}  "
          f"{entry.get('kind', '?')}")
    print(f"conversation {body.get('conversation') or entry.get('conversation') or '-'}, "
          f"persona {body.get('persona') or entry.get('persona') or '-'}")
    print(f"you: {body.get('user', '')}")
    print(f"answer: {body.get('answer', '')}")
    for item in body.get("interventions") or []:
        print("policy: " + ", ".join(f"{k} {v}" for k, v in item.items()))
    if body.get("feedback"):
        print(f"feedback: {body['feedback']}")
    return 0


def _export(ctx: CliContext, args: argparse.Namespace) -> int:
    since = parse_since(args.since, time.time())
    target: Path = args.file.expanduser()
    with _alethia(ctx) as client:
        client.call("status", timeout=5.0)  # a stopped alethia leaves no empty file behind
        count = 0
        progress = sys.stderr if sys.stderr.isatty() else None
        with _new_private_file(target, args.force) as out:
            for page in client.pages("export", since=since, conversation=args.conversation):
                for record in page:
                    out.write(json.dumps(record, ensure_ascii=False) + "\n")
                    count += 1
                    if progress is not None and count % PROGRESS_EVERY == 0:
                        progress.write(f"\rexported {count} records…")
                        progress.flush()
        if progress is not None and count >= PROGRESS_EVERY:
            progress.write("\r\x1b[K")
    print(f"exported {count} record{'' if count == 1 else 's'} to {target} (decrypted: keep "
          "it safe)")
    return 0


@contextlib.contextmanager
def _new_private_file(target: Path, force: bool) -> Iterator[TextIO]:
    """``target`` opened for writing, created 0600 (an existing file only with ``force``,
    and then made 0600 before anything is written); removed if the writing fails."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
    flags |= os.O_TRUNC if force else os.O_EXCL
    try:
        fd = os.open(target, flags, 0o600)
    except FileExistsError:
        raise ExportExists(f"{target} exists; 'runa memory export {target} --force' "
                           "replaces it") from None
    except OSError as error:
        raise FileFailed(f"{target}: {error.strerror or error}") from None
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            yield out
    except BaseException:
        target.unlink(missing_ok=True)
        raise


def _forget(ctx: CliContext, args: argparse.Namespace) -> int:
    what = (f"conversation {args.conversation}" if args.conversation
            else f"record {args.id}")
    if not args.yes and not _confirmed(f"forget {what} for good? Its text cannot be "
                                       "brought back [y/N] "):
        print("nothing forgotten")
        return EX_FAILED
    with _alethia(ctx) as client:
        ids = client.call("forget", id=args.id, conversation=args.conversation).get(
            proto.IDS) or []
    print(f"forgot {what}: {len(ids)} record{'' if len(ids) == 1 else 's'}"
          + (f" ({', '.join(ids)})" if len(ids) <= 10 else ""))
    return 0


def _rotate_key(ctx: CliContext, args: argparse.Namespace) -> int:
    from runa.cli.secret_cmd import client as secrets_client
    from runa.secret_client import SecretFault

    with _alethia(ctx) as client:
        version = int(client.call("rotate", timeout=120.0).get("key_version") or 0)
    print(f"memory key: version {version}; every day's key is re-wrapped under it")
    removed = []
    with secrets_client(ctx) as secrets:
        for old in range(1, version):
            name = store.MEMORY_KEY.format(version=old)
            try:
                secrets.call("rm", name=name).wipe()
            except SecretFault as fault:
                if fault.exit_code == 66:  # removed by an earlier rotation
                    continue
                raise
            removed.append(name)
    print(f"removed from coven: {', '.join(removed)}" if removed
          else "no older memory key was left in coven")
    return 0


def _status(ctx: CliContext, args: argparse.Namespace) -> int:
    with _alethia(ctx) as client:
        fields = client.call("status", timeout=5.0)
    # whether chat records is the asking person's configuration (what chat reads), which
    # may differ from the daemon's (another environment, a changed file not yet reloaded)
    fields = {**fields, "recording": bool(ctx.config["memory.record"])}
    if args.json:
        print_json(fields)
        return 0
    durability = fields.get("durability") or {}
    print(f"records: {fields.get('records', '?')} in {fields.get('days', '?')} days "
          f"({fields.get('bytes', '?')} bytes), {fields.get('unsigned', 0)} not yet signed")
    print(f"memory key: version {fields.get('key_version', '?')}")
    if fields.get("public_key"):
        print(f"public key: {fingerprint(str(fields['public_key']))}")
    if durability:
        print(f"durability: an unclean stop loses at most {durability.get('records')} "
              f"records or {durability.get('ms')} ms of turns")
    print("recording: " + ("on" if fields["recording"] else
                           "off ([memory] record = false)"))
    return 0


# -- on the files, no key and no daemon needed ------------------------------------------------


def _verify(ctx: CliContext, args: argparse.Namespace) -> int:
    root = store_root(ctx)
    if not root.exists():
        if args.json:
            print_json({"ok": True, "days": 0, "records": 0, "problems": []})
        else:
            print(f"no memory yet ({root} does not exist)")
        return 0
    trusted, source = trusted_key(ctx)
    report = store.verify(root, public_key=trusted)
    if args.json:
        print_json({"ok": report.ok, "days": report.days, "records": report.records,
                    "forgotten": report.forgotten, "unsigned": report.unsigned,
                    "public_key": report.public_key,
                    "fingerprint": fingerprint(report.public_key),
                    "key_checked": report.key_checked, "key_source": source,
                    "problems": [{"day": p.day, "index": p.index, "kind": p.kind,
                                  "message": p.message} for p in report.problems]})
        return 0 if report.ok else EX_FAILED
    print(f"{report.days} days, {report.records} records ({report.forgotten} forgotten, "
          f"{report.unsigned} not yet signed)")
    print(f"public key: {fingerprint(report.public_key)} ("
          + (f"checked against {source})" if report.key_checked else
             f"NOT checked: {source}; whoever can write the files could have re-signed them)"))
    for problem in report.problems:
        where = problem.day if problem.index is None else f"{problem.day}/{problem.index}"
        print(f"{where}: {problem.kind}: {problem.message}")
    print("verified: every chain and signature holds" if report.ok
          else f"NOT verified: {len(report.problems)} problem"
          f"{'' if len(report.problems) == 1 else 's'}")
    return 0 if report.ok else EX_FAILED


def _snapshot(ctx: CliContext, args: argparse.Namespace) -> int:
    target: Path = args.file.expanduser()
    if target.exists() or target.is_symlink():
        raise ExportExists(f"{target} exists; a snapshot goes to a new file")
    signed = _when_running(ctx, "sign")
    store.snapshot(store_root(ctx), target)
    print(f"snapshot {target} ({target.stat().st_size} bytes"
          + ("" if signed else "; alethia is not running: the files as they are") + ")")
    return 0


def _restore(ctx: CliContext, args: argparse.Namespace) -> int:
    source: Path = args.file.expanduser()
    if not source.is_file():
        raise NoSnapshot(f"{source}: no such snapshot file")
    if not args.yes and not _confirmed("replace your whole memory with this snapshot? "
                                       "Records made since it was taken are lost [y/N] "):
        print("nothing restored")
        return EX_FAILED
    public_key = trusted_key(ctx)[0]  # asked while alethia still holds the store
    versions = _coven_versions(ctx)
    released = _when_running(ctx, "release")  # it writes, signs and gives up the store
    try:
        report = store.restore(source, store_root(ctx), public_key=public_key,
                               key_versions=versions)
    finally:
        if released:  # the restored store, or the old one if the restore failed
            _when_running(ctx, "reload")
    print(f"restored {report.records} records in {report.days} days from {source}; "
          + ("alethia reads them now" if released else "alethia reads them when it starts"))
    return 0


def trusted_key(ctx: CliContext) -> tuple[bytes | None, str]:
    """The public key the store's signatures must verify under, from outside its files: what
    a running alethia derived from its signing seed (it refuses a store whose description
    names another key), else the seed the person gets from coven; None when neither answers
    (``verify`` then checks the files against their own key, and says so). The second item
    says where the key came from."""
    from runa.cli.secret_cmd import client as secrets_client
    from runa.secret_client import BrokerUnavailable, SecretFault

    try:
        with _alethia(ctx) as client:
            if client.running():
                key = client.call("status", timeout=5.0).get("public_key")
                if isinstance(key, str):
                    return bytes.fromhex(key), "alethia's signing key"
    except (stackbus.BusNotRunning, MemoryUnavailable, MemoryFault, ValueError):
        pass
    try:
        with secrets_client(ctx) as secrets:
            opened = secrets.call("get", name=store.SIGNING_KEY)
            try:
                return store.public_key_of(opened.value), "the signing key in coven"
            finally:
                opened.wipe()
    except (stackbus.BusNotRunning, BrokerUnavailable, SecretFault):
        return None, "neither alethia nor coven answered"


def _coven_versions(ctx: CliContext) -> list[int] | None:
    """The memory-key versions coven holds (a snapshot naming another cannot be opened);
    None when gilgul's broker does not answer (the restore then does not check them)."""
    from runa.alethia.keysource import versions_in
    from runa.cli.secret_cmd import client as secrets_client
    from runa.secret_client import BrokerUnavailable, SecretFault

    try:
        with secrets_client(ctx) as secrets:
            opened = secrets.call("list")
            try:
                listed = opened.fields.get("secrets") or []
                return versions_in([item for item in listed if isinstance(item, dict)])
            finally:
                opened.wipe()
    except (stackbus.BusNotRunning, BrokerUnavailable, SecretFault):
        return None


def _when_running(ctx: CliContext, op: str) -> bool:
    """Ask alethia ``op`` if it runs; False when it does not (the files are then idle)."""
    try:
        with _alethia(ctx) as client:
            if not client.running():
                return False
            client.call(op, timeout=60.0)
            return True
    except (stackbus.BusNotRunning, MemoryUnavailable):
        return False


# -- small pieces -----------------------------------------------------------------------------


def fingerprint(public_key: str) -> str:
    """An Ed25519 public key (hex) as ``SHA256:<base64>``, as ssh-keygen shows keys."""
    try:
        raw = bytes.fromhex(public_key)
    except ValueError:
        return f"{public_key} (not a hex key)"
    digest = base64.b64encode(hashlib.sha256(raw).digest()).decode().rstrip("=")
    return f"SHA256:{digest}"


def _when(stamp: Any) -> str:
    if not isinstance(stamp, int | float) or isinstance(stamp, bool):
        return "?" * 20
    return datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _confirmed(question: str) -> bool:
    """Yes on a terminal's 'y'; no terminal (a script) asks nothing and goes on."""
    if not sys.stdin.isatty():
        return True
    try:
        return input(question).strip().lower() in ("y", "yes")
    except EOFError:
        return False


class ExportExists(RunaError):
    """The file to write exists."""

    exit_code = EX_CANTCREAT


class FileFailed(RunaError):
    """The file to write cannot be created."""

    exit_code = EX_IOERR


class NoSnapshot(UsageError):
    """The snapshot named does not exist."""

    exit_code = 66


ACTIONS: dict[str, Callable[[CliContext, argparse.Namespace], int]] = {
    "search": _search, "ingest": _ingest, "list": _list, "show": _show, "export": _export,
    "forget": _forget, "verify": _verify,
    "snapshot": _snapshot, "restore": _restore, "rotate-key": _rotate_key, "status": _status,
}
