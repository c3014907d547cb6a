"""Read input files into records: one per Markdown/text file, one per JSONL line.

A file is read whole as bytes (its sha256 is what incremental ingest compares),
refused when binary or not UTF-8, and parsed by its kind. Only regular files are read: a FIFO
named ``notes.md`` would block its reader for ever, so it is opened without blocking and
refused after a look at what was opened (NotRegularFileError); the ingest skips it.

* ``.jsonl``: each non-blank line ``{"text": "...", "meta": {...}}``; a broken
  line is reported with its number and the other lines still count;
* anything else: text with optional YAML front matter (runa.frontmatter's rules); its values
  are kept as JSON can hold them (a date becomes its ISO text).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import stat
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runa import frontmatter
from runa.tieto.errors import (
    EmptyInputError,
    FrontMatterError,
    InputError,
    JsonlLineError,
    NotRegularFileError,
    NotTextError,
)

TEXT_SUFFIXES = (".md", ".markdown", ".txt", ".text")
JSONL_SUFFIXES = (".jsonl",)
#: Suffixes picked up when a directory is walked; a file named explicitly may have any.
KNOWN_SUFFIXES = TEXT_SUFFIXES + JSONL_SUFFIXES
_SNIFF = 8192


@dataclass(frozen=True)
class Record:
    """One document to index."""

    key: str
    """Identity within its file: ``""`` for a whole file, ``"line N"`` for a JSONL line."""
    line: int
    """1-based line of the file where ``text`` starts."""
    text: str
    meta: dict[str, Any]
    meta_lines: dict[str, int] = field(default_factory=dict)
    """Line of each metadata key where it is known (front matter), for error messages."""


@dataclass(frozen=True)
class SourceFile:
    """A file read and parsed: its records and the problems found on the way."""

    path: Path
    sha256: str
    size: int
    records: tuple[Record, ...]
    problems: tuple[InputError, ...] = field(default_factory=tuple)


_KINDS = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISDIR, "a directory"))
#: Open flags: never wait for a FIFO's writer, never take a terminal as controlling one.
_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


def _check_regular(mode: int, path: Path) -> None:
    if not stat.S_ISREG(mode):
        kind = next((name for test, name in _KINDS if test(mode)), "not a file")
        raise NotRegularFileError(path, None, f"not a regular file ({kind}); skipped")


def read_bytes(path: Path, *, opener: Callable[[Path, int], int] = os.open
               ) -> tuple[bytes, str]:
    """The file's bytes and their sha256; NotRegularFileError for anything but a file.

    What is checked is the opened descriptor, so a file swapped for a FIFO between a look
    at the path and the open cannot block the read. ``os.stat`` first spares opening a
    device at all.
    """
    _check_regular(os.stat(path).st_mode, path)
    fd = opener(path, _OPEN_FLAGS)
    with os.fdopen(fd, "rb") as file:
        _check_regular(os.fstat(fd).st_mode, path)
        data = file.read()
    return data, hashlib.sha256(data).hexdigest()


def decode(data: bytes, path: Path) -> str:
    """``data`` as text; NotTextError for binary data or bytes that are not UTF-8."""
    if b"\x00" in data[:_SNIFF]:
        raise NotTextError(path, None, "binary file (it contains NUL bytes); not ingested")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise NotTextError(
            path, line, f"not UTF-8 (byte 0x{data[e.start]:02x} at offset {e.start}); "
            "convert it, e.g. with iconv -t UTF-8"
        ) from None
    return text.removeprefix("\ufeff")


def parse(path: Path, data: bytes, sha256: str) -> SourceFile:
    """Records of one file. Raises InputError when nothing in it can be used."""
    text = decode(data, path)
    if not text.strip():
        raise EmptyInputError(path, None, "empty file")
    if path.suffix.lower() in JSONL_SUFFIXES:
        records, problems = _jsonl(text, path)
        if not records:
            if len(problems) == 1:
                raise problems[0]
            raise JsonlLineError(path, problems[0].line if problems else None,
                                 f"no usable line ({len(problems)} broken)")
        return SourceFile(path, sha256, len(data), tuple(records), tuple(problems))
    try:
        doc = frontmatter.split(text, path)
    except frontmatter.FrontMatterError as e:
        raise FrontMatterError(path, e.line, e.problem) from None
    if not doc.body.strip():
        raise EmptyInputError(path, doc.body_line, "no text after the front matter")
    meta = {key: _plain(value) for key, value in doc.meta.items()}
    record = Record("", doc.body_line, doc.body, meta, doc.key_lines)
    return SourceFile(path, sha256, len(data), (record,))


def _plain(value: Any) -> Any:
    """A YAML value as JSON can hold it: dates become ISO text, mapping keys text."""
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_plain(v) for v in value]
    return value


def _jsonl(text: str, path: Path) -> tuple[list[Record], list[InputError]]:
    records: list[Record] = []
    problems: list[InputError] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(_jsonl_record(line, number, path))
        except InputError as e:
            problems.append(e)
    return records, problems


def _jsonl_record(line: str, number: int, path: Path) -> Record:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise JsonlLineError(path, number, f"not valid JSON: {e.msg} at column {e.colno}") \
            from None
    if not isinstance(obj, dict):
        raise JsonlLineError(path, number, 'expected an object {"text": ..., "meta": {...}}')
    text = obj.get("text")
    if not isinstance(text, str):
        raise JsonlLineError(path, number, '"text" is missing or not a string')
    if not text.strip():
        raise EmptyInputError(path, number, '"text" is empty')
    meta = obj.get("meta", {})
    if meta is None:
        meta = {}
    if not isinstance(meta, dict):
        raise JsonlLineError(path, number, '"meta" must be an object')
    return Record(f"line {number}", number, text, meta)


def walk(paths: Sequence[Path]) -> Iterator[tuple[Path, Path]]:
    """(root, file) for every file to ingest under ``paths``, in a stable order.

    A directory yields its files with a known suffix, hidden files and
    directories skipped; a file is yielded as it is, whatever its suffix. Anything
    else that is not a directory (a FIFO, a socket) is yielded too, for the reader
    to refuse with its reason rather than leave it unmentioned.
    """
    for root in paths:
        if root.is_dir():
            for directory, dirs, files in os.walk(root):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(files):
                    if not name.startswith(".") and name.lower().endswith(KNOWN_SUFFIXES):
                        yield root, Path(directory) / name
        elif root.exists():
            yield root, root
