"""The vault as its users meet it: secrets kept across restarts, states, limits, audit events."""

from __future__ import annotations

import logging
import os
import stat

import pytest

from runa.coven import (
    VALUE_MAX,
    AccessEvent,
    KeyMode,
    Location,
    SecretNameError,
    SecretValueError,
    UnknownSecret,
    Vault,
    VaultLocked,
    VaultModeError,
    VaultState,
    journal_audit,
)

from .vaults import MARKER, contents, file_bytes, leftovers


def test_a_secret_set_is_there_after_a_restart(location: Location) -> None:
    Vault(location).set("api.key", MARKER)
    again = Vault.open(location)  # a new process would do exactly this
    assert again.state is VaultState.UNLOCKED
    with again.get("api.key") as value:
        assert value == MARKER
        assert bytes(value.view()) == MARKER
    assert value.wiped  # leaving the block wiped the copy


def test_first_use_creates_a_key_file_vault_in_private_directories(location: Location) -> None:
    vault = Vault(location)
    assert vault.state is VaultState.ABSENT
    assert vault.names() == []
    vault.set("a", b"1")
    status = vault.status()
    assert (status.state, status.mode, status.argon2) == (VaultState.UNLOCKED,
                                                          KeyMode.KEYFILE, None)
    key_file = location.keys / f"{status.key_id}.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(location.keys.stat().st_mode) == 0o700
    assert stat.S_IMODE(location.vault.stat().st_mode) == 0o600
    assert stat.S_IMODE(location.vault.parent.stat().st_mode) == 0o700
    assert MARKER not in b"".join(file_bytes(location.vault.parent).values())


def test_set_replace_list_and_remove(location: Location) -> None:
    times = iter([1000, 2000, 3000])
    vault = Vault(location, clock_ms=lambda: next(times))
    vault.set("b.token", b"first")
    vault.set("a.key", bytearray(b"\x00\xffbinary"))
    vault.set("b.token", memoryview(b"second"))
    assert [(i.name, i.updated_ms) for i in vault.names()] == [("a.key", 2000), ("b.token", 3000)]
    assert contents(vault) == {"a.key": b"\x00\xffbinary", "b.token": b"second"}
    vault.remove("a.key")
    assert contents(Vault.open(location)) == {"b.token": b"second"}
    with pytest.raises(UnknownSecret, match=r"no secret 'a\.key'") as missing:
        vault.get("a.key")
    assert missing.value.exit_code == 66
    with pytest.raises(UnknownSecret):
        vault.remove("a.key")


@pytest.mark.parametrize("name", ["", "Upper", "9lives", "with space", "slash/no", "é", "a" * 65,
                                  "semi;colon", "-dash"])
def test_a_name_outside_the_form_is_refused(location: Location, name: str) -> None:
    vault = Vault(location)
    with pytest.raises(SecretNameError) as refused:
        vault.set(name, b"v")
    assert refused.value.exit_code == 64
    assert "lowercase letter" in str(refused.value) or "limit is 64" in str(refused.value)
    assert not location.vault.exists()


def test_the_longest_name_and_the_largest_value_fit(location: Location) -> None:
    vault = Vault(location)
    vault.set("a" * 64, b"x" * VALUE_MAX)
    assert len(vault.get("a" * 64)) == VALUE_MAX


@pytest.mark.parametrize(("value", "problem"), [
    (b"", "the value is empty"),
    (b"x" * (VALUE_MAX + 1), f"is {VALUE_MAX + 1} bytes; the limit is {VALUE_MAX} bytes"),
    ("text", "a value is bytes, not str"),
])
def test_a_value_that_cannot_be_stored_is_refused(location: Location, value: object,
                                                  problem: str) -> None:
    vault = Vault(location)
    vault.set("kept", b"old")
    before = location.vault.read_bytes()
    with pytest.raises(SecretValueError, match=problem) as refused:
        vault.set("kept", value)  # type: ignore[arg-type]
    assert refused.value.exit_code == 64
    assert location.vault.read_bytes() == before


def test_the_state_machine(location: Location) -> None:
    """absent -> (set) unlocked -> (lock) locked -> (unlock) unlocked; a new Vault starts
    locked, and only Vault.open's unattended start unlocks a key-file vault by itself."""
    vault = Vault(location)
    assert vault.state is VaultState.ABSENT
    assert vault.unlock() is VaultState.ABSENT  # nothing to unlock yet
    vault.set("s", b"v")
    assert vault.state is VaultState.UNLOCKED
    assert vault.lock() is VaultState.LOCKED
    for attempt in (lambda: vault.get("s"), vault.names, lambda: vault.set("t", b"v"),
                    lambda: vault.remove("s"), vault.rotate):
        with pytest.raises(VaultLocked, match="is locked; unlock it") as locked:
            attempt()
        assert locked.value.exit_code == 69
    assert vault.status().state is VaultState.LOCKED  # status needs no key
    assert vault.unlock() is VaultState.UNLOCKED
    assert vault.get("s") == b"v"
    assert Vault(location).state is VaultState.LOCKED
    assert Vault.open(location, unattended=False).state is VaultState.LOCKED
    assert Vault.open(location).state is VaultState.UNLOCKED


