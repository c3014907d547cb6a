"""alethia's search and ingest through the daemon on a real bus: a turn just said is found,
filters, documents stored once, forget and restart, the largest answer under the bus's
limit, and search without an embedding model."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
from support import wait_for
from tieto.fakes import FakeEmbedder

from runa import stackbus as bus_mod
from runa.alethia import keyfile, layout
from runa.alethia.recall import ROW
from runa.alethia.searching import EMBED_BATCH
from runa.alethia.store import Durability, Keys, Store
from runa.errors import RunaError
from runa.models.embedder import LlamaEmbedder
from runa.protocol import memory
from runa.splinter import envelope as env_mod

from .test_daemon import ANSWER, REPLY, REQUEST, Alethia, fault, real_store

LIGHTHOUSE = "when does the keeper light the lighthouse lamp"
QUINCE = "my grandmother's quince jam recipe with lemon"


@pytest.fixture
def alethia(tmp_path: Path) -> Iterator[Alethia]:
    daemon = Alethia(tmp_path, real_store)
    yield daemon
    daemon.close()


def search(alethia: Alethia, query: str, **fields: object) -> list[dict[str, object]]:
    return list(alethia.call("search", query=query, **fields)["matches"])


def passage(source: str, number: int, text: str, sha: str = "a" * 64) -> dict[str, object]:
    return {"source": source, "sha256": sha, "title": f"{source} title",
            "meta": {"author": "someone"}, "passage": number, "text": text}


def test_a_turn_just_said_is_found_first_and_filters_apply(alethia: Alethia) -> None:
    lighthouse = alethia.turn("c1", user=LIGHTHOUSE)
    quince = alethia.turn("c2", user=QUINCE)
    found = search(alethia, "lighthouse lamp keeper", k=2)
    assert [m["id"] for m in found] == [lighthouse, quince]
    best = found[0]
    assert best["kind"] == "turn" and best["conversation"] == "c1"
    assert str(best["text"]).startswith(LIGHTHOUSE) and -1 <= float(best["score"]) <= 1
    assert float(found[0]["score"]) > float(found[1]["score"])
    assert [m["id"] for m in search(alethia, "lighthouse lamp", conversation="c2")] == [quince]
    assert search(alethia, "lighthouse", kind="document") == []
    assert search(alethia, "lighthouse", since=4_000_000_000.0) == []
    assert len(search(alethia, "lighthouse", since=time.time() - 60)) == 2
    status = alethia.call("status")
    assert status["indexed"] == 2 and status["index"] == "ready"
    logged = alethia.log.getvalue()
    assert "lighthouse" not in logged and "quince" not in logged


def test_k_and_kind_are_checked(alethia: Alethia) -> None:
    for bad in ({"k": 0}, {"k": 51}, {"kind": "tombstone"}):
        refused = fault(lambda bad=bad: alethia.call("search", query="x", **bad))
        assert refused["exit_code"] == 65 and refused["kind"] == "BadSchema"


def test_documents_are_stored_signed_found_and_not_stored_twice(alethia: Alethia) -> None:
    passages = [passage("notes/lamp.md", 0, "The lighthouse lamp is lit at dusk."),
                passage("notes/lamp.md", 1, "Its keeper trims the wick every morning.")]
    stored = alethia.call("ingest", passages=passages)
    assert len(stored["ids"]) == 2 and stored["skipped"] == []
    assert alethia.call("status")["unsigned"] == 0  # written and signed before the answer
    again = alethia.call("ingest", passages=passages)
    assert again == {"ids": [], "skipped": ["notes/lamp.md"]}
    changed = alethia.call("ingest", passages=[passage("notes/lamp.md", 0, "new", "b" * 64)])
    assert len(changed["ids"]) == 1
    found = search(alethia, "who trims the wick", kind="document", k=1)[0]
    assert found["id"] == stored["ids"][1] and found["source"] == "notes/lamp.md"
    assert found["title"] == "notes/lamp.md title" and found["passage"] == 1
    listed = alethia.call("list")["entries"]
    assert listed[0]["kind"] == "document" and listed[0]["source"] == "notes/lamp.md"
    bad = fault(lambda: alethia.call("ingest", passages=[{"source": "x"}]))
    assert bad["kind"] == "BadSchema" and bad["exit_code"] == 65


def test_a_source_too_large_for_one_request_is_stored_whole_and_once(alethia: Alethia) -> None:
    parts = [[passage("big.md", n, f"passage {n} of the big file") for n in (0, 1)],
             [passage("big.md", n, f"passage {n} of the big file") for n in (2, 3)]]
    first, second = (alethia.call("ingest", passages=part) for part in parts)
    assert len(first["ids"]) == 2 and len(second["ids"]) == 2 and second["skipped"] == []
    assert [alethia.call("ingest", passages=part) for part in parts] == [
        {"ids": [], "skipped": ["big.md"]}] * 2
    alethia.call("forget", id=second["ids"][0])
    again = alethia.call("ingest", passages=parts[1])
    assert len(again["ids"]) == 1 and again["skipped"] == ["big.md"]
    listed = alethia.call("list")["entries"]
    assert len([e for e in listed if e["kind"] == "document"]) == 4


def test_a_forgotten_turn_is_never_found_also_after_a_restart(alethia: Alethia) -> None:
    forgotten = alethia.turn("c1", user=LIGHTHOUSE)
    kept = alethia.turn("c2", user=QUINCE)
    assert search(alethia, LIGHTHOUSE, k=1)[0]["id"] == forgotten
    alethia.call("forget", id=forgotten)
    assert [m["id"] for m in search(alethia, LIGHTHOUSE, k=5)] == [kept]
    vectors = alethia.paths.data / "alethia" / layout.VECTORS
    alethia.stop_daemon()
    alethia.start()
    assert [m["id"] for m in search(alethia, LIGHTHOUSE, k=5)] == [kept]
    assert alethia.call("status")["indexed"] == 1
    assert vectors.exists()


def test_after_a_restart_search_gives_the_same_answer(alethia: Alethia) -> None:
    for number in range(EMBED_BATCH + 5):
        alethia.turn(f"c{number % 3}", user=f"turn {number} about topic {number % 7}")
    before = search(alethia, "topic 3", k=10)
    alethia.stop_daemon()
    alethia.start()
    wait_for(lambda: alethia.call("status")["index"] == "ready", 10, "the index's build")
    assert search(alethia, "topic 3", k=10) == before


def test_records_without_a_vector_are_embedded_at_start(alethia: Alethia) -> None:
    ids = [alethia.turn("c", user=text) for text in (LIGHTHOUSE, QUINCE)]
    search(alethia, "x")  # both embedded
    rows = alethia.paths.data / "alethia" / layout.ROWS
    alethia.stop_daemon()
    rows.write_bytes(rows.read_bytes()[:ROW.size])  # as if the second was never embedded
    alethia.start()
    wait_for(lambda: alethia.call("status")["indexed"] == 2, 10, "the catch-up")
    assert search(alethia, QUINCE, k=1)[0]["id"] == ids[1]


def test_the_largest_search_answer_fits_the_alethia_bus(alethia: Alethia) -> None:
    """50 matches whose text is all escaped in JSON (a control character is six bytes):
    the excerpts are cut so the sealed answer stays under the envelope limit."""
    ids = [alethia.turn("c", user=f"lamp {number} " + "\x01" * 6000)
           for number in range(50)]
    query = env_mod.query("test", memory.SERVICE, alethia.key.seal(
        REQUEST, memory.OPS["search"].request(query="lamp", k=50)),
        reply_to=alethia.client.replies.name)
    alethia.bus.sender(memory.SERVICE).send(query)
    answer = wait_for(lambda: alethia.client.replies.recv(0.1), 20, "the search's answer")
    assert isinstance(answer, env_mod.Envelope) and answer.type == "response"
    assert len(env_mod.encode(answer)) <= bus_mod.ALETHIA_BUS.max_envelope
    opened = alethia.key.open(REPLY, answer.payload)
    matches = opened.fields["matches"]
    assert sorted(m["id"] for m in matches) == sorted(ids)
    assert all(0 < len(m["text"]) < memory.EXCERPT_CHARS for m in matches)
    opened.wipe()


def test_without_the_embedding_model_appends_work_and_search_says_what_to_do(
        tmp_path: Path) -> None:
    def missing(_config: object, _paths: object) -> np.ndarray:
        raise RunaError("no embedding model installed")

    alethia = Alethia(tmp_path, real_store, embedder=missing)  # type: ignore[arg-type]
    try:
        assert alethia.turn().endswith("/1")
        refused = fault(lambda: search(alethia, "anything"))
        assert refused["exit_code"] == 69 and refused["kind"] == "ModelNotFound"
        assert "runa models setup" in refused["message"]
        status = alethia.call("status")
        assert status["index"] == "no embedding model" and status["indexed"] == 0
    finally:
        alethia.close()


def test_yesterdays_turn_is_found_by_a_paraphrase_with_the_shipped_model(
        tmp_path: Path, minilm_gguf: Path) -> None:
    """Done means 2: what was said yesterday found by what it meant, not its words; an
    unrelated question does not put it first."""
    yesterday = time.time() - 86400
    alethia = Alethia(tmp_path, real_store,
                      embedder=lambda _config, _paths: LlamaEmbedder(minilm_gguf, threads=1))
    try:
        said = alethia.turn("c1", user="My sister's wedding is in Lisbon next June, and I "
                            "still have not booked a flight.", time=yesterday)
        others = [alethia.turn("c2", user=text, time=yesterday) for text in (
            "How do I reset the router when the wifi keeps dropping?",
            "Give me a recipe for a quick vegetable curry.",
            "What is the difference between a list and a tuple in Python?")]
        found = search(alethia, "travel plans for a family celebration in Portugal", k=4)
        assert found[0]["id"] == said, found
        assert float(found[0]["score"]) > float(found[1]["score"])
        unrelated = search(alethia, "the router's wifi connection drops", k=4)
        assert unrelated[0]["id"] == others[0] and unrelated[0]["id"] != said
    finally:
        alethia.close()


def test_rotate_rewraps_the_vectors_key_so_old_memory_keys_can_go(alethia: Alethia) -> None:
    said = alethia.turn("c1", user=LIGHTHOUSE)
    search(alethia, "x")
    assert alethia.call("rotate") == {"key_version": 2}
    root = alethia.paths.data / "alethia"
    assert keyfile.versions(root) == [2]
    del alethia.keys.memory[1]  # as after `runa memory rotate-key`
    alethia.stop_daemon()
    alethia.start()
    assert search(alethia, LIGHTHOUSE, k=1)[0]["id"] == said
    assert alethia.call("status")["indexed"] == 1


class GatedEmbedder(FakeEmbedder):
    """Embeds only once ``gate`` is set: holds the daemon inside its index's catch-up."""

    def __init__(self) -> None:
        super().__init__(dim=64)
        self.gate = threading.Event()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        assert self.gate.wait(10), "the test did not open the gate"
        return super().embed(texts)


