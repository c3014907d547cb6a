"""The daemon's key source as it ships: the versions coven holds, listed through gilgul's
broker, then those keys loaded — so a restart after a rotation opens with both versions, and a
first start makes version 1. Run by a process the supervisor's table names alethia, against
the real coven daemon."""

from __future__ import annotations

import queue
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from secret_stack import MP, SecretStack, secret_stack

from runa.alethia.keys import wipe
from runa.alethia.keysource import BrokerKeys
from runa.crypto.sealed import BusKey
from runa.splinter import Bus


def _run(main_path: str, key_file: str, rotate: bool, go: Any, results: Any) -> None:
    """One start of the daemon's key source: its versions and keys (hex), rotated once if
    ``rotate``."""
    key = BusKey.load_or_create(Path(key_file))
    source = BrokerKeys(lambda: Bus.open(main_path), key)
    go.wait(10)
    try:
        before = source.versions()
        held = source.load()
        if rotate:
            source.create_next(held)
        results.put((before, {v: k.hex() for v, k in held.memory.items()}))
        wipe(held)
    finally:
        source.close()
        key.close()


def start(stack: SecretStack, rotate: bool = False) -> tuple[list[int], dict[int, str]]:
    go, results = MP.Event(), MP.Queue()
    child = MP.Process(target=_run, args=(stack.main_path, str(stack.key_file), rotate, go,
                                          results))
    child.start()
    assert child.pid is not None
    stack.register(child.pid, "alethia")
    go.set()
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                return results.get(timeout=0.2)  # type: ignore[no-any-return]
            except queue.Empty:
                continue
        raise AssertionError("the key source did not answer")
    finally:
        child.join(10)
        stack.table.pop(child.pid, None)


@pytest.fixture
def stack(runa_env: dict[str, str]) -> Iterator[SecretStack]:
    with secret_stack(runa_env) as made:
        made.start_coven_daemon()
        with made.broker_running():
            yield made


def test_a_restart_after_a_rotation_loads_every_version_coven_holds(stack: SecretStack) -> None:
    versions, first = start(stack)
    assert versions == [] and list(first) == [1]  # a first start makes version 1
    versions, rotated = start(stack, rotate=True)
    assert versions == [1] and sorted(rotated) == [1, 2] and rotated[1] == first[1]
    versions, again = start(stack)
    assert versions == [1, 2] and again == rotated
