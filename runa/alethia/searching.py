"""What the daemon does for ``search``: the index built in steps at start, records embedded
after they are written, matches read back and filtered (docs/alethia-index.md).

Nothing here holds up an append: the daemon hands over ids once their batch is on disk
(``queue``), and embeds them in small batches when its loop is idle (``idle``) or, for the
ones not yet embedded, before a search (so a turn just said is found). Records stored
without a vector (a crash between write and embed, a restored store, the model installed
later) are found once the index is built (``missing``) and embedded the same way.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from runa.alethia.recall import Recall, RecallStore, text_of
from runa.alethia.store import Keys, Record, UnknownRecord, day_of
from runa.config import Config
from runa.errors import RunaError
from runa.models import Embedder, configured_embedder
from runa.paths import Paths
from runa.protocol import memory

#: Records embedded at once when the loop is idle: on the shipped model, on one thread,
#: about 15 ms a record of 256 word-pieces (a short turn, a few ms), so an append waits
#: at most about a tenth of a second more for its batch.
EMBED_BATCH = 8
#: How long one step of the build at start may take (the loop still answers between steps
#: and the watchdog is fed).
BUILD_STEP_S = 0.05
#: Rows one build step reads, decrypts, checks against the chain and quantizes (about
#: 20 ms).
BUILD_ROWS = 1024
#: How long a search that comes while the index is being built helps build it before it
#: answers that the index is not ready (a store of some hundred thousand records is built
#: within it).
SEARCH_BUILD_S = 1.0
#: How long a search embeds records not yet embedded (the newest first) before it answers
#: from what is indexed; the idle loop embeds the rest. After a large ingest thousands wait:
#: neither the answer nor the daemon's watchdog may wait for all of them.
SEARCH_EMBED_S = 1.0
#: Characters of a document's source and title in a match (the excerpts are cut to fit the
#: envelope; these are not, so they are bounded here).
NAME_CHARS = 300
#: Characters of a text the embedder is given at most (it reads ``max_tokens`` word-pieces;
#: a word-piece is at least one character, so no more is ever needed).
EMBED_CHARS_PER_TOKEN = 8


class SearchUnavailable(RunaError):
    """``search`` cannot be answered now: the index is being built, or cannot be opened."""

    exit_code = 69  # EX_UNAVAILABLE


class ModelNotFound(SearchUnavailable):
    """The embedding model is not installed (or does not load): appends go on, search is
    off until it is there."""


def load_embedder(config: Config, paths: Paths) -> Embedder:
    """The configured embedding model (a RunaError saying what to do when it is missing)."""
    return configured_embedder(config, paths.models, "alethia")


class Searching:
    """The index of one open store and the records still to be embedded into it."""

    def __init__(self, root: Path, keys: Keys, embedder: Embedder,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.embedder = embedder
        self.recall = Recall.open(root, keys, model_id=embedder.model_id, dim=embedder.dim)
        self._clock = clock
        self.fresh: dict[str, None] = {}  # written since start, in order: embedded first
        self.backlog: dict[str, None] = {}  # found without a vector at start
        self._finding: Iterator[list[str]] | None = None  # what has no vector, in pieces
        self._caught_up = False
        # embedded while the look for what has no vector runs (a search between its steps):
        # its pieces were read before, and must not queue them again
        self._added_while_finding: set[str] = set()

    @property
    def building(self) -> bool:
        """Whether the build at start (and the search for what has no vector) goes on."""
        return not (self.recall.ready and self._caught_up)

    @property
    def state(self) -> str:
        if self.building:
            return "building"
        return "embedding" if self.backlog else "ready"

    @property
    def indexed(self) -> int:
        return len(self.recall)

    def queue(self, ids: Sequence[str]) -> None:
        """Records now on disk, to be embedded."""
        self.fresh.update(dict.fromkeys(ids))

    def step(self, store: RecallStore, budget_s: float = BUILD_STEP_S) -> bool:
        """Build for at most ``budget_s``; then find what has no vector. True while it has
        work left (the loop should not sleep)."""
        deadline = self._clock() + budget_s
        while not self.recall.ready and self._clock() < deadline:
            self.recall.build(store, BUILD_ROWS)
        if not self.recall.ready:
            return True
        if not self._caught_up:
            if self._finding is None:
                self._finding = self.recall.missing_steps(store)
            while self._clock() < deadline:
                chunk = next(self._finding, None)
                if chunk is None:
                    self._caught_up, self._finding = True, None
                    self._added_while_finding.clear()
                    break
                self.backlog.update(dict.fromkeys(
                    i for i in chunk
                    if i not in self.fresh and i not in self._added_while_finding))
            return True
        return bool(self.fresh or self.backlog)

    def idle(self, store: RecallStore) -> int:
        """Embed one small batch (fresh records first); how many were embedded."""
        if not self.recall.ready:
            return 0
        source = self.fresh if self.fresh else self.backlog
        batch = list(source)[:EMBED_BATCH]
        for record_id in batch:
            del source[record_id]
        return self._embed(store, batch)

    def _embed(self, store: RecallStore, ids: Sequence[str]) -> int:
        kept, hashes, texts = [], [], []
        for record_id in ids:
            digest = store.record_hash(record_id)
            if digest is None:  # forgotten before it was embedded
                continue
            try:
                record = store.read(record_id)
            except UnknownRecord:
                continue
            kept.append(record_id)
            hashes.append(digest)
            texts.append(fit(self.embedder, text_of(record)))
        if kept:
            self.recall.add(kept, hashes, self.embedder.embed(texts))
            if self._finding is not None:
                self._added_while_finding.update(kept)
        return len(kept)

    def forget(self, ids: Sequence[str]) -> None:
        for record_id in ids:
            self.fresh.pop(record_id, None)
            self.backlog.pop(record_id, None)
        self.recall.forget(ids)

    def search(self, store: RecallStore, query: str, k: int, *, since: float | None = None,
               conversation: str | None = None, kind: str | None = None
               ) -> list[dict[str, Any]]:
        """The ``k`` best matches (``memory.MATCHES`` items), best first: what was written
        but not yet embedded is embedded first."""
        if not self.recall.ready:  # a small store's build is done within this
            self.step(store, SEARCH_BUILD_S)
        if not self.recall.ready:
            raise SearchUnavailable(f"the search index is still being built "
                                    f"({len(self.recall.index)} records so far); ask again "
                                    f"shortly")
        deadline = self._clock() + SEARCH_EMBED_S
        while (self.fresh or self.backlog) and self._clock() < deadline:
            self.idle(store)
        vector = self.embedder.embed([fit(self.embedder, query)])[0]
        # a record is filed under the day it was written, which may differ from its own
        # time (given by the client, up to a minute ahead): a day's slack, then the time
        first = day_of(since - 86400) if since is not None and since >= 86400 else None
        found = self.recall.search(vector, since_day=first)
        matches: list[dict[str, Any]] = []
        for hit in found:
            try:
                record = store.read(hit.id)
            except UnknownRecord:
                continue
            entry = record.entry
            if ((since is not None and entry.time < since)
                    or (conversation is not None and entry.conversation != conversation)
                    or (kind is not None and entry.kind != kind)):
                continue
            matches.append(match(record, hit.score))
            if len(matches) == k:
                break
        return matches

    def close(self) -> None:
        self.recall.close()  # the embedder is the daemon's, kept across reloads


def match(record: Record, score: float) -> dict[str, Any]:
    """One item of a ``search`` answer: the record's entry, the score and an excerpt."""
    entry, body = record.entry, record.body
    item: dict[str, Any] = {
        "id": entry.id, "score": round(float(score), 6), "time": entry.time,
        "kind": entry.kind, "conversation": entry.conversation, "persona": entry.persona}
    if entry.kind == "document":
        item.update(source=str(body.get("source") or "")[:NAME_CHARS],
                    title=str(body.get("title") or "")[:NAME_CHARS],
                    passage=body.get("passage"), text=str(body.get("text") or ""))
    else:
        item["text"] = f"{body.get('user') or ''}\n{body.get('answer') or ''}"
    item["text"] = item["text"][:memory.EXCERPT_CHARS]
    return item


