"""tieto as one object: topics on disk, one embedding model, ingest and recall.

The CLI builds a :class:`Tieto` per command; the daemon (issue 11) will build one
at start and keep it, so the model is loaded once and indexes stay open. Both
get their settings from :meth:`TietoSettings.from_config` and can inject an
embedder (tests use a small deterministic one).
"""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from runa.paths import Paths
from runa.protocol.answer import Grounding, Hit
from runa.protocol.tieto import UNCITED, OutOfRange, check_number
from runa.tieto.answer import ground
from runa.tieto.embed import Embedder, LlamaEmbedder, embedding_model_path
from runa.tieto.errors import IndexWriteError, UnknownTopicError
from runa.tieto.filters import parse as parse_filter
from runa.tieto.index import TopicIndex
from runa.tieto.ingest import Ingester, IngestReport, Progress
from runa.tieto.memory import Memory
from runa.tieto.recall import RecallParams, recall
from runa.tieto.snapshot import restore, snapshot
from runa.tieto.topic import TopicConfig, check_topic_name, declare

INDEX_FILE = "index.sqlite"


@dataclass(frozen=True)
class TietoSettings:
    root: Path
    """Directory holding one subdirectory per topic."""
    embedding_model: str = "default"
    model_dirs: tuple[Path, ...] = ()
    threads: int = -1
    chunk_tokens: int = 254
    overlap: int = 32
    recall: RecallParams = field(default_factory=RecallParams)
    sieve: float = 0.35
    """Completions: sources under this cosine similarity are not given to the model."""
    complete_k: int = 3
    uncited: str = "mark"
    """An answer citing none of its sources: ``mark`` it, or ``refuse`` (I don't know)."""
    short_term_topic: str = "short-term"

    @classmethod
    def from_config(cls, config: Mapping[str, Any], paths: Paths) -> TietoSettings:
        root = config["tieto.dir"] or str(paths.data / "tieto")
        return cls(
            root=Path(root).expanduser(),
            embedding_model=config["tieto.embedding_model"],
            model_dirs=tuple(paths.models),
            threads=config["tieto.threads"],
            chunk_tokens=config["tieto.chunk_tokens"],
            overlap=config["tieto.chunk_overlap"],
            recall=RecallParams(
                k=config["tieto.k"], mode=config["tieto.mode"],
                candidates=config["tieto.candidates"], rrf_k=config["tieto.rrf_k"],
                fts_weight=config["tieto.fts_weight"], fusion=config["tieto.fusion"],
                min_similarity=config["tieto.min_similarity"],
            ),
            sieve=config["tieto.sieve"], complete_k=config["tieto.complete_k"],
            uncited=config["tieto.uncited"],
            short_term_topic=config["tieto.short_term_topic"],
        )  # fmt: skip


