"""How a command reaches tieto: through the daemon when it runs, in-process when it does not.

``open_tieto`` looks for a running ``runa daemon tieto`` (its queue and heartbeat
on the stack's bus) and returns a :class:`Remote` speaking its bus protocol
(docs/protocol.md, "tieto"); otherwise a :class:`Local` over the library. Both
answer the same calls with the same types, so ``runa recall``, ``runa ingest``,
``runa topic`` and ``runa chat``'s ``/rag`` do not care which they got; only the
daemon keeps the model loaded between calls. A completion needs splinfer either
way, reached over the bus.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Protocol

from runa import stackbus as bus_mod
from runa.client import ServiceClient, ServiceFault, ServiceUnavailable
from runa.config import Config
from runa.errors import RunaError
from runa.paths import Paths
from runa.protocol.answer import Grounding, Hit
from runa.protocol.tieto import request
from runa.splinter import Bus
from runa.tieto.answer import complete
from runa.tieto.api import Tieto, TietoSettings
from runa.tieto.embed import Embedder
from runa.tieto.errors import InputError
from runa.tieto.ingest import IngestEvent, IngestReport, Progress

SERVICE = "tieto"


class TietoServiceError(RunaError):
    """The daemon refused or failed a request; its message and exit status as sent."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class TietoAccess(Protocol):
    """What the commands use; :class:`Remote` and :class:`Local` both provide it."""

    via: str

    def recall(self, question: str, topic: str, filters: Sequence[str] = (),
               **overrides: Any) -> list[Hit]: ...

    def ground(self, question: str, topic: str, filters: Sequence[str] = (),
               **overrides: Any) -> Grounding: ...

    def complete(self, question: str, topic: str, filters: Sequence[str] = (), *,
                 params: dict[str, Any] | None = None, **overrides: Any
                 ) -> Iterator[dict[str, Any]]: ...

    def ingest(self, paths: Sequence[Path], topic: str, *,
               filterable: Sequence[tuple[str, str]] | None = None, rebuild: bool = False,
               progress: Progress | None = None) -> IngestReport: ...

    def snapshot(self, topic: str, dest: Path) -> int: ...

    def restore(self, topic: str, source: Path) -> None: ...

    def topics(self) -> list[str]: ...


def report_from_dict(data: dict[str, Any]) -> IngestReport:
    """An IngestReport as the daemon sent it (``IngestReport.as_dict``)."""
    fields = {k: data[k] for k in ("files", "unchanged", "ingested", "removed", "failed",
                                   "chunks_embedded", "seconds") if k in data}
    problems, skipped = ([InputError(p["path"], p.get("line"), p["problem"])
                          for p in data.get(kind, [])] for kind in ("problems", "skipped"))
    return IngestReport(**fields, problems=problems, skipped=skipped)


def _request(overrides: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in overrides.items() if v is not None}


def _recall_fields(question: str, topic: str, filters: Sequence[str]) -> dict[str, Any]:
    return {"question": question, "topic": topic, "filters": list(filters)}