def fit(embedder: Embedder, text: str) -> str:
    """``text`` cut to what the embedder reads (its ``max_tokens`` word-pieces): the
    shipped one refuses longer input rather than truncating it."""
    text = text[:embedder.max_tokens * EMBED_CHARS_PER_TOKEN]
    count = embedder.count_tokens(text)
    while count > embedder.max_tokens and text:
        text = text[:max(1, int(len(text) * embedder.max_tokens / count * 0.95))]
        if len(text) == 1:
            break
        count = embedder.count_tokens(text)
    return text


def fit_answer(matches: list[dict[str, Any]], budget: int,
               size: Callable[[Any], int]) -> list[dict[str, Any]]:
    """Cut the excerpts, all by the same share, until the answer is at most ``budget``
    bytes of JSON: text that is not ASCII is escaped to up to 12 bytes a character, so 50
    excerpts of ``EXCERPT_CHARS`` do not always fit one answer of the alethia bus."""
    total = size({memory.MATCHES: matches})
    while total > budget and any(m["text"] for m in matches):
        share = budget / total * 0.95
        for item in matches:
            item["text"] = item["text"][:int(len(item["text"]) * share)]
        total = size({memory.MATCHES: matches})
    return matches


def documents(store: Any) -> set[tuple[str, str, int]]:
    """The document passages stored, as (source, sha256, passage) (read once, at the first
    ``ingest``: passages are decrypted to read it); forgotten ones are not held."""
    known: set[tuple[str, str, int]] = set()
    for entry in store.entries():
        if entry.kind == "document" and entry.source is not None and not entry.forgotten:
            body = store.read(entry.id).body
            known.add((entry.source, str(body.get("sha256") or ""), int(body.get("passage", 0))))
    return known
