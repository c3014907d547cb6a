"""A topic's index: one SQLite file holding sources, chunks, metadata, vectors and words.

Tables: ``sources`` (one per ingested file, with its sha256), ``docs`` (one per
record: a file or a JSONL line, with its metadata as JSON), ``chunks`` (text and
position), ``meta`` (every metadata scalar as comparable rows, see
runa.tieto.values), ``chunks_fts`` (FTS5 over the chunk text, kept in step by
triggers), ``embeddings`` (each chunk's float32 vector, a plain table) and
``vector_bits`` (sqlite-vec ``vec0``: each vector's signs as ``bit[dim]``, plus
one metadata column and a has-flag per declared key).

Nearest neighbours in two steps: vec0 finds the ``prefilter`` chunks nearest by
Hamming distance between sign bits (48 bytes a vector, so the scan reads a 32nd
of what a float scan reads), with the filters inside that scan; then the exact
cosine of those candidates, read by rowid from ``embeddings``, picks the k. An
exact scan of sqlite-vec's float vectors cost ~0.5 µs a vector here (no SIMD for
cosine), ~55 ms for 100k chunks; the two steps take ~37 ms and their top 10 holds
98 to 99.6% of the exact top 10 on the bench (docs/bench.md, "RAG"). With no more
matching chunks than ``prefilter`` the result is exact.

One file per topic, so the daemon's snapshot (issue 11) is one SQLite backup.
Connections load sqlite-vec into the standard library's sqlite3 (Debian's build
allows extensions); WAL lets recall read while an ingest writes.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from runa.tieto.chunk import Chunk
from runa.tieto.errors import (
    DimensionMismatchError,
    EmbeddingMismatchError,
    IndexCorruptError,
    IndexWriteError,
    MetadataError,
    TietoError,
)
from runa.tieto.filters import Compiled
from runa.tieto.sources import Record
from runa.tieto.topic import COLUMN_TYPES, TopicConfig
from runa.tieto.values import rows

SCHEMA_VERSION = 2
"""1: float vec0 ``vectors``; 2: ``embeddings`` + bit vec0 ``vector_bits``."""
FTS_TOKENIZE = "porter unicode61 remove_diacritics 2"
#: sqlite-vec refuses k above this in a KNN query.
MAX_K = 4096
#: Candidates the bit scan hands to exact rescoring (at least 10 per result wanted).
#: Chosen on the tune queries over the 100k-chunk bench index: overlap with the exact
#: top 10 was 0.978 at 500 (worst query 0.6), 0.996 at 1000, 0.999 at 2000, for
#: 32, 36 and 43 ms of CPU.
PREFILTER = 1000
#: Rows per vec0 chunk of the bit table. sqlite-vec picks each chunk's best with k
#: passes over the chunk, so small chunks keep a deep prefilter cheap (measured:
#: 64 rows 33 ms, 256 rows 62 ms, 1024 rows 40+ ms for k = 300 over 100k rows).
BITS_CHUNK_SIZE = 64
_MMAP_BYTES = 1 << 30
_CACHE_KIB = 65536


def connect(path: Path | str) -> sqlite3.Connection:
    """A connection with sqlite-vec loaded; TietoError when this Python cannot load it."""
    import sqlite_vec

    db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    try:
        db.enable_load_extension(True)
        sqlite_vec.load(db)
        db.enable_load_extension(False)
    except (AttributeError, sqlite3.OperationalError) as e:
        db.close()
        raise TietoError(
            f"cannot load sqlite-vec into this Python's sqlite3 ({e}); Runa needs a Python "
            "whose sqlite3 allows extensions (Debian's /usr/bin/python3 does)"
        ) from None
    db.execute(f"PRAGMA mmap_size={_MMAP_BYTES}")
    db.execute(f"PRAGMA cache_size=-{_CACHE_KIB}")
    db.execute("PRAGMA foreign_keys=ON")
    return db


@dataclass(frozen=True)
class SourceRow:
    path: str
    sha256: str
    complete: bool


@dataclass(frozen=True)
class ChunkRow:
    """A stored chunk with where it came from."""

    id: int
    text: str
    ordinal: int
    line: int
    start: int
    end: int
    source: str
    record: str
    meta: dict[str, Any]


@dataclass(frozen=True)
class PreparedDoc:
    """A record ready to store: its chunks, their vectors, its declared-column values."""

    record: Record
    chunks: Sequence[Chunk]
    vectors: np.ndarray
    declared: Sequence[Any]
    """Per declared key, in topic order: the column value, or None when the key is missing."""


class TopicIndex:
    """The index of one topic. Open with :meth:`create` or :meth:`open`."""

    def __init__(self, db: sqlite3.Connection, path: Path, config: TopicConfig) -> None:
        self.db = db
        self.path = path
        self.config = config

    # -- opening -----------------------------------------------------------------------

    @classmethod
    def create(cls, path: Path, config: TopicConfig,
               fts_tokenize: str = FTS_TOKENIZE) -> TopicIndex:
        """A new, empty index at ``path`` (which must not exist yet).

        The index holds the person's text: its directory is 0700 and the file (so also
        SQLite's -wal and -shm beside it) 0600, whatever the umask.
        """
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(path.parent, 0o700)
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        except FileExistsError:
            raise
        except OSError as e:
            raise IndexWriteError(path, f"cannot create it: {e.strerror or e}") from None
        db = connect(path)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            # executescript commits any open transaction first, so the script has its own.
            db.executescript("BEGIN;" + _SCHEMA.format(tokenize=fts_tokenize.replace("'", "''"))
                             + _vectors_ddl("vector_bits", config) + ";COMMIT;")
            with _transaction(db, path):
                db.executemany("INSERT INTO info(key, value) VALUES (?, ?)",
                               [("schema", str(SCHEMA_VERSION)), ("topic", config.to_json())])
        except BaseException as e:
            db.close()
            path.unlink(missing_ok=True)
            failure = write_failure(e, path) if isinstance(e, sqlite3.Error) else None
            if failure is not None:
                raise failure from None
            raise
        return cls(db, path, config)

    @classmethod
    def open(cls, path: Path) -> TopicIndex:
        """The existing index at ``path``; IndexCorruptError when it is not one."""
        if not path.is_file():
            raise IndexCorruptError(f"{path}: no index file")
        try:
            db = connect(path)
        except sqlite3.DatabaseError as e:
            raise IndexCorruptError(f"{path}: not a tieto index ({e})") from None
        try:
            info = dict(db.execute("SELECT key, value FROM info").fetchall())
            config = TopicConfig.from_json(info["topic"])
            if info.get("schema") != str(SCHEMA_VERSION):
                raise IndexCorruptError(
                    f"{path}: index format {info.get('schema')}, this Runa reads format "
                    f"{SCHEMA_VERSION}; re-ingest the topic: runa ingest PATH... --topic "
                    f"{config.name} --rebuild"
                )
        except (sqlite3.DatabaseError, KeyError, ValueError) as e:
            db.close()
            raise IndexCorruptError(f"{path}: not a tieto index ({e})") from None
        except BaseException:
            db.close()
            raise
        return cls(db, path, config)

    def close(self) -> None:
        self.db.close()

    def check_embedder(self, model_id: str, dim: int) -> None:
        """Refuse an embedder whose vectors cannot be compared with the stored ones."""
        if dim != self.config.dim:
            raise DimensionMismatchError(
                self.config.name,
                f"the index holds {self.config.dim}-dimensional vectors but the embedding "
                f"model gives {dim}",
            )
        if model_id != self.config.model_id:
            raise EmbeddingMismatchError(
                self.config.name,
                f"indexed with embedding model {self.config.model_id}, not {model_id}",
            )

    # -- sources -----------------------------------------------------------------------

    def source(self, path: str) -> SourceRow | None:
        row = self.db.execute("SELECT path, sha256, complete FROM sources WHERE path = ?",
                              (path,)).fetchone()
        return SourceRow(row[0], row[1], bool(row[2])) if row else None

    def source_paths(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT path FROM sources ORDER BY path")]

    def replace_source(self, path: str, sha256: str, size: int, complete: bool,
                       docs: Sequence[PreparedDoc]) -> int:
        """Store ``docs`` as the content of ``path``, replacing what it had; returns chunks."""
        for doc in docs:
            if doc.vectors.shape != (len(doc.chunks), self.config.dim):
                raise DimensionMismatchError(
                    self.config.name,
                    f"got vectors of shape {doc.vectors.shape} for {len(doc.chunks)} chunks of "
                    f"{self.config.dim} dimensions",
                )
        added = 0
        with _transaction(self.db, self.path):
            self._delete_source(path)
            cur = self.db.execute(
                "INSERT INTO sources(path, sha256, size, complete) VALUES (?, ?, ?, ?)",
                (path, sha256, size, int(complete)),
            )
            source_id = cur.lastrowid
            for doc in docs:
                added += self._insert_doc(source_id, doc)
        return added

    def remove_source(self, path: str) -> bool:
        with _transaction(self.db, self.path):
            return self._delete_source(path)

    def _delete_source(self, path: str) -> bool:
        row = self.db.execute("SELECT id FROM sources WHERE path = ?", (path,)).fetchone()
        if row is None:
            return False
        source_id = row[0]
        self.db.execute(
            "DELETE FROM vector_bits WHERE chunk_id IN (SELECT c.id FROM chunks c JOIN docs d "
            "ON c.doc_id = d.id WHERE d.source_id = ?)", (source_id,))
        self.db.execute("DELETE FROM sources WHERE id = ?", (source_id,))  # cascades
        return True

    def _insert_doc(self, source_id: int | None, doc: PreparedDoc) -> int:
        record = doc.record
        cur = self.db.execute(
            "INSERT INTO docs(source_id, key, line, meta) VALUES (?, ?, ?, ?)",
            (source_id, record.key, record.line, json.dumps(record.meta, ensure_ascii=False)),
        )
        doc_id = cur.lastrowid
        self.db.executemany(
            "INSERT INTO meta(doc_id, key, t, n, d) VALUES (?, ?, ?, ?, ?)",
            [(doc_id, key, row.t, row.n, row.d) for key, row in rows(record.meta)],
        )
        insert_bits = _insert_bits_sql(self.config)
        extra: list[Any] = []
        for declared, value in zip(self.config.declared, doc.declared, strict=True):
            extra += [declared.placeholder(), 0] if value is None else [value, 1]
        vectors = np.ascontiguousarray(doc.vectors, dtype=np.float32)
        for chunk, vector, bits in zip(doc.chunks, vectors, sign_bits(vectors), strict=True):
            line = record.line + record.text.count("\n", 0, chunk.start)
            cur = self.db.execute(
                "INSERT INTO chunks(doc_id, ordinal, text, start, end, line, n_tokens) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (doc_id, chunk.ordinal, chunk.text, chunk.start, chunk.end, line,
                 chunk.n_tokens),
            )
            self.db.execute("INSERT INTO embeddings(chunk_id, vector) VALUES (?, ?)",
                            (cur.lastrowid, vector.tobytes()))
            self.db.execute(insert_bits, (cur.lastrowid, bits.tobytes(), *extra))
        return len(doc.chunks)

    @contextmanager
    def bulk(self) -> Iterator[BulkWriter]:
        """Many documents in one transaction (the benchmark's 100k-chunk index)."""
        with _transaction(self.db, self.path):
            yield BulkWriter(self)

    # -- declared keys -----------------------------------------------------------------

    def rename(self, name: str) -> None:
        """Record ``name`` as the topic's name (a snapshot restored under another topic)."""
        if name == self.config.name:
            return
        config = replace(self.config, name=name)
        with self.db:
            self.db.execute("UPDATE info SET value = ? WHERE key = 'topic'", (config.to_json(),))
        self.config = config

    def redeclare(self, config: TopicConfig,
                  declared_values: Callable[[dict[str, Any]], Sequence[Any]]) -> None:
        """Rebuild the bit table with other declared keys from the stored vectors.

        ``declared_values(meta)`` gives a document's column values for ``config``; a
        value that does not fit aborts the change with a MetadataError naming its file.
        """
        with _transaction(self.db, self.path):
            self.db.execute("DROP TABLE vector_bits")
            self.db.execute(_vectors_ddl("vector_bits", config))
            insert = _insert_bits_sql(config)
            docs = self.db.execute(
                "SELECT d.id, d.meta, s.path, d.line FROM docs d "
                "LEFT JOIN sources s ON d.source_id = s.id").fetchall()
            for doc_id, meta_json, source, line in docs:
                try:
                    values = declared_values(json.loads(meta_json))
                except ValueError as e:
                    raise MetadataError(source or "(no file)", line, str(e)) from None
                extra: list[Any] = []
                for declared, value in zip(config.declared, values, strict=True):
                    extra += [declared.placeholder(), 0] if value is None else [value, 1]
                for chunk_id, blob in self.db.execute(
                    "SELECT e.chunk_id, e.vector FROM chunks c JOIN embeddings e "
                    "ON e.chunk_id = c.id WHERE c.doc_id = ?", (doc_id,)
                ).fetchall():
                    bits = sign_bits(np.frombuffer(blob, dtype=np.float32)[None, :])[0]
                    self.db.execute(insert, (chunk_id, bits.tobytes(), *extra))
            self.db.execute("UPDATE info SET value = ? WHERE key = 'topic'", (config.to_json(),))
        self.config = config

    # -- queries -----------------------------------------------------------------------

    def vector_search(self, query: np.ndarray, k: int, filters: Compiled | None = None,
                      *, prefilter: int = PREFILTER, exact: bool = False
                      ) -> list[tuple[int, float]]:
        """(chunk id, cosine distance) of the ``k`` nearest chunks that match ``filters``.

        The ``max(prefilter, 10 k)`` chunks nearest by sign bits (filters applied in
        that scan) are ranked by exact cosine; ``exact`` ranks every matching chunk
        instead (a full scan of the float vectors, for comparison).
        """
        if query.shape != (self.config.dim,):
            raise DimensionMismatchError(
                self.config.name, f"query vector has shape {query.shape}, the index "
                f"{self.config.dim} dimensions")
        k = max(1, min(k, MAX_K))
        query = np.ascontiguousarray(query, dtype=np.float32)
        if exact:
            sql = "SELECT chunk_id, vec_distance_cosine(vector, ?) AS d FROM embeddings"
            params: list[Any] = [query.tobytes()]
            where = filters.chunk_sql("embeddings.chunk_id") if filters else None
            if where is not None:
                sql += f" WHERE {where.sql}"
                params += where.params
            rows = self.db.execute(sql + " ORDER BY d, chunk_id LIMIT ?", [*params, k])
            return [(int(i), float(d)) for i, d in rows]
        depth = min(MAX_K, max(prefilter, 10 * k))
        sql = "SELECT chunk_id FROM vector_bits WHERE bits MATCH vec_bit(?) AND k = ?"
        params = [sign_bits(query[None, :])[0].tobytes(), depth]
        for clause in filters.vector() if filters else ():
            sql += f" AND {clause.sql}"
            params += clause.params
        candidates = [int(i) for (i,) in self.db.execute(sql, params)]
        ranked = sorted(self.distances(candidates, query).items(), key=lambda e: (e[1], e[0]))
        return ranked[:k]

    def fts_search(self, match: str, k: int, filters: Compiled | None = None
                   ) -> list[tuple[int, float]]:
        """(chunk id, bm25) of the best ``k`` full-text matches (lower bm25 is better)."""
        if not match:
            return []
        sql = "SELECT rowid, bm25(chunks_fts) FROM chunks_fts WHERE chunks_fts MATCH ?"
        params: list[Any] = [match]
        where = filters.chunk_sql("chunks_fts.rowid") if filters else None
        if where is not None:
            sql += f" AND {where.sql}"
            params += where.params
        sql += " ORDER BY bm25(chunks_fts) LIMIT ?"
        params.append(max(1, k))
        return [(int(i), float(s)) for i, s in self.db.execute(sql, params)]

    def fts_search_with(self, match: str, k: int, ids: Iterable[int],
                        filters: Compiled | None = None
                        ) -> tuple[list[tuple[int, float]], dict[int, float]]:
        """:meth:`fts_search`'s best ``k``, and the bm25 of each chunk in ``ids`` that matches.

        One full-text scan for both (hybrid needs the words' score of the chunks the
        vectors found, too): asking FTS5 for a few rowids runs the whole query again
        for each, ~60 ms over 100k chunks. The ``ids`` sort first, then the rest by
        bm25, so the limit covers both; chunks that do not match are left out.
        """
        wanted = list(dict.fromkeys(ids))
        if not match:
            return [], {}
        marks = ", ".join("?" for _ in wanted) or "NULL"
        sql = (f"SELECT rowid, bm25(chunks_fts) AS s, rowid IN ({marks}) AS wanted "
               "FROM chunks_fts WHERE chunks_fts MATCH ?")
        params: list[Any] = [*wanted, match]
        where = filters.chunk_sql("chunks_fts.rowid") if filters else None
        if where is not None:
            sql += f" AND {where.sql}"
            params += where.params
        sql += " ORDER BY wanted DESC, s LIMIT ?"
        params.append(max(1, k) + len(wanted))
        rows = [(int(i), float(score), bool(w)) for i, score, w in self.db.execute(sql, params)]
        best = sorted(rows, key=lambda r: r[1])[:max(1, k)]
        return [(i, score) for i, score, _ in best], {i: score for i, score, w in rows if w}

    def distances(self, ids: Iterable[int], query: np.ndarray) -> dict[int, float]:
        """Cosine distance of each stored chunk in ``ids`` to ``query``."""
        wanted = list(ids)
        if not wanted:
            return {}
        blob = np.ascontiguousarray(query, dtype=np.float32).tobytes()
        marks = ", ".join("?" for _ in wanted)
        return {int(i): float(d) for i, d in self.db.execute(
            f"SELECT chunk_id, vec_distance_cosine(vector, ?) FROM embeddings "
            f"WHERE chunk_id IN ({marks})", [blob, *wanted])}

    def chunks(self, ids: Sequence[int]) -> dict[int, ChunkRow]:
        if not ids:
            return {}
        marks = ", ".join("?" for _ in ids)
        result = self.db.execute(
            "SELECT c.id, c.text, c.ordinal, c.line, c.start, c.end, s.path, d.key, d.meta "
            "FROM chunks c JOIN docs d ON c.doc_id = d.id "
            f"LEFT JOIN sources s ON d.source_id = s.id WHERE c.id IN ({marks})", list(ids))
        return {
            r[0]: ChunkRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6] or "", r[7], json.loads(r[8]))
            for r in result
        }

    def count_matching(self, filters: Compiled | None = None) -> int:
        """Chunks that match ``filters`` (all chunks without)."""
        where = filters.chunk_sql("chunks.id") if filters else None
        if where is None:
            return int(self.db.execute("SELECT count(*) FROM chunks").fetchone()[0])
        return int(self.db.execute(f"SELECT count(*) FROM chunks WHERE {where.sql}",
                                   where.params).fetchone()[0])

    def key_exists(self, key: str) -> bool:
        return self.db.execute("SELECT 1 FROM meta WHERE key = ? LIMIT 1",
                               (key,)).fetchone() is not None

    def all_keys(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT DISTINCT key FROM meta ORDER BY key")]

    def stats(self) -> dict[str, int]:
        one = self.db.execute
        return {
            "sources": int(one("SELECT count(*) FROM sources").fetchone()[0]),
            "documents": int(one("SELECT count(*) FROM docs").fetchone()[0]),
            "chunks": int(one("SELECT count(*) FROM chunks").fetchone()[0]),
        }


class BulkWriter:
    """Adds documents without a source file inside :meth:`TopicIndex.bulk`."""

    def __init__(self, index: TopicIndex) -> None:
        self.index = index

    def add(self, doc: PreparedDoc) -> int:
        return self.index._insert_doc(None, doc)


#: SQLite's primary result codes for a file that cannot be written (disk, I/O, permissions).
_WRITE_FAILURES = {8: "the index file is read-only", 10: "a disk I/O error",
                   13: "the disk is full", 14: "the index file cannot be opened"}


def write_failure(error: sqlite3.Error, path: Path) -> IndexWriteError | None:
    """The IndexWriteError an SQLite error means, or None when it is about something else."""
    code = getattr(error, "sqlite_errorcode", None)
    what = _WRITE_FAILURES.get(code & 0xFF) if isinstance(code, int) else None
    return IndexWriteError(path, f"{what} ({error})") if what else None


@contextmanager
def _transaction(db: sqlite3.Connection, path: Path) -> Iterator[None]:
    """One write transaction; a full disk or I/O error becomes IndexWriteError, rolled back."""
    try:
        db.execute("BEGIN IMMEDIATE")
        try:
            yield
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:  # SQLite may have rolled back already (SQLITE_FULL)
                db.execute("ROLLBACK")
            raise
    except sqlite3.Error as e:
        failure = write_failure(e, path)
        if failure is None:
            raise
        raise failure from None


def sign_bits(vectors: np.ndarray) -> np.ndarray:
    """Each row's signs packed as sqlite-vec's ``bit[]`` (bit i of byte i // 8 is dim i > 0).

    The same layout as sqlite-vec's ``vec_quantize_binary``, computed here so that a
    dimension that is not a multiple of 8 is padded with zero bits rather than refused.
    """
    return np.packbits(np.asarray(vectors) > 0, axis=-1, bitorder="little")


def _bits_width(dim: int) -> int:
    return -(-int(dim) // 8) * 8


def _vectors_ddl(table: str, config: TopicConfig) -> str:
    columns = ["chunk_id integer primary key", f"bits bit[{_bits_width(config.dim)}]"]
    for declared in config.declared:
        columns.append(f"{declared.column} {COLUMN_TYPES[declared.type]}")
        columns.append(f"{declared.flag} boolean")
    columns.append(f"chunk_size={BITS_CHUNK_SIZE}")
    return f"CREATE VIRTUAL TABLE {table} USING vec0({', '.join(columns)})"


def _insert_bits_sql(config: TopicConfig) -> str:
    columns = ["chunk_id", "bits"]
    for declared in config.declared:
        columns += [declared.column, declared.flag]
    values = ["?", "vec_bit(?)"] + ["?"] * (len(columns) - 2)
    return f"INSERT INTO vector_bits({', '.join(columns)}) VALUES ({', '.join(values)})"


_SCHEMA = """
CREATE TABLE info(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE sources(
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL UNIQUE,
    sha256 TEXT NOT NULL,
    size INTEGER NOT NULL,
    complete INTEGER NOT NULL
);
CREATE TABLE docs(
    id INTEGER PRIMARY KEY,
    source_id INTEGER REFERENCES sources(id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    line INTEGER NOT NULL,
    meta TEXT NOT NULL
);
CREATE INDEX docs_source ON docs(source_id);
CREATE TABLE chunks(
    id INTEGER PRIMARY KEY,
    doc_id INTEGER NOT NULL REFERENCES docs(id) ON DELETE CASCADE,
    ordinal INTEGER NOT NULL,
    text TEXT NOT NULL,
    start INTEGER NOT NULL,
    end INTEGER NOT NULL,
    line INTEGER NOT NULL,
    n_tokens INTEGER NOT NULL
);
CREATE INDEX chunks_doc ON chunks(doc_id);
CREATE TABLE embeddings(
    chunk_id INTEGER PRIMARY KEY REFERENCES chunks(id) ON DELETE CASCADE,
    vector BLOB NOT NULL
);
CREATE TABLE meta(
    doc_id INTEGER NOT NULL REFERENCES docs(id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    t TEXT,
    n REAL,
    d INTEGER
);
CREATE INDEX meta_doc ON meta(doc_id);
CREATE INDEX meta_t ON meta(key, t);
CREATE INDEX meta_n ON meta(key, n);
CREATE INDEX meta_d ON meta(key, d);
CREATE VIRTUAL TABLE chunks_fts USING fts5(
    text, content='chunks', content_rowid='id', tokenize='{tokenize}'
);
CREATE TRIGGER chunks_ai AFTER INSERT ON chunks BEGIN
    INSERT INTO chunks_fts(rowid, text) VALUES (new.id, new.text);
END;
CREATE TRIGGER chunks_ad AFTER DELETE ON chunks BEGIN
    INSERT INTO chunks_fts(chunks_fts, rowid, text) VALUES ('delete', old.id, old.text);
END;
"""
