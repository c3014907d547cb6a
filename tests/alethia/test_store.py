"""The store: records written, read back, listed, durable in batches, torn tails cut."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest

from runa.alethia.store import (
    Durability,
    Store,
    StoreError,
    UnknownRecord,
    verify,
)

from .helpers import DAY, Clock, new_keys, turn

Open = Callable[..., Store]


def test_appended_turns_read_back_after_reopening(opener: Open, root: Path) -> None:
    store = opener()
    ids = [store.append("turn", turn(n)) for n in range(3)]
    store.close()
    again = opener()
    assert ids == ["2026-12-07/1", "2026-12-07/2", "2026-12-07/3"]
    record = again.read(ids[1])
    assert record.body["user"] == turn(1)["user"]
    assert record.entry.conversation == "conv-a" and record.entry.persona == "default"
    assert [e.id for e in again.entries()] == ids
    assert verify(root).ok


def test_entries_filter_by_conversation_time_and_page(opener: Open, clock: Clock) -> None:
    store = opener()
    first = store.append("turn", turn(0, "a"))
    clock.next_day()
    second = store.append("turn", turn(1, "b"))
    third = store.append("turn", turn(2, "a"), at=clock.now + 5)
    assert [e.id for e in store.entries(conversation="a")] == [first, third]
    assert [e.id for e in store.entries(since=clock.now)] == [second, third]
    assert [e.id for e in store.entries(after=first)] == [second, third]
    assert next(e for e in store.entries() if e.id == third).time == clock.now + 5


def test_an_unknown_id_is_unknown(opener: Open) -> None:
    store = opener()
    store.append("turn", turn(0))
    for missing in ("2026-12-07/2", "2026-12-08/1", "nonsense"):
        with pytest.raises(UnknownRecord):
            store.read(missing)


def test_a_second_writer_is_refused(opener: Open) -> None:
    opener()
    with pytest.raises(StoreError, match="another process"):
        opener()


def test_appends_are_written_in_batches_within_the_bound(opener: Open, root: Path) -> None:
    store = opener(durability=Durability(records=4, ms=60_000))
    log = root / "days" / "2026-12-07.log"
    assert store.due() is None
    for n in range(3):
        store.append("turn", turn(n))
    assert not log.exists()  # three pending, not yet due
    remaining = store.due()
    assert remaining is not None and 0 < remaining <= 60
    store.append("turn", turn(3))  # the fourth: the batch is written and signed
    assert log.exists() and store.due() is None
    assert store.status()["unsigned"] == 0
    assert verify(root).records == 4


def test_the_oldest_pending_record_makes_the_batch_due(opener: Open, root: Path) -> None:
    store = opener(durability=Durability(records=100, ms=0))
    store.append("turn", turn(0))
    assert (root / "days" / "2026-12-07.log").exists()  # due at once: written


def test_a_torn_tail_is_cut_at_open_and_said_without_content(
        opener: Open, root: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = opener()
    ids = [store.append("turn", turn(n)) for n in range(3)]
    store.close()
    log = root / "days" / "2026-12-07.log"
    whole = log.read_bytes()
    with log.open("ab") as handle:  # a batch a crash cut short: records, no signature line
        handle.write(b'{"t":"rec","i":4,"h":"00"}\n{"t":"rec","i":5,"h":')
    with caplog.at_level(logging.WARNING, logger="runa.alethia"):
        again = opener()
    assert log.read_bytes() == whole
    assert [e.id for e in again.entries()] == ids
    assert any("cut" in r.getMessage() and "bytes" in r.getMessage() for r in caplog.records)
    assert all("lighthouse" not in r.getMessage() for r in caplog.records)
    assert again.append("turn", turn(9)) == "2026-12-07/4"
    again.close()
    assert verify(root).ok


def test_status_counts_days_records_and_the_bound(opener: Open, clock: Clock) -> None:
    store = opener(durability=Durability(records=8, ms=100))
    store.append("turn", turn(0))
    clock.next_day()
    store.append("turn", turn(1))
    status = store.status()
    assert status["records"] == 2 and status["days"] == 2 and status["key_version"] == 1
    assert status["durability"] == {"records": 8, "ms": 100}
    assert len(status["public_key"]) == 64 and status["bytes"] > 0


def test_a_clock_that_goes_back_writes_to_the_latest_day(opener: Open, clock: Clock,
                                                          root: Path) -> None:
    store = opener()
    clock.next_day()
    store.append("turn", turn(0))
    clock.now -= 2 * DAY
    assert store.append("turn", turn(1)) == "2026-12-08/2"
    store.close()
    assert verify(root).ok


def test_a_closed_store_refuses(opener: Open) -> None:
    store = opener()
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.append("turn", turn(0))


def test_keys_from_another_seed_sign_nothing_here(opener: Open) -> None:
    opener().close()
    from runa.alethia.store import WrongKey
    with pytest.raises(WrongKey):
        opener(new_keys(seed=b"x" * 32))


def test_day_files_without_the_stores_description_are_refused(opener: Open,
                                                              root: Path) -> None:
    store = opener()
    store.append("turn", turn(0))
    store.close()
    (root / "alethia.json").unlink()
    with pytest.raises(StoreError, match="day files without"):
        opener()
    assert not (root / "alethia.json").exists()
