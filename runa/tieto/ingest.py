"""Bring files into a topic's index, doing only the work that changed.

Per file: read it, compare its sha256 with the one stored — unchanged files are
skipped without loading the embedding model — else parse, chunk, embed and
replace the file's previous content in one transaction. Files that were
ingested from under a directory given again but are no longer there are
removed. A file that cannot be read or parsed is reported (file and line) and
left as it was in the index; the rest goes on. A FIFO, socket or device where a file
was expected is skipped, its reason reported, without waiting on it. A JSONL file with some broken
lines keeps its good lines and is marked incomplete: while it is unchanged the
next run embeds nothing but parses it again to name the broken lines again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from runa.tieto.chunk import Chunk, Chunker
from runa.tieto.embed import Embedder
from runa.tieto.errors import IndexWriteError, InputError, MetadataError, NotRegularFileError
from runa.tieto.index import PreparedDoc, TopicIndex
from runa.tieto.sources import Record, parse, read_bytes, walk
from runa.tieto.topic import DeclaredValueError

#: Chunks embedded per call: big enough to keep llama.cpp busy, small enough for progress.
EMBED_BATCH = 32


@dataclass(frozen=True)
class IngestEvent:
    """Progress: ``stage`` is one of scan, unchanged, ingested, failed, skipped, removed, embed."""

    stage: str
    path: str
    done: int
    """Files handled so far (for ``embed``: chunks of this file embedded so far)."""
    total: int
    chunks: int = 0
    message: str = ""


Progress = Callable[[IngestEvent], None]


@dataclass
class IngestReport:
    files: int = 0
    unchanged: int = 0
    ingested: int = 0
    removed: int = 0
    failed: int = 0
    chunks_embedded: int = 0
    seconds: float = 0.0
    problems: list[InputError] = field(default_factory=list)
    skipped: list[InputError] = field(default_factory=list)
    """Things that are not regular files (a FIFO, a socket): not read, not a failure."""

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {
            "files": self.files, "unchanged": self.unchanged, "ingested": self.ingested,
            "removed": self.removed, "failed": self.failed,
            "chunks_embedded": self.chunks_embedded, "seconds": round(self.seconds, 3),
            "problems": [{"path": p.path, "line": p.line, "problem": p.problem}
                         for p in self.problems],
            "skipped": [{"path": p.path, "line": p.line, "problem": p.problem}
                        for p in self.skipped],
        }  # fmt: skip


def _ignore(_: IngestEvent) -> None:
    pass


class Ingester:
    """Ingests paths into one index; the embedder is fetched only when a file changed."""

    def __init__(self, index: TopicIndex, embedder: Callable[[], Embedder], *,
                 chunk_tokens: int = 254, overlap: int = 32, progress: Progress | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.index = index
        self._get_embedder = embedder
        self._embedder: Embedder | None = None
        self._chunker: Chunker | None = None
        self.chunk_tokens = chunk_tokens
        self.overlap = overlap
        self.progress = progress or _ignore
        self.clock = clock

    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = self._get_embedder()
            self.index.check_embedder(self._embedder.model_id, self._embedder.dim)
        return self._embedder

    def chunker(self) -> Chunker:
        if self._chunker is None:
            embedder = self.embedder()
            self._chunker = Chunker(embedder.count_tokens,
                                    min(self.chunk_tokens, embedder.max_tokens), self.overlap)
        return self._chunker

    def run(self, paths: Sequence[Path]) -> IngestReport:
        started = self.clock()
        report = IngestReport()
        roots = [Path(p).absolute() for p in paths]
        files = list(walk([r for r in roots if r.exists()]))
        report.files = len(files)
        seen: set[str] = set()
        try:
            for number, (_, path) in enumerate(files, start=1):
                seen.add(str(path))
                self._one(path, number, len(files), report)
            for root in roots:
                self._remove_missing(root, seen, report)
        except IndexWriteError as e:  # every later file would fail the same way: stop here
            raise e.during_ingest(report.ingested, report.files) from None
        report.seconds = self.clock() - started
        return report

    def put(self, name: str, sha256: str, records: Sequence[Record]) -> int:
        """Store ``records`` as the content of source ``name`` (not a file: e.g. a bus key);
        the number of chunks embedded, 0 when ``sha256`` is what the source already has.

        MetadataError when a record's metadata does not fit the topic's declared keys.
        """
        known = self.index.source(name)
        if known is not None and known.sha256 == sha256:
            return 0
        docs, problems = self._prepare(records, Path(name), 1, 1)
        if problems:
            raise problems[0]
        size = sum(len(r.text.encode()) for r in records)
        return self.index.replace_source(name, sha256, size, True, docs)

    def _one(self, path: Path, number: int, total: int, report: IngestReport) -> None:
        name = str(path)
        try:
            data, sha = read_bytes(path)
            known = self.index.source(name)
            if known is not None and known.sha256 == sha:
                report.unchanged += 1
                if not known.complete:  # its good lines are in; name the broken ones again
                    self._report_problems(list(parse(path, data, sha).problems), report)
                self.progress(IngestEvent("unchanged", name, number, total))
                return
            source = parse(path, data, sha)
            docs, problems = self._prepare(source.records, path, number, total)
            problems = list(source.problems) + problems
            if not docs and problems:
                raise problems[0] if len(problems) == 1 else InputError(
                    path, problems[0].line, f"nothing usable ({len(problems)} problems)")
            added = self.index.replace_source(name, sha, source.size, not problems, docs)
        except NotRegularFileError as e:
            report.skipped.append(e)
            self.progress(IngestEvent("skipped", name, number, total, message=str(e)))
            return
        except InputError as e:
            report.failed += 1
            report.problems.append(e)
            self.progress(IngestEvent("failed", name, number, total, message=str(e)))
            return
        except OSError as e:
            problem = InputError(path, None, f"cannot read it: {e.strerror or e}")
            report.failed += 1
            report.problems.append(problem)
            self.progress(IngestEvent("failed", name, number, total, message=str(problem)))
            return
        self._report_problems(problems, report)
        report.ingested += 1
        report.chunks_embedded += added
        self.progress(IngestEvent("ingested", name, number, total, chunks=added))

    def _report_problems(self, problems: list[InputError], report: IngestReport) -> None:
        """Problems of a file that was still (partly) ingested."""
        if not problems:
            return
        report.failed += 1
        for problem in problems:
            report.problems.append(problem)
            self.progress(IngestEvent("failed", problem.path, 0, 0, message=str(problem)))

    def _prepare(self, records: Sequence[Record], path: Path, number: int, total: int
                 ) -> tuple[list[PreparedDoc], list[InputError]]:
        problems: list[InputError] = []
        planned: list[tuple[Record, list[Any], list[Chunk]]] = []
        config = self.index.config
        for record in records:
            try:
                declared = config.declared_values(record.meta)
            except DeclaredValueError as e:
                line = record.meta_lines.get(e.key, record.line)
                problems.append(MetadataError(path, line, str(e)))
                continue
            chunks = self.chunker().split(record.text)
            if chunks:
                planned.append((record, declared, chunks))
        texts = [c.text for _, _, chunks in planned for c in chunks]
        vectors = self._embed(texts, str(path), number, total)
        docs = []
        offset = 0
        for record, declared, chunks in planned:
            docs.append(PreparedDoc(record, chunks, vectors[offset : offset + len(chunks)],
                                    declared))
            offset += len(chunks)
        return docs, problems

    def _embed(self, texts: list[str], name: str, number: int, total: int) -> np.ndarray:
        embedder = self.embedder()
        parts = []
        for start in range(0, len(texts), EMBED_BATCH):
            parts.append(embedder.embed(texts[start : start + EMBED_BATCH]))
            self.progress(IngestEvent("embed", name, number, total,
                                      chunks=min(start + EMBED_BATCH, len(texts))))
        if not parts:
            return np.zeros((0, embedder.dim), dtype=np.float32)
        return np.concatenate(parts)

    def _remove_missing(self, root: Path, seen: set[str], report: IngestReport) -> None:
        """Forget files that were ingested from under ``root`` and are gone now."""
        gone = [p for p in self.index.source_paths()
                if p not in seen and _under(Path(p), root) and not Path(p).exists()]
        for path in gone:
            self.index.remove_source(path)
            report.removed += 1
            self.progress(IngestEvent("removed", path, report.removed, len(gone)))
        if not root.exists() and not gone and not any(
                _under(Path(p), root) for p in self.index.source_paths()):
            problem = InputError(root, None, "no such file or directory")
            report.problems.append(problem)
            report.failed += 1
            self.progress(IngestEvent("failed", str(root), 0, 0, message=str(problem)))


def _under(path: Path, root: Path) -> bool:
    return path == root or path.is_relative_to(root)
