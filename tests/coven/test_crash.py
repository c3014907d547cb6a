"""SIGKILL during ``set`` and ``rotate``: the vault always opens with the old contents or the
new, never neither, and the next open leaves no temporary or stray key file.

Two ways: a forked child killed by its own checkpoint at every step the operation passes
(the steps are recorded from a run that is not killed, so a new step is covered without
editing this file), and children killed from outside after a range of delays while they set
and rotate in a loop.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

import pytest

from runa.coven import CovenError, KeyMode, Location, Vault, VaultState

from .vaults import FAST, contents, leftovers

OLD = {"fixed": b"stays as it is", "counter": b"0"}
NEW = {"fixed": b"stays as it is", "counter": b"1"}
Operation = Callable[[Vault], None]


def fork(child: Callable[[], None]) -> int:
    """Run ``child`` in a forked process that never returns into pytest; its pid."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            child()
        finally:
            os._exit(3)
    return pid


def kill_at(step: str) -> Callable[[str], None]:
    def checkpoint(reached: str) -> None:
        if reached == step:
            os.kill(os.getpid(), signal.SIGKILL)
    return checkpoint


def prepared(location: Location, passphrase: bytes | None) -> None:
    vault = Vault(location, argon2=FAST)
    vault.create(passphrase)
    for name, value in OLD.items():
        vault.set(name, value)


def opened(location: Location, passphrases: tuple[bytes | None, ...]) -> Vault:
    """The vault as the next start opens it: recovered, unlocked with whichever passphrase
    the old or the new vault takes."""
    vault = Vault.open(location)
    for passphrase in passphrases:
        if vault.state is VaultState.UNLOCKED:
            break
        try:
            vault.unlock(passphrase)
        except CovenError:  # the other passphrase is tried next
            continue
    assert vault.state is VaultState.UNLOCKED, "the vault opens with neither key"
    return vault


def steps_of(location: Location, passphrase: bytes | None, operation: Operation) -> list[str]:
    """The checkpoints ``operation`` passes, from a run that is not killed."""
    prepared(location, passphrase)
    reached: list[str] = []
    vault = Vault(location, argon2=FAST, checkpoint=reached.append)
    vault.unlock(passphrase)
    operation(vault)
    location.vault.parent.rename(location.vault.parent.with_name("dry-run"))
    return reached


def set_counter(vault: Vault) -> None:
    vault.set("counter", NEW["counter"])


def rotate_key_file(vault: Vault) -> None:
    vault.rotate()


def rotate_passphrase(vault: Vault) -> None:
    vault.rotate(passphrase=b"new")


def to_passphrase(vault: Vault) -> None:
    vault.rotate(passphrase=b"new")


def to_key_file(vault: Vault) -> None:
    vault.rotate(mode=KeyMode.KEYFILE)


CASES = {
    # name: (passphrase before, operation, contents afterwards, passphrases to try)
    "set": (None, set_counter, (OLD, NEW), (None,)),
    "set-passphrase": (b"old", set_counter, (OLD, NEW), (b"old",)),
    "rotate": (None, rotate_key_file, (OLD,), (None,)),
    "rotate-passphrase": (b"old", rotate_passphrase, (OLD,), (b"old", b"new")),
    "key-file-to-passphrase": (None, to_passphrase, (OLD,), (None, b"new")),
    "passphrase-to-key-file": (b"old", to_key_file, (OLD,), (b"old", None)),
}


@pytest.mark.parametrize("case", CASES)
def test_a_kill_at_every_step_leaves_the_old_vault_or_the_new(location: Location,
                                                              case: str) -> None:
    passphrase, operation, allowed, passphrases = CASES[case]
    steps = steps_of(location, passphrase, operation)
    assert "vault.renamed" in steps and "vault.half-written" in steps
    if operation is rotate_key_file:
        assert steps.index("key.durable") < steps.index("vault.half-written") \
            < steps.index("vault.durable") < steps.index("old-key.removed")
    for step in steps:
        prepared(location, passphrase)
        vault = Vault(location, argon2=FAST, checkpoint=kill_at(step))
        vault.unlock(passphrase)
        _, status = os.waitpid(fork(lambda vault=vault: operation(vault)), 0)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, step
        after = opened(location, passphrases)
        assert contents(after) in allowed, f"killed after {step}"
        assert leftovers(location) == [], f"killed after {step}"
        location.vault.parent.rename(location.vault.parent.with_name(f"killed-{step}"))


def test_kills_from_outside_at_many_moments(location: Location) -> None:
    """A child sets a counter and rotates, over and over; it is killed after a delay that
    grows each round. Every round the vault opens, ``fixed`` is intact, and the counter is at
    least what the last round saw (nothing written is ever lost)."""
    prepared(location, None)
    seen = 0
    rounds = 40
    for round_ in range(rounds):
        start = seen

        def loop(start: int = start) -> None:
            vault = Vault.open(location)
            for count in range(start + 1, start + 10_000):
                vault.set("counter", str(count).encode())
                if count % 3 == 0:
                    vault.rotate()

        pid = fork(loop)
        time.sleep(0.0005 + round_ * 0.0015)  # 0.5 ms .. 60 ms: before, during, after opens
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        values = contents(opened(location, (None,)))
        assert values["fixed"] == OLD["fixed"] and set(values) == set(OLD)
        counter = int(values["counter"])
        assert counter >= seen, f"round {round_}: counter went back from {seen} to {counter}"
        assert leftovers(location) == [], f"round {round_}"
        seen = counter
    assert seen > 0, "no round got as far as one write: the delays are too short"


def test_two_writers_at_once_lose_no_update(location: Location) -> None:
    """Each change is a read-modify-write under the directory's flock: two processes setting
    secrets at the same time (one of them rotating too) keep every secret either set."""
    prepared(location, None)

    def writer(prefix: str) -> None:
        vault = Vault.open(location)
        for count in range(25):
            vault.set(f"{prefix}{count}", b"v")
            if prefix == "b" and count % 5 == 0:
                vault.rotate()
        os._exit(0)

    pids = [fork(lambda prefix=prefix: writer(prefix)) for prefix in ("a", "b")]
    for pid in pids:
        _, status = os.waitpid(pid, 0)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    names = {info.name for info in Vault.open(location).names()}
    assert names == set(OLD) | {f"{p}{n}" for p in "ab" for n in range(25)}
    assert leftovers(location) == []
