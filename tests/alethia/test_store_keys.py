"""Keys: a wrong key is a clear error that writes nothing; rotation re-wraps day keys only,
and a rotation cut short still opens with both keys and finishes on the next one."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from runa.alethia.store import Store, WrongKey, verify

from .helpers import Clock, new_keys, turn

Open = Callable[..., Store]


def files_of(root: Path) -> dict[str, bytes]:
    return {str(path.relative_to(root)): path.read_bytes()
            for path in sorted(root.rglob("*")) if path.is_file()}


@pytest.fixture
def three_days(opener: Open, clock: Clock) -> list[str]:
    store = opener()
    ids = []
    for day in range(3):
        ids += [store.append("turn", turn(day * 10 + n)) for n in range(2)]
        clock.next_day()
    store.close()
    return ids


@pytest.mark.parametrize("keys", [new_keys(memory=b"w" * 32), new_keys(seed=b"w" * 32),
                                  new_keys(version=2)], ids=["memory", "signing", "version"])
def test_a_wrong_key_is_a_clear_error_and_writes_nothing(three_days: list[str], opener: Open,
                                                         root: Path, keys: object) -> None:
    log = root / "days" / "2026-12-09.log"
    with log.open("ab") as handle:
        handle.write(b'{"t":"rec","i":3')  # a torn tail: cut only by an open that may write
    before = files_of(root)
    with pytest.raises(WrongKey) as raised:
        opener(keys)
    assert files_of(root) == before
    assert "memory key" in str(raised.value) or "signing key" in str(raised.value)
    opener().close()  # the right keys open it, and cut the tail
    assert verify(root).ok


def test_rotation_rewraps_day_keys_and_re_encrypts_nothing(three_days: list[str],
                                                           opener: Open, root: Path) -> None:
    logs = {name: data for name, data in files_of(root).items() if name.endswith(".log")}
    keys = new_keys()
    store = opener(keys)
    store.rotate(2, bytearray(b"n" * 32))
    assert store.status()["key_version"] == 2
    store.close()
    assert {n: d for n, d in files_of(root).items() if n.endswith(".log")} == logs
    with pytest.raises(WrongKey):
        opener(new_keys())  # version 1 alone no longer opens any day
    again = opener(new_keys(memory=b"n" * 32, version=2))
    assert [again.read(i).body["user"] for i in three_days] == [
        turn(day * 10 + n)["user"] for day in range(3) for n in range(2)]
    assert verify(root).ok


def test_a_half_done_rotation_opens_with_both_keys_and_finishes(three_days: list[str],
                                                                opener: Open,
                                                                root: Path) -> None:
    old_key = (root / "days" / "2026-12-08.key").read_bytes()
    store = opener()
    store.rotate(2, bytearray(b"n" * 32))
    store.close()
    (root / "days" / "2026-12-08.key").write_bytes(old_key)  # that day's replace never came
    both = new_keys()
    both.memory[2] = bytearray(b"n" * 32)
    with pytest.raises(WrongKey, match="version 1"):
        opener(new_keys(memory=b"n" * 32, version=2))
    store = opener(both)
    assert len(list(store.entries())) == 6
    store.rotate(2, both.memory[2])
    store.close()
    assert len(list(opener(new_keys(memory=b"n" * 32, version=2)).entries())) == 6


def test_new_days_after_a_rotation_use_the_new_key(three_days: list[str], opener: Open,
                                                   clock: Clock, root: Path) -> None:
    store = opener()
    store.rotate(2, bytearray(b"n" * 32))
    store.append("turn", turn(99))
    store.close()
    assert b'"version": 2' in (root / "days" / "2026-12-10.key").read_bytes()
