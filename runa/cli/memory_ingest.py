"""``runa memory ingest``: documents read and chunked as tieto reads and chunks them, sent to
alethia in ``ingest`` requests that each fit the alethia bus's envelope.

The CLI may use tieto's modules (a component may not): its walk and reader (front matter
kept as ``meta``, a JSONL line a record) and its Chunker, counting in the embedding model's
word-pieces. A file that cannot be read is named with its problem and the others go on.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TextIO

from runa import stackbus
from runa.cli.voice import print_json
from runa.crypto import sodium
from runa.protocol import memory as proto
from runa.tieto import (
    Chunker,
    IngestEvent,
    InputError,
    NotRegularFileError,
    Record,
    parse,
    read_bytes,
    walk,
)

EX_DATAERR, EX_NOINPUT = 65, 66
#: Room left in an envelope for its own fields (id, sender, reply queue, ttl): 210 bytes
#: measured for ``runa memory``'s names, so a kilobyte leaves a wide margin.
ENVELOPE_FIELDS = 1024
#: A sealed payload is ``{"sealed": "<base64 of nonce, length, header, MAC>"}``.
_SEALED_WRAPPING = len('{"sealed":""}')
_SEAL_BYTES = sodium.NONCE_BYTES + 4 + sodium.MAC_BYTES
_REQUEST_SHELL = len(json.dumps(proto.OPS["ingest"].request(passages=[]),
                                separators=(",", ":")))
#: The most JSON alethia keeps in one record (docs/protocol.md: 63 KiB), a passage's too.
MAX_PASSAGE_BYTES = 63 * 1024
#: How long alethia may take to write, sign and answer one request.
INGEST_TIMEOUT_S = 120.0
_HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t#]*$", re.MULTILINE)


def header_budget(max_envelope: int = stackbus.ALETHIA_BUS.max_envelope) -> int:
    """The most JSON a request's sealed header may hold so its envelope fits ``max_envelope``
    (base64 makes 3 bytes 4)."""
    base64_room = max_envelope - ENVELOPE_FIELDS - _SEALED_WRAPPING
    return base64_room // 4 * 3 - _SEAL_BYTES


def passage_bytes(passage: Mapping[str, Any]) -> int:
    """What ``passage`` adds to a request's header, as the bus key seals it (compact JSON,
    non-ASCII escaped)."""
    return len(json.dumps(dict(passage), separators=(",", ":")))


class Asker(Protocol):
    """What ingest needs of alethia (``runa.memory_client.MemoryClient``)."""

    def call(self, op: str, *, timeout: float = 30.0, **fields: Any) -> dict[str, Any]: ...


@dataclass
class IngestSummary:
    """What one run did: files read, passages stored, sources alethia already had."""

    files: int = 0
    stored_files: set[str] = field(default_factory=set)
    passages: int = 0
    unchanged: set[str] = field(default_factory=set)
    problems: list[InputError] = field(default_factory=list)
    skipped: list[InputError] = field(default_factory=list)
    """Not regular files (a FIFO, a socket): not read, not a failure, as tieto does."""
    missing: list[str] = field(default_factory=list)
    """PATHs given that do not exist."""

    def as_dict(self) -> dict[str, Any]:
        def named(errors: list[InputError]) -> list[dict[str, Any]]:
            return [{"path": e.path, "line": e.line, "problem": e.problem} for e in errors]

        return {"files": self.files, "stored": len(self.stored_files),
                "passages": self.passages, "unchanged": len(self.unchanged),
                "problems": named(self.problems), "skipped": named(self.skipped),
                "missing": self.missing}

    def line(self) -> str:
        parts = [f"{len(self.stored_files)} stored ({self.passages} passages)",
                 f"{len(self.unchanged)} unchanged (already stored)"]
        if self.problems:
            parts.append(f"{len({p.path for p in self.problems})} with problems")
        if self.skipped:
            parts.append(f"{len(self.skipped)} skipped (not regular files)")
        if self.missing:
            parts.append(f"{len(self.missing)} not found")
        return f"{self.files} files: {', '.join(parts)}"


def title_of(record: Record, path: Path) -> str:
    """The front matter's ``title``, else the first Markdown heading, else the file's name
    (a JSONL line: the name and the line)."""
    given = record.meta.get("title")
    if isinstance(given, str) and given.strip():
        return given.strip()
    if record.key:
        return f"{path.name} {record.key}"
    heading = _HEADING.search(record.text)
    return heading.group(1).strip() if heading else path.stem


def passages_of(path: Path, records: Sequence[Record], sha256: str,
                chunker: Chunker) -> list[dict[str, Any]]:
    """The ``ingest`` passages of one file: each record chunked, numbered from 0 in the file."""
    out: list[dict[str, Any]] = []
    for record in records:
        title = title_of(record, path)
        for chunk in chunker.split(record.text):
            out.append({"source": str(path), "sha256": sha256, "title": title,
                        "meta": record.meta, "passage": len(out), "text": chunk.text})
    return out


class Sender:
    """Packs passages into requests no larger than ``budget`` bytes of header and sends
    each when the next passage would not fit (``flush`` sends the last)."""

    def __init__(self, client: Asker, summary: IngestSummary, budget: int) -> None:
        self.client = client
        self.summary = summary
        self.budget = budget
        self._batch: list[dict[str, Any]] = []
        self._bytes = _REQUEST_SHELL

    def add(self, passage: dict[str, Any], size: int) -> None:
        added = size + (1 if self._batch else 0)
        if self._batch and self._bytes + added > self.budget:
            self.flush()
            added = size
        self._batch.append(passage)
        self._bytes += added

    def passage_limit(self) -> int:
        """The most one passage may take: alone in a request, and within one record."""
        return min(self.budget - _REQUEST_SHELL, MAX_PASSAGE_BYTES)

    def keep_together(self, size: int) -> None:
        """A file's passages, ``size`` bytes in all, are about to come: send what is packed
        first unless they fit beside it, so a file that fits one request goes in one
        (alethia tells an unchanged source by its sha256, so one source in one request is
        the plainest case; only a file larger than a request spans several)."""
        if self._batch and self._bytes + size > self.budget:
            self.flush()

    def flush(self) -> None:
        if not self._batch:
            return
        answer = self.client.call("ingest", timeout=INGEST_TIMEOUT_S, passages=self._batch)
        ids = answer.get(proto.IDS) or []
        skipped = {str(s) for s in answer.get(proto.SKIPPED) or []}
        cut = skipped & self.summary.stored_files  # its earlier part stored in this run
        for source in sorted(cut):
            dropped = sum(1 for p in self._batch if p["source"] == source)
            self.summary.problems.append(InputError(
                source, None, f"alethia did not keep {dropped} of its passages: it took the "
                "part sent in a later request for a copy it already holds (a file too large "
                "for one request); the part before is stored"))
        self.summary.passages += len(ids)
        self.summary.unchanged |= skipped - cut
        self.summary.stored_files |= {p["source"] for p in self._batch} - skipped
        self._batch = []
        self._bytes = _REQUEST_SHELL


def ingest(client: Asker, paths: Sequence[Path], chunker: Chunker, *,
           progress: Callable[[IngestEvent], None] = lambda _event: None,
           budget: int | None = None) -> IngestSummary:
    """Read, chunk and send every file under ``paths``; a file with a problem is named in
    the summary (and told to ``progress``) and the others go on."""
    summary = IngestSummary()
    sender = Sender(client, summary, header_budget() if budget is None else budget)
    roots = [p.expanduser().absolute() for p in paths]
    summary.missing = [str(r) for r in roots if not r.exists() and not r.is_symlink()]
    for missing in summary.missing:
        progress(IngestEvent("failed", missing, 0, 0, message=f"{missing}: no such file or "
                             "directory"))
    files = [file for _, file in walk([r for r in roots if r.exists()])]
    summary.files = len(files)
    for number, path in enumerate(files, start=1):
        count, problems = _one(path, chunker, sender)
        for problem in problems:
            skipped = isinstance(problem, NotRegularFileError)
            (summary.skipped if skipped else summary.problems).append(problem)
            progress(IngestEvent("skipped" if skipped else "failed", str(path), number,
                                 len(files), message=str(problem)))
        if count:
            progress(IngestEvent("ingested", str(path), number, len(files), chunks=count))
    sender.flush()
    return summary


def report(summary: IngestSummary, *, as_json: bool = False, out: TextIO | None = None,
           err: TextIO | None = None) -> int:
    """Print the summary (JSON on standard output, else a line on standard error) and
    return the exit status: 65 when a file could not be used, 66 when a PATH does not
    exist, else 0."""
    if as_json:
        print_json(summary.as_dict(), stream=out)
    else:
        print(summary.line(), file=err or sys.stderr)
    return EX_DATAERR if summary.problems else EX_NOINPUT if summary.missing else 0


def _one(path: Path, chunker: Chunker, sender: Sender) -> tuple[int, list[InputError]]:
    """Queue ``path``'s passages with ``sender``: how many, and the file's problems (a file
    that cannot be used queues nothing; a JSONL file's broken lines are named, its good
    ones kept)."""
    try:
        data, sha256 = read_bytes(path)
        source = parse(path, data, sha256)
    except InputError as error:
        return 0, [error]
    except OSError as error:
        return 0, [InputError(path, None, f"cannot be read: {error.strerror or error}")]
    passages = passages_of(path, source.records, sha256, chunker)
    sizes = [passage_bytes(p) for p in passages]
    largest, limit = max(sizes, default=0), sender.passage_limit()
    if largest > limit:
        return 0, [InputError(path, None, f"a passage with its front matter takes {largest} "
                              f"bytes of JSON, more than alethia keeps in one record ({limit})"
                              "; shorten the front matter")]
    sender.keep_together(sum(sizes) + len(sizes))
    for passage, size in zip(passages, sizes, strict=True):
        sender.add(passage, size)
    return len(passages), list(source.problems)
