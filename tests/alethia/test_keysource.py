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


def as_alethia(stack: SecretStack, target: Any, *args: object) -> Any:
    """Run ``target(*args, go, results)`` in a child the supervisor's table names alethia;
    its one result."""
    go, results = MP.Event(), MP.Queue()
    child = MP.Process(target=target, args=(*args, go, results))
    child.start()
    assert child.pid is not None
    stack.register(child.pid, "alethia")
    go.set()
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                return results.get(timeout=0.2)
            except queue.Empty:
                continue
        raise AssertionError("the key source did not answer")
    finally:
        child.join(10)
        stack.table.pop(child.pid, None)


def start(stack: SecretStack, rotate: bool = False) -> tuple[list[int], dict[int, str]]:
    return as_alethia(stack, _run, stack.main_path, str(stack.key_file), rotate)


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


def _run_with_store(main_path: str, key_file: str, root: str, go: Any, results: Any) -> None:
    key = BusKey.load_or_create(Path(key_file))
    source = BrokerKeys(lambda: Bus.open(main_path), key, Path(root))
    go.wait(10)
    try:
        try:
            held = source.load()
        except Exception as error:  # the test reads which error it was
            results.put((type(error).__name__, str(error), source.versions()))
        else:
            results.put(("loaded", sorted(held.memory), source.versions()))
            wipe(held)
    finally:
        source.close()
        key.close()


def test_a_version_the_stores_days_name_that_coven_lacks_is_named_not_made_anew(
        stack: SecretStack, tmp_path: Path) -> None:
    days = tmp_path / "alethia" / "days"
    days.mkdir(parents=True)
    # A day wrapped under version 3 (the file as the store writes it; its key need not open).
    (days / "2026-12-01.key").write_text('{"day": "2026-12-01", "version": 3, "nonce": "00", '
                                         '"wrapped": "00"}\n')
    kind, message, held = as_alethia(stack, _run_with_store, stack.main_path,
                                     str(stack.key_file), str(tmp_path / "alethia"))
    assert kind == "KeyMissing" and "missing from coven" in message
    assert held == []  # nothing was created in its place