class Remote:
    """The running daemon, over the bus."""

    via = "daemon"

    def __init__(self, client: ServiceClient, timeout: float = 60.0) -> None:
        self.client = client
        self.timeout = timeout

    def _stream(self, payload: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """The payloads of the answer; the last one carries ``"eof": True``."""
        try:
            for envelope in self.client.request(payload, idle_timeout=self.timeout):
                yield {**envelope.payload, "eof": True} if envelope.eof else envelope.payload
        except ServiceFault as fault:
            raise TietoServiceError(str(fault.payload.get("message", fault)), fault.exit_code) \
                from None

    def _call(self, payload: dict[str, Any]) -> dict[str, Any]:
        last: dict[str, Any] = {}
        for payload_ in self._stream(payload):
            last = payload_
        return last

    def recall(self, question: str, topic: str, filters: Sequence[str] = (),
               **overrides: Any) -> list[Hit]:
        payload = request("recall", **_recall_fields(question, topic, filters), **overrides)
        return [Hit(**p["hit"]) for p in self._stream(payload) if "hit" in p]

    def ground(self, question: str, topic: str, filters: Sequence[str] = (),
               **overrides: Any) -> Grounding:
        answer = self._call(request("sources", **_recall_fields(question, topic, filters),
                                    **overrides))
        return Grounding(question, topic, tuple(Hit(**h) for h in answer.get("hits", [])),
                         answer.get("best_similarity"), float(answer.get("sieve", 0.0)),
                         str(answer.get("uncited", "mark")))

    def complete(self, question: str, topic: str, filters: Sequence[str] = (), *,
                 params: dict[str, Any] | None = None, **overrides: Any
                 ) -> Iterator[dict[str, Any]]:
        yield from self._stream(request("complete", **_recall_fields(question, topic, filters),
                                        params=dict(params or {}), **overrides))

    def cancel(self) -> None:
        self.client.cancel()

    def ingest(self, paths: Sequence[Path], topic: str, *,
               filterable: Sequence[tuple[str, str]] | None = None, rebuild: bool = False,
               progress: Progress | None = None) -> IngestReport:
        payload = request("ingest", topic=topic, rebuild=rebuild,
                          paths=[str(Path(p).absolute()) for p in paths],
                          filterable=None if filterable is None else
                          [f"{key}:{kind}" for key, kind in filterable])
        report: dict[str, Any] = {}
        for answer in self._stream(payload):
            if "event" in answer and progress is not None:
                progress(IngestEvent(**answer["event"]))
            report = answer.get("report", report)
        return report_from_dict(report)

    def snapshot(self, topic: str, dest: Path) -> int:
        answer = self._call(request("snapshot", topic=topic, path=str(Path(dest).absolute())))
        return int(answer["bytes"])

    def restore(self, topic: str, source: Path) -> None:
        self._call(request("restore", topic=topic, path=str(Path(source).absolute())))

    def topics(self) -> list[str]:
        return list(self._call(request("topics")).get("topics", []))


class Local:
    """The library in this process; splinfer (for completions) over the bus."""

    via = "library"

    def __init__(self, tieto: Tieto, splinfer: Callable[[], ServiceClient]) -> None:
        self.tieto = tieto
        self._splinfer = splinfer
        self._client: ServiceClient | None = None

    def recall(self, question: str, topic: str, filters: Sequence[str] = (),
               **overrides: Any) -> list[Hit]:
        return self.tieto.recall(question, topic, filters, **_request(overrides))

    def ground(self, question: str, topic: str, filters: Sequence[str] = (),
               **overrides: Any) -> Grounding:
        return self.tieto.ground(question, topic, filters, **_request(overrides))

    def complete(self, question: str, topic: str, filters: Sequence[str] = (), *,
                 params: dict[str, Any] | None = None, **overrides: Any
                 ) -> Iterator[dict[str, Any]]:
        grounding = self.ground(question, topic, filters, **overrides)
        if grounding.known and self._client is None:
            self._client = self._splinfer()
            self._client.check_running()
        yield from complete(grounding, self._client, params=params)  # type: ignore[arg-type]

    def cancel(self) -> None:
        if self._client is not None:
            self._client.cancel()

    def ingest(self, paths: Sequence[Path], topic: str, *,
               filterable: Sequence[tuple[str, str]] | None = None, rebuild: bool = False,
               progress: Progress | None = None) -> IngestReport:
        return self.tieto.ingest(paths, topic, filterable=filterable, rebuild=rebuild,
                                 progress=progress)

    def snapshot(self, topic: str, dest: Path) -> int:
        return self.tieto.snapshot(topic, dest)

    def restore(self, topic: str, source: Path) -> None:
        self.tieto.restore(topic, source)

    def topics(self) -> list[str]:
        return self.tieto.topics()

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
        self.tieto.close()


def _daemon_client(bus: Bus, client_name: str) -> ServiceClient | None:
    client = ServiceClient(bus, SERVICE, client_name)
    try:
        client.check_running(grace=0.0)
    except ServiceUnavailable:
        client.close()
        return None
    return client


@contextmanager
def open_tieto(config: Config, paths: Paths, stack: str, client_name: str, *,
               timeout: float = 60.0, embedder_factory: Callable[[], Embedder] | None = None
               ) -> Iterator[Remote | Local]:
    """The daemon if it runs on ``stack``'s bus, else the library in this process
    (with ``embedder_factory``'s model if given: the tests' small one)."""
    with ExitStack() as stack_:
        bus: Bus | None
        try:
            bus = stack_.enter_context(bus_mod.connect(config, stack))
        except bus_mod.BusNotRunning:
            bus = None
        client = _daemon_client(bus, client_name) if bus is not None else None
        if client is not None:
            stack_.callback(client.close)
            yield Remote(client, timeout)
            return

        def splinfer() -> ServiceClient:
            # Without a bus this raises BusNotRunning, saying how to start Runa.
            found = bus or stack_.enter_context(bus_mod.connect(config, stack))
            return ServiceClient(found, "splinfer", client_name)

        local = Local(Tieto(TietoSettings.from_config(config, paths), embedder_factory),
                      splinfer)
        stack_.callback(local.close)
        yield local
