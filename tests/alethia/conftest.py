"""The store's fixtures: keys, a clock a test moves by hand, and a store opened with them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from runa.alethia.store import Durability, Keys, Store

from .helpers import Clock, new_keys


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "alethia"


@pytest.fixture
def opener(root: Path, clock: Clock) -> Iterator[Callable[..., Store]]:
    """Open the store at ``root`` (closed at the end of the test if still open)."""
    opened: list[Store] = []

    def open_store(keys: Keys | None = None, **options: object) -> Store:
        durability = options.get("durability", Durability())
        assert isinstance(durability, Durability)
        store = Store.open(root, keys or new_keys(), clock=clock, durability=durability)
        opened.append(store)
        return store

    yield open_store
    for store in opened:
        store.close()
