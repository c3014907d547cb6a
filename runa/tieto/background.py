"""Ingests in the background: one at a time, in order, beside everything else the daemon does.

An ingest of a large folder takes minutes (embedding is most of it). Run on the daemon's
loop it would hold up every ``recall``, ``complete`` and ``/rag`` question, and the filing
of promoted keys, until it ended. So the daemon hands each ingest to an :class:`IngestQueue`:
one worker thread with its own :class:`~runa.tieto.api.Tieto` (its own SQLite connections;
WAL lets the daemon's connections read meanwhile, and each file is committed on its own) and
the daemon's embedding model behind a lock (``LockedEmbedder``: llama.cpp contexts are not
thread-safe; a question waits at most one embedding batch).

An ingest whose requester is gone (its process exited, its reply channel was reaped) is
stopped at its next file or embedding batch: nobody would read the answer, and it would hold
up every ingest queued behind it. Files it finished are kept either way, and a topic it was
creating too (runa.tieto.api). :meth:`IngestQueue.describe` lists the running and waiting
ingests with their ids, so a person can see them (``runa ingest --status``) and cancel one.

Plain Python: requests are dicts of arguments and results go to callables, so the tests drive
it without a bus.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from runa import log
from runa.errors import RunaError
from runa.tieto.api import Tieto
from runa.tieto.embed import Embedder, EmbedderWrapper
from runa.tieto.ingest import IngestEvent, IngestReport


class IngestCancelled(RunaError):
    """The ingest was cancelled (by its client, or because tieto is stopping)."""

    exit_code = 130


class RequesterGone(IngestCancelled):
    """Nobody waits for the ingest any more: the process that asked for it is gone."""


#: How often a running ingest looks whether its requester is still there.
REQUESTER_CHECK_S = 1.0
#: Progress stages that finish one file (``embed`` is a batch within a file).
_FILE_STAGES = frozenset({"ingested", "unchanged", "failed", "skipped"})


def _never_gone() -> str | None:
    return None


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
    requester_gone: Callable[[], str | None] = _never_gone
    """Why nobody waits for the answer any more (the requester exited), or None."""
    requester: str = ""
    """Who asked (the client's name), for the status."""
    files_done: int = 0
    files_total: int = 0
    current: str = ""
    """The file being worked on."""
    submitted_at: float = field(default_factory=time.time)
    started_at: float | None = None

    def note(self, event: IngestEvent) -> None:
        """Follow the job's progress (for the status and for what a stopped job kept)."""
        self.current = event.path
        if event.stage in _FILE_STAGES and event.total:
            self.files_done, self.files_total = event.done, event.total

    def kept(self) -> str:
        """What an interrupted job leaves behind, in words."""
        if not self.files_total:
            return "no file was done"
        return f"{self.files_done} of {self.files_total} files done are kept"

    def describe(self, state: str) -> dict[str, Any]:
        return {"id": self.id, "topic": self.topic, "state": state,
                "paths": [str(p) for p in self.paths], "requester": self.requester,
                "done": self.files_done, "total": self.files_total, "current": self.current,
                "submitted_at": self.submitted_at, "started_at": self.started_at}


class IngestQueue:
    """Runs :class:`IngestJob` s one after another in a worker thread.

    ``finished`` is called (from the worker) with each job's topic when it ends, however it
    ends, so the daemon can drop its cached handle of a topic whose file was replaced.
    """

    def __init__(self, tieto: Tieto, finished: Callable[[str], None],
                 logger: logging.Logger, *, requester_check_s: float = REQUESTER_CHECK_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.tieto = tieto
        self.finished = finished
        self.logger = logger
        self.requester_check_s = requester_check_s
        self.clock = clock
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
        """The running ingest's topic, how many wait, and each of them (running first)."""
        with self._lock:
            running = [self._running.describe("running")] if self._running else []
            return {"ingesting": self._running.topic if self._running else None,
                    "ingests_waiting": len(self._jobs),
                    "ingests": running + [job.describe("waiting") for job in self._jobs]}

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
            job.started_at = time.time()
            answer = self._one(job)
            # Closed between jobs: a restore on the daemon's side may replace any file.
            self.tieto.close()
            with self._lock:
                self._running = None
            self.finished(job.topic)
            answer()  # last: a client that asks again at once finds the topic free

    def _one(self, job: IngestJob) -> Callable[[], None]:
        """Run ``job``; what tells its client how it ended."""
        next_check = self.clock() + self.requester_check_s  # just looked, below

        def progress(event: IngestEvent) -> None:
            nonlocal next_check
            job.note(event)
            if job.cancelled.is_set():
                raise IngestCancelled(f"the ingest into {job.topic!r} was cancelled; "
                                      f"{job.kept()}")
            if self.clock() >= next_check:
                next_check = self.clock() + self.requester_check_s
                self._check_requester(job)
            job.progress(event)

        try:
            self._check_requester(job)
            report = self.tieto.ingest(job.paths, job.topic, filterable=job.filterable,
                                       rebuild=job.rebuild, progress=progress)
        except RequesterGone as gone:  # nobody to answer: say it in the log instead
            log.event(self.logger, "ingest_orphaned", str(gone), level=logging.WARNING,
                      ingest=job.id, topic=job.topic, done=job.files_done,
                      total=job.files_total)
            return _nothing
        except Exception as error:  # answered; the worker goes on with the next job
            if not isinstance(error, RunaError):
                self.logger.exception("ingest into %s failed: %s", job.topic, error)
            return functools.partial(job.failed, error)
        return functools.partial(job.done, report)

    @staticmethod
    def _check_requester(job: IngestJob) -> None:
        """RequesterGone when the process that asked for ``job`` is gone."""
        reason = job.requester_gone()
        if reason is not None:
            raise RequesterGone(f"stopped the ingest {job.id} into {job.topic!r}: {reason}; "
                                f"{job.kept()}")


def _nothing() -> None:
    pass
