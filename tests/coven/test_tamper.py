"""An altered vault or key file is named and left alone; key files open to others are refused."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from runa.coven import (
    CovenError,
    KeyFileError,
    KeyFileExposed,
    Location,
    UnsupportedVault,
    Vault,
    VaultAltered,
)

from .vaults import FAST, file_bytes


def small_vault(location: Location, passphrase: bytes | None = None) -> bytes:
    vault = Vault(location, argon2=FAST)
    vault.create(passphrase)
    vault.set("a", b"1")
    return location.vault.read_bytes()


def reseal(data: bytearray) -> bytes:
    """``data`` with its checksum made to match again: an edit by someone who knows the format."""
    data[-32:] = hashlib.blake2b(bytes(data[:-32]), digest_size=32).digest()
    return bytes(data)


def every_way_to_read(location: Location, unlocked: Vault, passphrase: bytes | None) -> None:
    """Each reader of the vault must refuse it: the one already unlocked, a fresh unlock, status."""
    for attempt in (lambda: unlocked.get("a"), lambda: unlocked.set("b", b"2"),
                    lambda: Vault(location).unlock(passphrase), Vault(location).status,
                    unlocked.rotate if passphrase is None else
                    lambda: unlocked.rotate(passphrase=passphrase)):
        with pytest.raises(VaultAltered) as altered:
            attempt()
        message = str(altered.value)
        assert message.startswith(f"the vault {location.vault} was altered or damaged (")
        assert altered.value.exit_code == 65


@pytest.mark.parametrize("passphrase", [None, b"pw"], ids=["key-file", "passphrase"])
def test_one_flipped_byte_anywhere_is_named_and_nothing_is_overwritten(
        location: Location, passphrase: bytes | None) -> None:
    original = small_vault(location, passphrase)
    unlocked = Vault(location)
    unlocked.unlock(passphrase)
    assert 200 < len(original) < 260  # header 156 + contents 19 + MAC 16 + checksum 32
    for offset in range(len(original)):
        flipped = bytearray(original)
        flipped[offset] ^= 0x01
        location.vault.write_bytes(bytes(flipped))
        every_way_to_read(location, unlocked, passphrase)
        assert location.vault.read_bytes() == flipped, f"offset {offset} was rewritten"
    location.vault.write_bytes(original)
    assert unlocked.get("a") == b"1"


@pytest.mark.parametrize("passphrase", [None, b"pw"], ids=["key-file", "passphrase"])
def test_a_forged_byte_with_a_matching_checksum_is_still_refused(
        location: Location, passphrase: bytes | None) -> None:
    """The checksum only names accidents; the MACs cover every byte of header and contents,
    so an edit that fixes the checksum is refused all the same."""
    original = small_vault(location, passphrase)
    before_keys = file_bytes(location.keys) if location.keys.exists() else {}
    for offset in range(len(original) - 32):
        forged = bytearray(original)
        forged[offset] ^= 0x01
        location.vault.write_bytes(reseal(forged))
        with pytest.raises(CovenError):
            Vault(location).unlock(passphrase)
    assert (file_bytes(location.keys) if location.keys.exists() else {}) == before_keys


def test_truncated_extended_and_foreign_files_are_named(location: Location) -> None:
    original = small_vault(location)
    for damaged, problem in ((original[:-1], "checksum does not match"),
                             (original + b"\0", "checksum does not match"),
                             (original[:100], "shorter than any vault"),
                             (b"", "shorter than any vault"),
                             (original + bytes(9 << 20), "larger than any vault"),
                             (reseal(bytearray(b"NOTAVLT\0" + original[8:])),
                              "does not start as a Runa vault")):
        location.vault.write_bytes(damaged)
        with pytest.raises(VaultAltered, match=problem):
            Vault(location).unlock()
        assert location.vault.read_bytes() == damaged


def test_an_altered_vault_is_never_replaced_by_a_new_one(location: Location) -> None:
    original = small_vault(location)
    location.vault.write_bytes(original[:-1])
    key_files = sorted(location.keys.iterdir())
    with pytest.raises(VaultAltered):
        Vault(location).set("b", b"2")
    with pytest.raises(VaultAltered):
        Vault(location).create()
    Vault.open(location, unattended=False)  # recovery keeps the key files of an altered vault
    assert location.vault.read_bytes() == original[:-1]
    assert sorted(location.keys.iterdir()) == key_files


def test_a_newer_format_is_named_as_such(location: Location) -> None:
    newer = bytearray(small_vault(location))
    newer[8:10] = (2).to_bytes(2, "little")
    location.vault.write_bytes(reseal(newer))
    with pytest.raises(UnsupportedVault, match="format version 2; this Runa reads version 1"):
        Vault(location).unlock()


def key_file_of(location: Location) -> Path:
    (path,) = location.keys.iterdir()
    return path


@pytest.mark.parametrize(("target", "mode", "fix"), [
    ("file", 0o640, "chmod 600"), ("file", 0o604, "chmod 600"),
    ("directory", 0o750, "chmod 700"), ("directory", 0o711, "chmod 700"),
])
def test_a_key_file_others_may_read_is_refused(location: Location, target: str, mode: int,
                                               fix: str) -> None:
    small_vault(location)
    path = key_file_of(location) if target == "file" else location.keys
    path.chmod(mode)
    with pytest.raises(KeyFileExposed) as refused:
        Vault(location).unlock()
    assert str(refused.value) == (f"refusing {path}: mode {mode:04o} lets others in; "
                                  f"{fix} {path}")
    assert refused.value.exit_code == 77
    with pytest.raises(KeyFileExposed):
        Vault.open(location)  # the unattended start refuses it too


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file away needs root")
def test_a_key_file_another_user_owns_is_refused(location: Location) -> None:
    small_vault(location)
    path = key_file_of(location)
    os.chown(path, 54321, -1)
    with pytest.raises(KeyFileExposed, match="owned by uid 54321"):
        Vault(location).unlock()


def test_a_symlinked_key_file_is_refused(location: Location, tmp_path: Path) -> None:
    small_vault(location)
    path = key_file_of(location)
    elsewhere = tmp_path / "elsewhere.key"
    path.rename(elsewhere)
    path.symlink_to(elsewhere)
    with pytest.raises(KeyFileError, match="cannot be opened"):
        Vault(location).unlock()


def test_a_missing_or_altered_key_file_is_named(location: Location) -> None:
    small_vault(location)
    path = key_file_of(location)
    record = path.read_bytes()
    path.write_bytes(record[:-1] + bytes([record[-1] ^ 1]))
    with pytest.raises(KeyFileError, match=r"does not open the vault .*the key file was altered"):
        Vault(location).unlock()
    path.write_bytes(record[:-1])
    with pytest.raises(KeyFileError, match="not a Runa key file"):
        Vault(location).unlock()
    path.unlink()
    with pytest.raises(KeyFileError, match="missing; the vault names this key") as missing:
        Vault(location).unlock()
    assert missing.value.exit_code == 66