def test_a_key_file_vault_takes_no_passphrase_and_create_does_not_overwrite(
        location: Location) -> None:
    vault = Vault(location)
    vault.set("s", b"v")
    before = file_bytes(location.vault.parent)
    with pytest.raises(VaultModeError, match="opened by its key file, not a passphrase"):
        Vault(location).unlock(b"pass")
    with pytest.raises(VaultModeError, match="a vault already exists"):
        vault.create()
    assert file_bytes(location.vault.parent) == before


def test_rotate_changes_every_key_and_keeps_every_secret(location: Location) -> None:
    vault = Vault(location)
    vault.set("a", b"1")
    vault.set("b", MARKER)
    first = vault.status().key_id
    old_bytes = location.vault.read_bytes()
    second = vault.rotate()
    assert second != first and vault.status().key_id == second
    assert sorted(p.name for p in location.keys.iterdir()) == [f"{second}.key"]
    new_bytes = location.vault.read_bytes()
    assert old_bytes[80:] != new_bytes[80:]  # new wrapped data key, new ciphertext
    assert contents(Vault.open(location)) == {"a": b"1", "b": MARKER}
    assert leftovers(location) == []


def test_a_vault_rotated_by_another_process_is_followed(location: Location) -> None:
    ours = Vault(location)
    ours.set("s", b"v")
    Vault.open(location).rotate()  # another holder of the same vault
    assert ours.get("s") == b"v"  # its new key file is read; the old one is gone
    ours.set("t", b"w")
    assert contents(Vault.open(location)) == {"s": b"v", "t": b"w"}


def test_every_operation_is_audited_without_values(location: Location) -> None:
    events: list[AccessEvent] = []
    vault = Vault(location, audit=events.append)
    vault.set("s", MARKER, requester="alethia")
    vault.get("s", requester="alethia").wipe()
    with pytest.raises(UnknownSecret):
        vault.get("nope", requester="threadwell")
    vault.names(requester="cli")
    vault.lock(requester="cli")
    with pytest.raises(VaultLocked):
        vault.get("s", requester="alethia")
    vault.unlock(requester="cli")
    vault.rotate(requester="cli")
    vault.remove("s", requester="cli")
    assert [(e.op, e.name, e.requester, e.outcome) for e in events] == [
        ("set", "s", "alethia", "ok"),
        ("get", "s", "alethia", "ok"),
        ("get", "nope", "threadwell", "unknown"),
        ("list", None, "cli", "ok"),
        ("lock", None, "cli", "ok"),
        ("get", "s", "alethia", "locked"),
        ("unlock", None, "cli", "ok"),
        ("rotate", None, "cli", "ok"),
        ("rm", "s", "cli", "ok"),
    ]


def test_get_or_create_makes_a_vault_and_a_value_once(location: Location) -> None:
    events: list[AccessEvent] = []
    vault = Vault(location, audit=events.append)
    made, created = vault.get_or_create("alethia.signing_key", 32, requester="alethia")
    assert created and len(made) == 32 and vault.status().mode is KeyMode.KEYFILE
    again, created_again = Vault.open(location).get_or_create("alethia.signing_key", 64)
    assert not created_again and again == made  # the stored one, whatever size is asked
    with pytest.raises(SecretValueError, match="'size' must be 16 to 4096 bytes"):
        vault.get_or_create("alethia.other", 4097)
    vault.lock()
    with pytest.raises(VaultLocked):
        vault.get_or_create("alethia.other", requester="alethia")
    assert [(e.op, e.name, e.outcome) for e in events if e.op == "create"] == [
        ("create", "alethia.signing_key", "created"),
        ("create", "alethia.other", "locked")]
    assert contents(Vault.open(location)) == {"alethia.signing_key": bytes(made.view())}


def test_a_secret_is_not_handed_out_when_its_access_cannot_be_recorded(
        location: Location) -> None:
    Vault(location).set("s", b"v")

    def broken(event: AccessEvent) -> None:
        if event.op == "get":
            raise OSError("the journal is gone")

    vault = Vault.open(location, audit=broken)
    with pytest.raises(OSError, match="journal is gone"):
        vault.get("s")


def test_the_journal_sink_writes_names_and_outcomes(location: Location,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("runa.coven.test")
    vault = Vault(location, audit=journal_audit(logger))
    with caplog.at_level(logging.INFO, logger="runa.coven.test"):
        vault.set("s", MARKER, requester="alethia")
        vault.get("s", requester="alethia").wipe()
    records = [r for r in caplog.records if r.name == "runa.coven.test"]
    assert [(r.RUNA_EVENT, r.RUNA_OP, r.RUNA_SECRET, r.RUNA_REQUESTER, r.RUNA_OUTCOME)
            for r in records] == [("secret_access", "set", "s", "alethia", "ok"),
                                  ("secret_access", "get", "s", "alethia", "ok")]
    assert records[1].getMessage() == "secret get s by alethia: ok"
    assert all(MARKER.decode() not in repr(vars(r)) for r in records)


def test_a_failed_write_keeps_the_old_vault_and_no_temporary(location: Location) -> None:
    vault = Vault(location)
    vault.set("s", b"old")

    def full_disk(step: str) -> None:
        if step == "vault.written":
            raise OSError(28, os.strerror(28))

    failing = Vault(location, checkpoint=full_disk)
    failing.unlock()
    with pytest.raises(Exception, match="No space left on device; the previous version is kept"
                       ) as failed:
        failing.set("s", b"new")
    assert failed.value.exit_code == 74  # type: ignore[attr-defined]
    assert contents(Vault.open(location)) == {"s": b"old"}
    assert leftovers(location) == []