class Tieto:
    """Topics under ``settings.root``; the embedding model is loaded on first need."""

    def __init__(self, settings: TietoSettings,
                 embedder_factory: Callable[[], Embedder] | None = None) -> None:
        self.settings = settings
        self._factory = embedder_factory or self._load_embedder
        self._owns_embedder = embedder_factory is None
        """An injected embedder may be shared; only one this object loaded is closed here."""
        self._embedder: Embedder | None = None
        self._open: dict[str, TopicIndex] = {}

    def _load_embedder(self) -> Embedder:
        path = embedding_model_path(self.settings.embedding_model, self.settings.model_dirs)
        return LlamaEmbedder(path, threads=self.settings.threads,
                             max_tokens=self.settings.chunk_tokens)

    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = self._factory()
        return self._embedder

    def index_path(self, topic: str) -> Path:
        return self.settings.root / check_topic_name(topic) / INDEX_FILE

    def topics(self) -> list[str]:
        try:
            return sorted(p.parent.name for p in self.settings.root.glob(f"*/{INDEX_FILE}"))
        except OSError:
            return []

    def open(self, topic: str) -> TopicIndex:
        """The index of an existing topic; UnknownTopicError listing the known ones."""
        if topic not in self._open:
            path = self.index_path(topic)
            if not path.is_file():
                raise UnknownTopicError(topic, self.topics())
            self._open[topic] = TopicIndex.open(path)
        return self._open[topic]

    def release(self, topic: str) -> None:
        """Close the open handle of ``topic``: another connection created or replaced its file."""
        index = self._open.pop(topic, None)
        if index is not None:
            index.close()

    def _drop(self, topic: str) -> None:
        self.release(topic)
        shutil.rmtree(self.index_path(topic).parent, ignore_errors=True)

    def ingest(self, paths: Sequence[Path], topic: str, *,
               filterable: Sequence[tuple[str, str]] | None = None, rebuild: bool = False,
               progress: Progress | None = None) -> IngestReport:
        """Ingest ``paths`` into ``topic``, creating it if needed.

        ``filterable`` (key, type) pairs declare the topic's filterable keys; given
        for an existing topic with other keys, its vector table is rebuilt (no
        re-embedding). ``rebuild`` starts the topic over from nothing.
        """
        path = self.index_path(topic)
        if rebuild:
            self._drop(topic)
        if path.is_file():
            index = self.open(topic)
            if filterable is not None:
                wanted = declare(filterable)
                if wanted != index.config.declared:
                    config = replace(index.config, declared=wanted)
                    index.redeclare(config, config.declared_values)
        created = not path.is_file()
        if created:
            embedder = self.embedder()
            config = TopicConfig(topic, embedder.model_id, embedder.dim,
                                 declare(filterable or ()))
            try:
                index = self._open[topic] = TopicIndex.create(path, config)
            except IndexWriteError as e:
                self._drop(topic)
                raise e.topic_not_created() from None
        ingester = Ingester(index, self.embedder, chunk_tokens=self.settings.chunk_tokens,
                            overlap=self.settings.overlap, progress=progress)
        try:
            report = ingester.run(paths)
        except BaseException as e:
            # Interrupted (Ctrl-C, a cancel, a full disk): a new topic keeps the files it
            # finished, as an existing one does; only one with none is removed again.
            if created and self._drop_if_empty(topic, index) and isinstance(e, IndexWriteError):
                raise e.topic_not_created() from None
            raise
        if created:
            self._drop_if_empty(topic, index)  # nothing usable: leave no empty topic behind
        return report

    def _drop_if_empty(self, topic: str, index: TopicIndex) -> bool:
        """Remove ``topic`` when it holds no file; whether it did. One that cannot be read
        is left alone: it may hold what an interrupted ingest finished."""
        try:
            empty = index.stats()["sources"] == 0
        except sqlite3.Error:  # keeping it is the safe answer
            return False
        if empty:
            self._drop(topic)
        return empty

    def recall(self, question: str, topic: str, filters: Sequence[str] = (),
               **overrides: Any) -> list[Hit]:
        """Hits for ``question``; ``overrides`` change RecallParams fields (k, mode, …)."""
        index = self.open(topic)
        conditions = [parse_filter(f) for f in filters]
        params = replace(self.settings.recall, **overrides)
        needs_model = params.mode != "fts" or params.min_similarity > 0
        return recall(index, question, self.embedder() if needs_model else None,
                      conditions, params)

    def ground(self, question: str, topic: str, filters: Sequence[str] = (),
               **overrides: Any) -> Grounding:
        """The sources a completion may cite: ``complete_k`` hits at or above the sieve.

        ``overrides`` may set ``k``, ``sieve`` and ``uncited`` besides the RecallParams fields.
        """
        uncited = overrides.pop("uncited", None) or self.settings.uncited
        if uncited not in UNCITED:
            raise OutOfRange(f"uncited must be one of {', '.join(UNCITED)}, not {uncited!r}")
        sieve = overrides.pop("sieve", None)
        sieve = self.settings.sieve if sieve is None else sieve
        check_number("sieve", sieve)
        overrides.setdefault("k", self.settings.complete_k)
        hits = self.recall(question, topic, filters, **overrides)
        return ground(question, topic, hits, sieve, uncited)

    def remember(self, memory: Memory) -> int:
        """File one short-term memory (a promoted bus key); chunks embedded (0: unchanged)."""
        path = self.index_path(memory.topic)
        if path.is_file():
            index = self.open(memory.topic)
        else:
            embedder = self.embedder()
            config = TopicConfig(memory.topic, embedder.model_id, embedder.dim, declare(()))
            index = self._open[memory.topic] = TopicIndex.create(path, config)
        ingester = Ingester(index, self.embedder, chunk_tokens=self.settings.chunk_tokens,
                            overlap=self.settings.overlap)
        return ingester.put(memory.name, memory.sha256, [memory.record])

    def snapshot(self, topic: str, dest: Path) -> int:
        """Write a consistent copy of ``topic`` to the new file ``dest``; its size."""
        return snapshot(self.open(topic), dest)

    def restore(self, topic: str, source: Path) -> None:
        """Replace ``topic`` (created if new) with the snapshot ``source``."""
        path = self.index_path(topic)
        index = self._open.pop(topic, None)
        if index is not None:
            index.close()
        restore(source, path, topic)

    def close(self) -> None:
        for index in self._open.values():
            index.close()
        self._open.clear()
        close = getattr(self._embedder, "close", None)
        if close is not None and self._owns_embedder:
            close()
        self._embedder = None
