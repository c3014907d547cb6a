"""alethia as a daemon: the memory store served on the ``alethia`` bus.

It listens on the queue ``alethia`` (docs/protocol.md, "alethia") and answers the operations
of ``runa.protocol.memory.OPS``. Every payload is sealed with the stack's bus key
(``runa.crypto.sealed``, contexts ``memory.SEALED_CONTEXTS``): what a person said is never on
the bus in the clear. Faults are plain ``error`` envelopes whose ``kind`` is the store error's
class and whose message names ids and files, never remembered text. A payload that is not
sealed, or not with this stack's key for ``alethia/request``, is ``BAD_SCHEMA``, counted, and
the loop goes on.

At start it makes itself undumpable (``runa.crypto.process``) and asks coven for its keys
through gilgul's broker (``runa.alethia.keysource``). A locked vault, or a broker or coven
not running yet, is not a failure: the daemon is ready, its status says what it waits for,
every request but a wait is answered ``StoreClosed`` (exit 69), and it asks again every
``RETRY_S``. Keys that do not open the store (``WrongKey``) make it unusable until ``reload``.

Appends are committed in groups: an ``append`` is answered only once its batch is written,
fsynced and signed, when the store's ``durability`` bound comes due (``Store.due``, 200 ms) or
the batch is full (64 records), so an id a client holds names a turn on disk and a SIGKILL
loses only turns not yet answered. Any other request writes the pending batch before it runs
(a long ``forget`` or ``rotate`` never holds a batch back). A write that fails (a full disk)
answers each waiting client an error naming its id, and the daemon goes on; its status says
so until a write succeeds again. A stop writes, answers and signs.

``search`` and ``ingest`` go through ``runa.alethia.searching``: records are embedded after
their batch is answered, when the loop is idle, and the index is built from the vector file
at start in steps of ``step`` (docs/alethia-index.md). Without the embedding model every
other op is served and ``search`` answers ``ModelNotFound``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from runa import log
from runa import stackbus as bus_mod
from runa.alethia import recall as recall_mod
from runa.alethia import searching as search_mod
from runa.alethia.keys import wipe
from runa.alethia.keysource import BrokerKeys, KeySource
from runa.alethia.searching import ModelNotFound, Searching, SearchUnavailable
from runa.alethia.store import Entry, Keys, Record, Store, StoreError, UnknownRecord
from runa.config import Config
from runa.crypto.process import Prctl, libc_prctl, undumpable
from runa.crypto.sealed import BusKey, SealError, key_path
from runa.errors import RunaError
from runa.models import EMBEDDING_HINT, Embedder
from runa.paths import Paths
from runa.protocol import memory
from runa.protocol.payloads import PayloadError
from runa.service import ServiceContext
from runa.splinter import Bus, Envelope, EnvelopeReceiver, Fault, QueueReceiver
from runa.splinter import envelope as env_mod
from runa.splinter.errors import BadSchema, SplinterError, TtlExpired
from runa.splinter.stats import ComponentStats

NAME = memory.SERVICE
REQUEST = memory.SEALED_CONTEXTS["request"]
REPLY = memory.SEALED_CONTEXTS["reply"]
EX_DATAERR, EX_UNAVAILABLE, EX_SOFTWARE = 65, 69, 70
#: How often the daemon asks for its keys again while the vault is locked or coven away.
RETRY_S = 2.0
#: The most JSON one answer's page carries (and one record may have): sealed and in base64 a
#: page of 64 KiB is an envelope of about 88 KiB, under the alethia bus's 96 KiB
#: (``runa.stackbus.ALETHIA_BUS``).
MAX_PAGE_BYTES = 64 * 1024
#: A record is at most this much JSON, so that the page that exports it fits.
MAX_RECORD_BYTES = MAX_PAGE_BYTES - 1024
#: How far ahead of this machine's clock a turn's ``time`` may be (clocks of one machine
#: agree; a later time would file the turn under a day to come and move it in ``--since``).
MAX_AHEAD_S = 60.0
#: The most matches one ``search`` answers (its excerpts are cut to fit ``MAX_PAGE_BYTES``).
MAX_MATCHES = 50

StoreOpener = Callable[[Path, Keys], Store]
EmbedderFactory = Callable[[Config, Paths], Embedder]
#: The ops that read out or change the whole memory: who asked is logged (pids, never text),
#: since any process of the person's uid may ask (docs/security.md).
AUDITED = frozenset({"forget", "export", "rotate", "release", "reload"})


class StoreClosed(RunaError):
    """The store is not open: its keys are not there yet (a locked vault, coven away), or it
    was released. Not the client's ``MemoryUnavailable``, which means alethia itself is not
    there."""

    exit_code = EX_UNAVAILABLE


class RecordTooLarge(RunaError):
    """A turn larger than one answer of the alethia bus could hand back."""

    exit_code = EX_DATAERR


class AlethiaDaemon:
    name = NAME

    def __init__(self, config: Config, stack: str, logger: logging.Logger, *,
                 paths: Paths | None = None, keys: KeySource | None = None,
                 open_store: StoreOpener = Store.open, prctl: Prctl = libc_prctl,
                 clock: Callable[[], float] = time.monotonic, retry_s: float = RETRY_S,
                 wall_clock: Callable[[], float] = time.time,
                 embedder: EmbedderFactory = search_mod.load_embedder) -> None:
        self.config = config
        self.stack = stack
        self.logger = logger
        self.paths = paths or Paths.for_stack(stack)
        self.root = self.paths.data / "alethia"
        self._key_source = keys
        self._open_store = open_store
        self._prctl = prctl
        self._clock = clock
        self._wall_clock = wall_clock
        self._retry_s = retry_s
        self.store: Store | None = None
        self.keys: Keys | None = None
        self.waiting = "keys not asked for yet"  # why the store is not open ("" when it is)
        self.problem = ""  # what makes the store unusable until reload
        self._failure: StoreError | None = None  # the error it is, answered to every request
        self.released = False  # closed on request (a restore), until reload
        self._next_try = float("-inf")
        self.key: BusKey | None = None
        self.bus: Bus | None = None
        self.inbox: deque[Envelope] = deque()
        self._seen = bus_mod.RecentRequests()
        self._ctx: ServiceContext | None = None
        self._held: list[tuple[Envelope, str]] = []  # appends answered once written
        self.write_error = ""  # why the last write failed ("" once one succeeds)
        self.stats: ComponentStats | None = None
        self.queue: EnvelopeReceiver[QueueReceiver] | None = None
        self._load_embedder = embedder
        self.embedder: Embedder | None = None
        self.searching: Searching | None = None  # the search index of the open store
        self.index_problem = ""  # why there is no search index ("no embedding model", …)
        # the document passages stored, (source, sha256, passage); read once
        self._documents: set[tuple[str, str, int]] | None = None

    # -- life cycle ----------------------------------------------------------------------

    def start(self, ctx: ServiceContext) -> None:
        self._ctx = ctx
        undumpable(self._prctl)  # before any key or remembered text is in memory
        self.key = BusKey.load_or_create(key_path(self.paths.runtime))
        if self._key_source is None:
            self._key_source = BrokerKeys(lambda: bus_mod.connect(self.config, self.stack),
                                          self.key, self.root)
        self.bus = bus_mod.connect(self.config, self.stack, memory.BUS)
        self.stats = self.bus.component_stats(NAME)
        self.queue = self.bus.queue(NAME, stats=self.stats, service=True)
        self._embedder()
        ctx.status("asking coven for the memory keys")
        self._try_open()
        log.event(self.logger, "memory_serving", f"alethia serves {self.root}; "
                  f"{self._status_line()}", open=self.store is not None)

    def step(self, timeout: float) -> None:
        if self.store is None and not (self.problem or self.released) \
                and self._clock() >= self._next_try:
            self._try_open()
        due = self.store.due() if self.store is not None else None
        work = self._index_work(due)
        wait = 0.0 if work else timeout if due is None else max(0.0, min(timeout, due))
        assert self.queue is not None
        self.inbox.extend(bus_mod.read_requests(
            self.queue, wait, on_bad_schema=self._bad_schema, on_cancel=lambda _r: None,
            on_expired=self._expired, seen=self._seen))
        while self.inbox:
            self._handle(self.inbox.popleft())
        self._commit_if_due()
        if work and not self.inbox:
            self._index_step()
            self._commit_if_due()

    def _commit_if_due(self) -> None:
        """Commit once the pending batch is due, or once something else wrote it: a read of
        the store (the index's catch-up reads records) writes what is pending first, and the
        appends held for that batch are answered then, not left waiting for a next one."""
        if self.store is None:
            return
        due = self.store.due()
        if (due is not None and due <= 0) or (due is None and self._held):
            self._commit()

    def stop(self) -> None:
        self._close_store()
        close = getattr(self.embedder, "close", None)
        if close is not None:
            close()
        if isinstance(self._key_source, BrokerKeys):
            self._key_source.close()
        if self.key is not None:
            self.key.close()
        if self.queue is not None:
            self.queue.close()
        if self.bus is not None:
            self.bus.close()

    def _try_open(self) -> None:
        """Ask for the keys and open the store; on failure, say why and when it asks again."""
        assert self._key_source is not None
        self._next_try = self._clock() + self._retry_s
        try:
            if self.keys is None:
                self.keys = self._key_source.load()
            self.store = self._open_store(self.root, self.keys)
            self.waiting = self.problem = ""
            self._failure = None
            log.event(self.logger, "memory_opened", "the memory store is open")
            self._open_index()
        except StoreError as error:  # WrongKey, an unreadable store: left for a person
            self.problem = f"{type(error).__name__}: {error}"
            self._failure = error
            self._forget_keys()
            log.event(self.logger, "memory_unusable", f"the memory store cannot be opened: "
                      f"{error}", level=logging.ERROR, kind=type(error).__name__)
        except RunaError as error:  # a locked vault, no broker, coven away: wait and ask again
            locked = bool(getattr(error, "locked", False))
            why = ("the vault is locked: 'runa secret unlock'" if locked
                   else f"{type(error).__name__}: {error}")
            if why != self.waiting:  # said once, not every retry
                self.logger.info("memory keys not available yet (%s); asking again every %g s",
                                 type(error).__name__, self._retry_s,
                                 extra={"RUNA_EVENT": "memory_waiting"})
            self.waiting = why
        self._say_status()

    def _close_store(self) -> None:
        if self.store is not None:
            self._commit()
            store, self.store = self.store, None
            store.close()
        if self.searching is not None:
            searching, self.searching = self.searching, None
            searching.close()
        self._documents = None
        self._forget_keys()

    # -- the search index --------------------------------------------------------------------

    def _embedder(self) -> Embedder | None:
        """The embedding model, loaded once (again at a reload, if it was missing)."""
        if self.embedder is None:
            try:
                self.embedder = self._load_embedder(self.config, self.paths)
                self.index_problem = ""
            except RunaError as error:
                self.index_problem = "no embedding model"
                log.event(self.logger, "memory_no_embedder", f"search is off: "
                          f"{type(error).__name__}", level=logging.WARNING,
                          kind=type(error).__name__)
        return self.embedder

    def _open_index(self) -> None:
        """Open the search index's files and start building it (in steps, from ``step``)."""
        assert self.keys is not None
        embedder = self._embedder()
        if embedder is None:
            return
        try:
            self.searching = Searching(self.root, self.keys, embedder)
            self.index_problem = ""
        except RunaError as error:
            self.index_problem = f"{type(error).__name__}: {error}"
            log.event(self.logger, "memory_index_unusable", f"the search index cannot be "
                      f"opened: {type(error).__name__}", level=logging.ERROR,
                      kind=type(error).__name__)

    def _index_work(self, due: float | None) -> bool:
        """Whether the index has work (a build step, records to embed) and the pending batch
        leaves time for it."""
        return (self.searching is not None and self.store is not None
                and (due is None or due > 2 * search_mod.BUILD_STEP_S)
                and (self.searching.building or bool(self.searching.fresh)
                     or bool(self.searching.backlog)))

    def _index_step(self) -> None:
        """One step of the index's work: build, or embed one small batch."""
        assert self.searching is not None and self.store is not None
        if self._held:  # written here, not by the step's reads: a failed write is settled
            self._commit()
            if self.store is None or self.searching is None:
                return
        searching = self.searching
        try:
            if searching.building:
                searching.step(self.store)
                if not searching.building:
                    log.event(self.logger, "memory_index_built", f"the search index holds "
                              f"{searching.indexed} records; {len(searching.backlog)} to "
                              f"embed", records=searching.indexed,
                              missing=len(searching.backlog))
                    self._say_status()
            elif searching.idle(self.store) and not (searching.fresh or searching.backlog):
                self._say_status()
        except Exception as error:  # a damaged vector file, a bug: search is off until reload
            self.index_problem = f"{type(error).__name__}: {error}"
            self.searching = None
            searching.close()
            log.event(self.logger, "memory_index_unusable", f"the search index failed: "
                      f"{type(error).__name__}", level=logging.ERROR, kind=type(error).__name__)
            self._say_status()

    def _forget_keys(self) -> None:
        if self.keys is not None:
            wipe(self.keys)
            self.keys = None

    def _status_line(self) -> str:
        if self.problem:
            return f"unusable: {self.problem}"
        if self.released:
            return f"closed: {self.waiting}"
        if self.store is None:
            return f"waiting for coven: {self.waiting}"
        return ("open" + ("" if self.recording else " (not recording turns: memory.record)")
                + (f"; the last write failed: {self.write_error}" if self.write_error else ""))

    def _say_status(self) -> None:
        if self._ctx is not None:
            self._ctx.status(self._status_line())

    @property
    def recording(self) -> bool:
        """Whether this person's configuration has chat write its turns."""
        return bool(self.config["memory.record"])

    # -- answering -------------------------------------------------------------------------

    def _handle(self, request: Envelope) -> None:
        if request.type != "query":
            return
        assert self.key is not None
        try:
            opened = self.key.open(REQUEST, request.payload)
        except SealError as error:
            self._bad_schema(_bad(request, str(error)), request, kind="SealError")
            return
        try:
            self._serve(request, opened.fields)
        finally:
            opened.wipe()

    def _serve(self, request: Envelope, fields: dict[str, Any]) -> None:
        op = fields.get("op")
        try:
            spec = memory.OPS.get(op) if isinstance(op, str) else None
            if spec is None:
                raise _bad(request, f"unknown op {op!r}; alethia answers {', '.join(memory.OPS)}")
            if spec.name in AUDITED and not (spec.name == "export" and fields.get("after")):
                self._audit(request, spec.name)
            try:
                answer = self._answer(request, spec.name, fields)
            except PayloadError as error:
                raise _bad(request, str(error)) from None
            if answer is not None:  # None: an append, answered once written (_commit)
                self._reply(request, answer)
        except BadSchema as error:
            self._bad_schema(error, request)
        except (RecordTooLarge, UnknownRecord) as error:
            self._fail(request, Fault.BAD_SCHEMA, str(error), type(error).__name__,
                       error.exit_code)
        except (StoreError, StoreClosed, SearchUnavailable) as error:
            self._fail(request, Fault.INTERNAL_ERROR, str(error), type(error).__name__,
                       error.exit_code)
        except Exception as error:  # answered, logged (its class only), and the loop goes on
            self.logger.error("%s failed: %s", op, type(error).__name__,
                              extra={"RUNA_EVENT": "request_failed"})
            self._fail(request, Fault.INTERNAL_ERROR, f"{type(error).__name__}: alethia failed",
                       "InternalError", EX_SOFTWARE)
        finally:
            self._say_status()

    def _answer(self, request: Envelope, op: str,
                fields: dict[str, Any]) -> dict[str, Any] | None:
        """The sealed answer's fields for ``op`` (None for an append: answered once written)."""
        spec = memory.OPS[op]
        if op == "reload":
            return self._reload()
        if op == "release":
            return self._release()
        store = self._open()
        if op == "append":
            self._append(store, request, fields)
            return None
        self._commit()  # the waiting appends first: nothing below holds them back
        if op in ("list", "export"):
            since, conversation = spec.read(fields, "since"), spec.read(fields, "conversation")
            after, limit = spec.read(fields, "after"), _limit(spec.read(fields, "limit"))
            entries = (e for e in store.entries(since=since, conversation=conversation,
                                                after=after) if not e.forgotten)
            if op == "list":
                items, following = _page((_entry(e) for e in entries), limit)
                return {memory.ENTRIES: items, memory.NEXT: following}
            items, following = _page((_record(store.read(e.id)) for e in entries), limit)
            return {memory.RECORDS: items, memory.NEXT: following}
        if op == "show":
            return {memory.RECORD: _record(store.read(spec.read(fields, "id")))}
        if op == "forget":
            record_id, conversation = spec.read(fields, "id"), spec.read(fields, "conversation")
            if (record_id is None) == (conversation is None):
                raise PayloadError(op, "id", "forget needs 'id' or 'conversation', not both")
            if record_id is not None:
                store.forget(record_id)
                forgotten = [record_id]
            else:
                forgotten = store.forget_conversation(conversation)
            if self.searching is not None:
                self.searching.forget(forgotten)
            self._documents = None
            log.event(self.logger, "memory_forgotten", f"forgot {len(forgotten)} record(s)",
                      records=len(forgotten))
            return {memory.IDS: forgotten}
        if op == "search":
            return self._search(store, fields)
        if op == "ingest":
            return self._ingest(store, fields)
        if op == "sign":
            store.flush()
            return self._status(store)
        if op == "rotate":
            return {"key_version": self._rotate(store)}
        return self._status(store)

    def _open(self) -> Store:
        if self.store is not None:
            return self.store
        if self._failure is not None:
            raise type(self._failure)(f"the memory store cannot be opened: {self._failure}; "
                                      "'reload' once that is put right")
        if self.released:
            raise StoreClosed(f"the memory store is closed: {self.waiting}")
        raise StoreClosed(f"the memory store is not open yet, waiting for coven: "
                                f"{self.waiting}")

    def _append(self, store: Store, request: Envelope, fields: dict[str, Any]) -> None:
        """Queue a turn; it is answered with the batch it is written in."""
        spec = memory.OPS["append"]
        kind = spec.read(fields, "kind") or "turn"
        if kind != "turn":
            raise PayloadError("append", "kind", "'kind' must be 'turn'")
        body = {name: spec.read(fields, name) for name in
                ("conversation", "persona", "user", "answer", "interventions", "feedback")}
        size = len(_json(body))
        if size > MAX_RECORD_BYTES:
            raise RecordTooLarge(f"the turn is {size} bytes of JSON; alethia keeps at most "
                                 f"{MAX_RECORD_BYTES} (what one answer of its bus carries)")
        at = spec.read(fields, "time")
        if at is not None and not 0 <= at <= self._wall_clock() + MAX_AHEAD_S:
            raise PayloadError("append", "time", f"'time' must be a Unix time from 0 to at "
                               f"most {MAX_AHEAD_S:g} s from now")
        try:
            record_id = store.append(kind, body, at=at)
        except StoreError as error:
            if store.due() is None:  # the store wrote (or voided) the waiting batch
                self._settle(store, error)
            raise
        self._held.append((request, record_id))
        if store.due() is None:  # the append filled its batch: written with it
            self._commit()

    def _commit(self) -> None:
        """Write the pending batch and answer each append waiting for it: its id once it is
        on disk, else an error naming it. The daemon goes on either way."""
        if self.store is None:
            return
        try:
            self.store.flush()
        except StoreError as error:
            self._settle(self.store, error)
            return
        if self.write_error:
            self.write_error = ""
            self._say_status()
        held, self._held = self._held, []
        if self.searching is not None:
            self.searching.queue([record_id for _request, record_id in held])
        for request, record_id in held:
            self._reply(request, {memory.ID: record_id})

    def _settle(self, store: Store, error: StoreError) -> None:
        """A write failed: answer each waiting append, an error for each whose record is not
        on disk (its id is void: the store gives it to the next record)."""
        held, self._held = self._held, []
        lost = [(request, record_id) for request, record_id in held
                if not _written(store, record_id)]
        for request, record_id in held:
            if (request, record_id) not in lost:
                self._reply(request, {memory.ID: record_id})
        for request, record_id in lost:
            self._fail(request, Fault.INTERNAL_ERROR, f"record {record_id} was not written: "
                       f"{error}", type(error).__name__, error.exit_code)
        self.write_error = f"{type(error).__name__}: {error}"
        log.event(self.logger, "memory_write_failed", f"alethia could not write "
                  f"{len(lost)} waiting turn(s): {type(error).__name__}", level=logging.ERROR,
                  records=len(lost), kind=type(error).__name__)
        self._say_status()

    def _rotate(self, store: Store) -> int:
        assert self._key_source is not None and self.keys is not None
        version = self._key_source.create_next(self.keys)
        store.rotate(version, self.keys.memory[version])
        recall_mod.rotate_key(self.root, self.keys, version)  # the vectors' key too
        log.event(self.logger, "memory_rotated", f"the day keys are wrapped under memory key "
                  f"version {version}", key_version=version)
        return version

    def _release(self) -> dict[str, Any]:
        """Close the store (flushed and signed) and leave it closed until ``reload``. A store
        that is not open (a locked vault, keys that do not open it) holds no lock: released
        at once, so a restore can put right what kept it closed."""
        if self.store is None:
            answer: dict[str, Any] = {**dict.fromkeys(memory.STATUS_FIELDS),
                                      "recording": self.recording}
        else:
            self._commit()
            self.store.flush()
            answer = self._status(self.store)
        self._close_store()
        self.released = True
        self.waiting = "released for a restore: 'reload' opens it again"
        log.event(self.logger, "memory_released", "the memory store is closed until reload")
        return answer

    def _reload(self) -> dict[str, Any]:
        """Close the store, ask for the keys again (a restored store may name other
        versions) and open it from disk."""
        self._close_store()
        self.problem = ""
        self._failure = None
        self.released = False
        self._try_open()
        return self._status(self._open())

    def _status(self, store: Store) -> dict[str, Any]:
        known = dict(store.status())
        return {**{name: known.get(name) for name in memory.STATUS_FIELDS},
                "recording": self.recording, **self._index_status()}

    def _index_status(self) -> dict[str, Any]:
        if self.searching is None:
            return {"indexed": 0, "index": self.index_problem or "no embedding model"}
        return {"indexed": self.searching.indexed, "index": self.searching.state}

    def _search(self, store: Store, fields: dict[str, Any]) -> dict[str, Any]:
        spec = memory.OPS["search"]
        query, k = spec.read(fields, "query"), spec.read(fields, "k")
        k = 5 if k is None else k
        if not 1 <= k <= MAX_MATCHES:
            raise PayloadError("search", "k", f"'k' must be 1 to {MAX_MATCHES}")
        kind = spec.read(fields, "kind")
        if kind is not None and kind not in memory.KINDS:
            raise PayloadError("search", "kind", f"'kind' must be one of "
                               f"{', '.join(memory.KINDS)}")
        if self.searching is None:
            if self.index_problem == "no embedding model" or self.embedder is None:
                raise ModelNotFound("search needs the embedding model. " + EMBEDDING_HINT
                                       .format(setting="alethia.embedding_model"))
            raise SearchUnavailable(f"the search index cannot be used: {self.index_problem}; "
                                    "'reload' once that is put right")
        matches = self.searching.search(store, query, k, since=spec.read(fields, "since"),
                                        conversation=spec.read(fields, "conversation"),
                                        kind=kind)
        self.logger.debug("search answered %d match(es)", len(matches),
                          extra={"RUNA_EVENT": "memory_searched"})
        return {memory.MATCHES: search_mod.fit_answer(
            matches, MAX_PAGE_BYTES, lambda value: len(_json(value)))}

    def _ingest(self, store: Store, fields: dict[str, Any]) -> dict[str, Any]:
        """Store document passages, written and signed before the answer. A passage already
        stored under the same source, sha256 and number is skipped: a source sent again
        unchanged stores nothing, and a large one's later requests are stored, not skipped."""
        passages = [_passage(item) for item in memory.OPS["ingest"].read(fields, "passages")]
        if self._documents is None:
            self._documents = search_mod.documents(store)
        known = self._documents
        keys = [(p["source"], p["sha256"], p["passage"]) for p in passages]
        fresh = [p for p, key in zip(passages, keys, strict=True) if key not in known]
        skipped = sorted({p["source"] for p, key in zip(passages, keys, strict=True)
                          if key in known})
        ids = [store.append("document", p) for p in fresh]
        store.flush()
        known.update(keys)
        if self.searching is not None:
            self.searching.queue(ids)
        log.event(self.logger, "memory_ingested", f"stored {len(ids)} passage(s); "
                  f"{len(skipped)} source(s) already stored", records=len(ids),
                  skipped=len(skipped))
        return {memory.IDS: ids, memory.SKIPPED: skipped}

    def _audit(self, request: Envelope, op: str) -> None:
        """Log who asked ``op``, as the kernel says: the pid that sent the request and the one
        that holds its reply queue (the envelope's sender name is the client's own claim)."""
        assert self.bus is not None
        sender = holder = None
        with contextlib.suppress(SplinterError):
            sender = self.bus.request_sender(request.id)
            if request.reply_to:
                holder = self.bus.queue_holder(request.reply_to)
        log.event(self.logger, "memory_request", f"{op} asked by pid {sender} (reply queue "
                  f"held by pid {holder})", op=op, sender_pid=sender, holder_pid=holder)

    # -- sending ---------------------------------------------------------------------------

    def _reply(self, request: Envelope, fields: Mapping[str, Any]) -> None:
        assert self.key is not None
        if request.reply_to:
            self._send(request.reply_to, env_mod.response(
                request, NAME, self.key.seal(REPLY, fields), seq=0, eof=True))

    def _fail(self, request: Envelope, code: Fault, message: str, kind: str,
              exit_code: int) -> None:
        envelope = env_mod.fault(code, message, sender=NAME, to=request.sender, id=request.id)
        envelope.payload["kind"] = kind
        envelope.payload["exit_code"] = exit_code
        self.logger.info("request %s failed: %s", request.id, kind,
                         extra={"RUNA_EVENT": "request_failed"})
        if request.reply_to:
            self._send(request.reply_to, envelope)

    def _expired(self, request: Envelope, error: TtlExpired) -> None:
        if request.reply_to:
            self._send(request.reply_to, env_mod.error_reply(request, error, sender=NAME))

    def _bad_schema(self, error: BadSchema, request: Envelope | None = None, *,
                    kind: str = "BadSchema") -> None:
        self.logger.warning("bad request: %s", error.message, extra={"RUNA_EVENT": "bad_schema"})
        if request is not None and self.stats is not None:  # the bus counted the rest itself
            self.stats.incr("bad_schema")
        where = env_mod.reply_channel(request, error)
        if where:
            envelope = env_mod.error_reply(request, error, sender=NAME)
            envelope.payload["kind"] = kind
            envelope.payload["exit_code"] = EX_DATAERR
            self._send(where, envelope)

    def _send(self, channel: str, envelope: Envelope) -> None:
        assert self.bus is not None
        try:
            self.bus.sender(channel, stats=self.stats).send(envelope)
        except SplinterError as error:
            self.logger.info("could not answer on %s: %s", channel, error)


def _passage(item: Any) -> dict[str, Any]:
    """One passage of an ``ingest``, checked: its fields and no more than a record holds."""
    kinds = {"source": str, "sha256": str, "title": str, "passage": int, "text": str}
    if not isinstance(item, dict):
        raise PayloadError("ingest", "passages", "each passage must be an object")
    for name, kind in kinds.items():
        if not isinstance(item.get(name), kind) or isinstance(item.get(name), bool):
            raise PayloadError("ingest", "passages", f"each passage needs {name!r} "
                               f"({kind.__name__})")
    meta = item.get("meta") or {}
    if not isinstance(meta, dict):
        raise PayloadError("ingest", "passages", "a passage's 'meta' must be an object")
    body = {**{name: item[name] for name in kinds}, "meta": meta}
    size = len(_json(body))
    if size > MAX_RECORD_BYTES:
        raise RecordTooLarge(f"passage {item['passage']} of a source is {size} bytes of JSON; "
                             f"alethia keeps at most {MAX_RECORD_BYTES}")
    return body


def _written(store: Store, record_id: str) -> bool:
    """Whether ``record_id`` is on disk (after a failed write voided the batch, or not)."""
    try:
        store.read(record_id)
    except StoreError:
        return False
    return True


def _json(value: Any) -> str:
    """``value`` as the sealed frame encodes it (so its length is what the envelope carries)."""
    return json.dumps(value, separators=(",", ":"))


def _page(items: Iterable[dict[str, Any]], limit: int) -> tuple[list[dict[str, Any]],
                                                                str | None]:
    """At most ``limit`` items and ``MAX_PAGE_BYTES`` of JSON (at least one item), and the
    id the next page starts after (None when nothing is left)."""
    page: list[dict[str, Any]] = []
    size = 0
    source: Iterator[dict[str, Any]] = iter(items)
    for item in source:
        length = len(_json(item)) + 1
        if page and (len(page) >= limit or size + length > MAX_PAGE_BYTES):
            return page, str(page[-1]["id"])
        page.append(item)
        size += length
    return page, None


def _limit(value: int | None) -> int:
    if value is None:
        return 100
    if not 1 <= value <= 1000:
        raise PayloadError("list", "limit", "'limit' must be 1 to 1000")
    return value


def _entry(entry: Entry) -> dict[str, Any]:
    shown = {"id": entry.id, "time": entry.time, "kind": entry.kind,
             "conversation": entry.conversation, "persona": entry.persona}
    return {**shown, "source": entry.source} if entry.kind == "document" else shown


def _record(record: Record) -> dict[str, Any]:
    return {**_entry(record.entry), "body": dict(record.body)}


def _bad(request: Envelope, message: str) -> BadSchema:
    return BadSchema(message, id=request.id, sender=request.sender, reply_to=request.reply_to)


def create(config: Config, logger: logging.Logger, stack: str) -> AlethiaDaemon:
    return AlethiaDaemon(config, stack, logger)
