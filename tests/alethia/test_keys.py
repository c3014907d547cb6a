"""alethia's keys as it gets them: from the real coven daemon through gilgul's broker, asked
by a process the supervisor's table names alethia. The first load makes them, every later
load (a restart) gets the same bytes, rotation makes a new version, and a component whose
registry entry does not name ``alethia.*`` gets nothing made."""

from __future__ import annotations

import queue
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from secret_stack import MP, SecretStack, secret_stack

from runa.alethia import keys
from runa.alethia.store import MEMORY_KEY, SIGNING_KEY
from runa.coven import Location, Vault
from runa.crypto.sealed import BusKey
from runa.secret_client import SecretFault, SecretsClient
from runa.splinter import Bus, Fault


def _run(main_path: str, key_file: str, steps: list[tuple[str, list[int]]], go: Any,
         results: Any) -> None:
    """``steps`` in a process of its own: ("load", versions) or ("next", []); each result as
    (seed, {version: key}) in hex, or the fault's payload."""
    key = BusKey.load_or_create(Path(key_file))
    with Bus.open(main_path) as bus, SecretsClient(bus, key, client_name="alethia") as client:
        go.wait(10)
        held: keys.Keys | None = None
        try:
            for step, versions in steps:
                if step == "load":
                    held = keys.load(client, versions)
                else:
                    assert held is not None
                    keys.create_next(client, held)
                results.put(("ok", held.signing_seed.hex(),
                             {v: k.hex() for v, k in held.memory.items()}))
        except SecretFault as fault:
            results.put(("fault", fault.payload, {}))
        finally:
            if held is not None:
                keys.wipe(held)


def as_component(stack: SecretStack, component: str,
                 *steps: tuple[str, list[int]]) -> list[tuple[str, Any, dict[int, str]]]:
    go, results = MP.Event(), MP.Queue()
    child = MP.Process(target=_run, args=(stack.main_path, str(stack.key_file), list(steps),
                                          go, results))
    child.start()
    assert child.pid is not None
    stack.register(child.pid, component)
    go.set()
    got = []
    try:
        deadline = time.monotonic() + 20
        while len(got) < len(steps) and time.monotonic() < deadline:
            try:
                got.append(results.get(timeout=0.2))
            except queue.Empty:
                continue
            if got[-1][0] == "fault":
                break
        return got
    finally:
        child.join(10)
        stack.table.pop(child.pid, None)


@pytest.fixture
def stack(runa_env: dict[str, str]) -> Iterator[SecretStack]:
    with secret_stack(runa_env) as made:
        made.start_coven_daemon()
        with made.broker_running():
            yield made


def stored(stack: SecretStack) -> dict[str, int]:
    vault = Vault.open(Location.for_stack(stack.paths))
    return {info.name: info.size for info in vault.names()}


def test_the_first_load_makes_the_keys_and_every_later_one_gets_the_same(
        stack: SecretStack) -> None:
    [(kind, seed, memory)] = as_component(stack, "alethia", ("load", []))
    assert kind == "ok" and len(bytes.fromhex(seed)) == 32
    assert list(memory) == [1] and len(bytes.fromhex(memory[1])) == 32 and memory[1] != seed
    assert stored(stack) == {SIGNING_KEY: 32, MEMORY_KEY.format(version=1): 32}

    [(kind, seed_again, memory_again)] = as_component(stack, "alethia", ("load", [1]))
    assert (kind, seed_again, memory_again) == ("ok", seed, memory)  # a restart


def test_rotation_makes_the_next_version_and_keeps_the_older(stack: SecretStack) -> None:
    first, rotated = as_component(stack, "alethia", ("load", []), ("next", []))
    assert list(rotated[2]) == [1, 2] and rotated[2][1] == first[2][1]
    assert rotated[2][2] != rotated[2][1]
    [again] = as_component(stack, "alethia", ("load", [2, 1]))
    assert again == rotated  # both versions, as the store's days name them


def test_a_component_not_granted_alethia_s_names_gets_nothing_made(stack: SecretStack) -> None:
    [(kind, fault, _)] = as_component(stack, "splinfer", ("load", []))
    assert kind == "fault" and fault["code"] == Fault.NOT_AUTHORIZED
    assert "splinfer may not create the secret 'alethia.signing_key'" in fault["message"]
    assert stored(stack) == {}


def test_wipe_zeroes_every_key() -> None:
    held = keys.Keys(memory={1: bytearray(b"k" * 32), 2: bytearray(b"m" * 32)},
                     signing_seed=bytearray(b"s" * 32))
    keys.wipe(held)
    assert held.signing_seed == bytes(32) and all(k == bytes(32) for k in held.memory.values())
