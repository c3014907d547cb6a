"""tieto: retrieval over a person's own documents (docs/tieto.md).

Modules, each with one job: ``sources`` (files → records, front matter
through ``runa.frontmatter``),
``chunk`` (records → chunks that fit the model), ``embed`` (the model),
``index`` (one SQLite file per topic: sqlite-vec + FTS5 + metadata),
``values``/``filters`` (typed ``--filter`` expressions → SQL), ``fts``,
``fusion`` (reciprocal rank fusion), ``ingest``, ``recall``, ``topic`` (a
topic's settings) and ``api`` (all of it behind one object for the CLI and the
daemon).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from runa.surface import lazy

if TYPE_CHECKING:
    from runa.tieto.access import Local, Remote, open_tieto
    from runa.tieto.chunk import Chunker
    from runa.tieto.errors import InputError, NotRegularFileError
    from runa.tieto.ingest import IngestEvent, IngestReport
    from runa.tieto.ingests import cancel_ingest, find_ingest, list_ingests
    from runa.tieto.sources import Record, parse, read_bytes, walk
    from runa.tieto.topic import COLUMN_TYPES, parse_declaration

__all__ = [
    "COLUMN_TYPES",
    "Chunker",
    "IngestEvent",
    "IngestReport",
    "InputError",
    "Local",
    "NotRegularFileError",
    "Record",
    "Remote",
    "cancel_ingest",
    "find_ingest",
    "list_ingests",
    "open_tieto",
    "parse",
    "parse_declaration",
    "read_bytes",
    "walk",
]
if not TYPE_CHECKING:  # mypy reads the imports above; an unknown name stays an error
    __getattr__ = lazy(__name__, {
        "access": ("Local", "Remote", "open_tieto"),
        "chunk": ("Chunker",),
        "errors": ("InputError", "NotRegularFileError"),
        "ingest": ("IngestEvent", "IngestReport"),
        "ingests": ("cancel_ingest", "find_ingest", "list_ingests"),
        "sources": ("Record", "parse", "read_bytes", "walk"),
        "topic": ("COLUMN_TYPES", "parse_declaration"),
    })