def test_an_append_written_by_the_index_catch_up_is_answered_then(tmp_path: Path) -> None:
    """The catch-up reads records, and a read writes the pending batch first: the appends
    held for that batch are answered then, not when a batch of their own would be due
    (here ten minutes later)."""
    def slow_batches(root: Path, keys: Keys) -> Store:
        return Store.open(root, keys, durability=Durability(records=64, ms=600_000))

    alethia = Alethia(tmp_path, slow_batches)
    try:
        alethia.stop_daemon()
        with Store.open(alethia.paths.data / "alethia", alethia.keys.load()) as store:
            for number in range(EMBED_BATCH + 1):  # more than one catch-up batch, no vectors
                store.append("turn", {"conversation": "c", "user": f"turn {number}",
                                      "answer": ANSWER})
        gated = GatedEmbedder()
        alethia.embedder = lambda _config, _paths: gated
        alethia.start()
        answered: list[str] = []
        late = threading.Thread(target=lambda: answered.append(alethia.turn("c", user="late")),
                                daemon=True)
        late.start()
        time.sleep(0.5)  # the late append waits on the queue while the catch-up is held
        gated.gate.set()
        late.join(15)
        assert answered, "the late append was written by the catch-up but never answered"
        wait_for(lambda: alethia.call("status")["indexed"] == EMBED_BATCH + 2, 10,
                 "every record embedded")
    finally:
        alethia.close()


class SlowEmbedder(FakeEmbedder):
    """0.3 s a batch, as a real model on a busy machine."""

    def __init__(self) -> None:
        super().__init__(dim=64)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        time.sleep(0.3)
        return super().embed(texts)


def test_a_search_after_a_large_ingest_answers_without_embedding_it_all(
        tmp_path: Path) -> None:
    """200 passages are 25 batches, 7.5 s of embedding: a search embeds for at most a
    second, answers from what is indexed, and the rest follows in the background."""
    alethia = Alethia(tmp_path, real_store, embedder=lambda _config, _paths: SlowEmbedder())
    try:
        alethia.call("ingest", passages=[passage("big.md", n, f"passage number {n}")
                                         for n in range(200)])
        started = time.monotonic()
        alethia.call("search", query="passage number 7", k=1)
        assert time.monotonic() - started < 4.0
        assert alethia.call("status")["indexed"] < 200
        wait_for(lambda: alethia.call("status")["indexed"] == 200, 30, "the rest embedded")
    finally:
        alethia.close()
