"""Ingests in the background: one at a time, in order, beside everything else the daemon does.

An ingest of a large folder takes minutes (embedding is most of it). Run on the daemon's
loop it would hold up every ``recall``, ``complete`` and ``/rag`` question, and the filing
of promoted keys, until it ended. So the daemon hands each ingest to an :class:`IngestQueue`:
one worker thread with its own :class:`~runa.tieto.api.Tieto` (its own SQLite connections;
WAL lets the daemon's connections read meanwhile, and each file is committed on its own) and
the daemon's embedding model behind a lock (``LockedEmbedder``: llama.cpp contexts are not
thread-safe; a question waits at most one embedding batch).

Plain Python: requests are dicts of arguments and results go to callables, so the tests drive
it without a bus.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from runa.errors import RunaError
from runa.tieto.api import Tieto
from runa.tieto.embed import Embedder, EmbedderWrapper
from runa.tieto.ingest import IngestEvent, IngestReport


class IngestCancelled(RunaError):
    """The ingest was cancelled (by its client, or because tieto is stopping)."""

    exit_code = 130


class LockedEmbedder(EmbedderWrapper):
    """One embedding model shared by threads: each call holds ``lock``."""

    def __init__(self, inner: Embedder, lock: threading.Lock) -> None:
        super().__init__(inner)
        self.lock = lock

    def count_tokens(self, text: str) -> int:
        with self.lock:
            return self.inner.count_tokens(text)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        with self.lock:
            return self.inner.embed(texts)


@dataclass
class IngestJob:
    """One ``ingest`` request: its id, topic and arguments, and where its results go."""

    id: str
    topic: str
    paths: list[Path]
    filterable: list[tuple[str, str]] | None
    rebuild: bool
    progress: Callable[[IngestEvent], None]
    done: Callable[[IngestReport], None]
    failed: Callable[[BaseException], None]
    cancelled: threading.Event = field(default_factory=threading.Event)


class IngestQueue:
    """Runs :class:`IngestJob` s one after another in a worker thread.

    ``finished`` is called (from the worker) with each job's topic when it ends, however it
    ends, so the daemon can drop its cached handle of a topic whose file was replaced.
    """

    def __init__(self, tieto: Tieto, finished: Callable[[str], None],
                 logger: logging.Logger) -> None:
        self.tieto = tieto
        self.finished = finished
        self.logger = logger
        self._jobs: deque[IngestJob] = deque()
        self._running: IngestJob | None = None
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._stopping = False
        self.thread = threading.Thread(target=self._run, name="tieto-ingest", daemon=True)
        self.thread.start()

    def submit(self, job: IngestJob) -> int:
        """Queue ``job``; the number of ingests ahead of it."""
        with self._wake:
            ahead = len(self._jobs) + (self._running is not None)
            self._jobs.append(job)
            self._wake.notify()
        return ahead

    def busy_topics(self) -> set[str]:
        """Topics with an ingest running or waiting (a restore must not replace them)."""
        with self._lock:
            running = {self._running.topic} if self._running else set()
            return running | {job.topic for job in self._jobs}

    def describe(self) -> dict[str, Any]:
        with self._lock:
            return {"ingesting": self._running.topic if self._running else None,
                    "ingests_waiting": len(self._jobs)}

    def cancel(self, job_id: str) -> bool:
        """Cancel a waiting or running job; False when there is none with that id."""
        with self._lock:
            if self._running is not None and self._running.id == job_id:
                self._running.cancelled.set()
                return True
            waiting = next((j for j in self._jobs if j.id == job_id), None)
            if waiting is None:
                return False
            self._jobs.remove(waiting)
        waiting.failed(IngestCancelled(f"the ingest into {waiting.topic!r} was cancelled "
                                       "before it started"))
        return True

    def stop(self, timeout: float) -> bool:
        """Cancel everything, wait up to ``timeout`` for the worker; True when it ended."""
        with self._wake:
            self._stopping = True
            waiting, self._jobs = list(self._jobs), deque()
            if self._running is not None:
                self._running.cancelled.set()
            self._wake.notify()
        for job in waiting:
            job.failed(IngestCancelled("tieto stopped before this ingest started; run it again"))
        self.thread.join(timeout)
        if self.thread.is_alive():
            return False
        self.tieto.close()
        return True

    def _next(self) -> IngestJob | None:
        with self._wake:
            while not self._jobs and not self._stopping:
                self._wake.wait()
            if self._stopping:
                return None
            self._running = self._jobs.popleft()
            return self._running

    def _run(self) -> None:
        while (job := self._next()) is not None:
            answer = self._one(job)
            # Closed between jobs: a restore on the daemon's side may replace any file.
            self.tieto.close()
            with self._lock:
                self._running = None
            self.finished(job.topic)
            answer()  # last: a client that asks again at once finds the topic free

    def _one(self, job: IngestJob) -> Callable[[], None]:
        """Run ``job``; what tells its client how it ended."""
        def progress(event: IngestEvent) -> None:
            if job.cancelled.is_set():
                raise IngestCancelled(
                    f"the ingest into {job.topic!r} was cancelled; the files ingested until "
                    "then are kept (a topic being created is not)")
            job.progress(event)

        try:
            report = self.tieto.ingest(job.paths, job.topic, filterable=job.filterable,
                                       rebuild=job.rebuild, progress=progress)
        except Exception as error:  # answered; the worker goes on with the next job
            if not isinstance(error, RunaError):
                self.logger.exception("ingest into %s failed: %s", job.topic, error)
            return functools.partial(job.failed, error)
        return functools.partial(job.done, report)
