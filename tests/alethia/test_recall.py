"""The search index over a real store: vectors sealed on disk with a key wrapped like a day's,
rows checked against the chain, forget zeroing the slot, the same results after a reopen."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from tieto.fakes import FakeEmbedder

from runa.alethia import keyfile, layout
from runa.alethia.recall import Recall, decode_id, encode_id, rotate_key, text_of
from runa.alethia.store import Keys, Store, WrongKey

from .helpers import new_keys

TOPICS = ["the lighthouse keeper lights the lamp at dusk",
          "quince jam needs lemon and a long slow boil",
          "the train to the coast leaves at seven",
          "my cat sleeps on the warm laptop keyboard"]


def embedder() -> FakeEmbedder:
    return FakeEmbedder(dim=64)


def open_recall(root: Path, keys: Keys | None = None) -> Recall:
    fake = embedder()
    return Recall.open(root, keys or new_keys(), model_id=fake.model_id, dim=fake.dim)


def embed_all(recall: Recall, store: Store, ids: list[str]) -> None:
    fake = embedder()
    texts = [text_of(store.read(i)) for i in ids]
    hashes = [store.record_hash(i) or b"" for i in ids]
    recall.add(ids, hashes, fake.embed(texts))


def built(recall: Recall, store: Store) -> Recall:
    while not recall.build(store, rows=2):
        pass
    return recall


def query(text: str) -> np.ndarray:
    return embedder().embed([text])[0]


@pytest.fixture
def filled(opener: Callable[..., Store], root: Path) -> tuple[Store, list[str]]:
    store = opener()
    ids = [store.append("turn", {"user": topic, "answer": "ok", "conversation": "c"})
           for topic in TOPICS]
    store.flush()
    return store, ids


def test_ids_encode_to_int64_and_back() -> None:
    assert decode_id(encode_id("2026-12-07/42")) == "2026-12-07/42"
    assert encode_id("2026-12-08/1") > encode_id("2026-12-07/999999")


def test_records_are_found_by_meaning_and_again_after_a_reopen(
        filled: tuple[Store, list[str]], root: Path) -> None:
    store, ids = filled
    recall = built(open_recall(root), store)
    embed_all(recall, store, ids)
    before = recall.search(query("when is the lamp of the lighthouse lit"), 4)
    assert before[0].id == ids[0] and len(before) == 4
    recall.close()
    again = built(open_recall(root), store)
    assert len(again) == 4 and again.missing(store) == []
    assert again.search(query("when is the lamp of the lighthouse lit"), 4) == before
    again.close()


def test_the_vectors_are_sealed_and_their_key_wrapped_like_a_days(
        filled: tuple[Store, list[str]], root: Path) -> None:
    store, ids = filled
    recall = built(open_recall(root), store)
    embed_all(recall, store, ids)
    vector = embedder().embed([text_of(store.read(ids[0]))])[0]
    assert vector.tobytes()[:64] not in (root / layout.VECTORS).read_bytes()
    assert keyfile.versions(root) == [1]
    recall.close()
    with pytest.raises(WrongKey, match=r"vectors\.key"):
        open_recall(root, new_keys(memory=b"x" * 32))


def test_a_forgotten_record_is_zeroed_on_disk_and_never_found_again(
        filled: tuple[Store, list[str]], root: Path) -> None:
    store, ids = filled
    recall = built(open_recall(root), store)
    embed_all(recall, store, ids)
    store.forget(ids[0])
    assert recall.forget([ids[0]]) == 1
    assert np.all(recall.vectors.fetch([0]) == 0)  # the slot holds a sealed zero vector
    assert ids[0] not in [f.id for f in recall.search(query(TOPICS[0]), 4)]
    recall.close()
    again = built(open_recall(root), store)
    assert ids[0] not in [f.id for f in again.search(query(TOPICS[0]), 4)]
    assert len(again) == 3 and again.missing(store) == []
    again.close()


def test_a_row_whose_hash_is_not_the_records_is_ignored_and_zeroed(
        filled: tuple[Store, list[str]], root: Path) -> None:
    store, ids = filled
    recall = built(open_recall(root), store)
    # row 0 claims the first record, with the hash of another: as after a restore
    recall.add([ids[0]], [store.record_hash(ids[1]) or b""], embedder().embed([TOPICS[0]]))
    recall.close()
    again = built(open_recall(root), store)
    assert again.search(query(TOPICS[0]), 4) == []
    assert np.all(again.vectors.fetch([0]) == 0)
    assert set(again.missing(store)) == set(ids)  # so it is embedded again
    again.close()


def test_catch_up_names_the_records_without_a_vector(
        filled: tuple[Store, list[str]], root: Path) -> None:
    store, ids = filled
    recall = built(open_recall(root), store)
    embed_all(recall, store, ids[:2])
    assert recall.missing(store) == ids[2:]
    embed_all(recall, store, recall.missing(store))
    assert recall.missing(store) == [] and len(recall) == 4
    recall.close()


def test_rotate_rewraps_the_vectors_key_under_the_new_version(
        filled: tuple[Store, list[str]], root: Path) -> None:
    store, ids = filled
    recall = built(open_recall(root), store)
    embed_all(recall, store, ids)
    recall.close()  # rotated with the index closed (no embedding model): re-wrapped all the same
    keys = new_keys()
    keys.memory[2] = bytearray(b"n" * 32)
    store.rotate(2, keys.memory[2])
    rotate_key(root, keys, 2)
    assert keyfile.versions(root) == [2]  # rotate-key may remove version 1 from coven
    only_new = Keys(memory={2: bytearray(b"n" * 32)}, signing_seed=bytearray(b"s" * 32))
    again = built(open_recall(root, only_new), store)
    assert again.search(query(TOPICS[1]), 1)[0].id == ids[1]
    again.close()


def test_vectors_of_another_model_are_dropped(filled: tuple[Store, list[str]],
                                              root: Path) -> None:
    store, ids = filled
    recall = built(open_recall(root), store)
    embed_all(recall, store, ids)
    recall.close()
    other = Recall.open(root, new_keys(), model_id="other:2", dim=64)
    assert len(other.index) == 0 and other.missing(store) == ids
    other.close()


def test_a_row_cut_short_by_a_crash_is_dropped(filled: tuple[Store, list[str]],
                                               root: Path) -> None:
    store, ids = filled
    recall = built(open_recall(root), store)
    embed_all(recall, store, ids)
    recall.close()
    rows = root / layout.ROWS
    rows.write_bytes(rows.read_bytes()[:-5])  # the last row half written
    again = built(open_recall(root), store)
    assert len(again) == 3 and again.missing(store) == [ids[3]]
    embed_all(again, store, again.missing(store))
    again.close()
    third = built(open_recall(root), store)
    assert len(third) == 4
    third.close()
