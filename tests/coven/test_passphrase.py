"""A vault under a passphrase: it starts locked, a wrong passphrase changes nothing, and the
shipped Argon2id cost fits the unit's memory limit."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from runa.coven import (
    SHIPPED_ARGON2,
    KeyMode,
    Location,
    SecretValueError,
    Vault,
    VaultAltered,
    VaultLocked,
    VaultModeError,
    VaultState,
    WrongPassphrase,
)

from .vaults import FAST, MARKER, contents, file_bytes, leftovers


def passphrase_vault(location: Location, passphrase: bytes = b"open sesame") -> Vault:
    vault = Vault(location, argon2=FAST)
    vault.create(bytearray(passphrase))
    vault.set("api.key", MARKER)
    return vault


def test_a_passphrase_vault_starts_locked_and_opens_with_its_passphrase(
        location: Location) -> None:
    passphrase_vault(location)
    vault = Vault.open(location)  # unattended: a passphrase vault stays locked
    status = vault.status()
    assert (status.state, status.mode, status.argon2) == (VaultState.LOCKED,
                                                          KeyMode.PASSPHRASE, FAST)
    with pytest.raises(VaultLocked, match="needs its passphrase"):
        vault.unlock()
    with pytest.raises(VaultLocked):
        vault.get("api.key")
    assert vault.unlock(b"open sesame") is VaultState.UNLOCKED
    assert vault.get("api.key") == MARKER
    assert not location.keys.exists() or list(location.keys.iterdir()) == []


def test_a_wrong_passphrase_is_a_clear_error_and_changes_nothing(location: Location) -> None:
    passphrase_vault(location)
    before = file_bytes(location.vault.parent)
    vault = Vault.open(location)
    with pytest.raises(WrongPassphrase) as wrong:
        vault.unlock(bytearray(b"open sesame!"))
    assert str(wrong.value) == (f"wrong passphrase for the vault {location.vault} (or its key "
                                "block was altered); the vault was not changed")
    assert wrong.value.exit_code == 77
    assert vault.state is VaultState.LOCKED
    assert file_bytes(location.vault.parent) == before
    with pytest.raises(VaultLocked):
        vault.rotate(passphrase=b"guess")  # locked: no key to re-encrypt with
    assert file_bytes(location.vault.parent) == before


def test_a_wrong_passphrase_leaves_an_unlocked_vault_unlocked(location: Location) -> None:
    vault = passphrase_vault(location)
    with pytest.raises(WrongPassphrase):
        vault.unlock(b"nope")
    assert vault.state is VaultState.UNLOCKED
    assert vault.get("api.key") == MARKER


def test_rotating_to_a_new_passphrase_and_back_to_a_key_file(location: Location) -> None:
    vault = passphrase_vault(location)
    old_salt = location.vault.read_bytes()[40:56]
    with pytest.raises(VaultModeError, match="needs the passphrase"):
        vault.rotate()
    vault.rotate(passphrase=b"new words")
    assert location.vault.read_bytes()[40:56] != old_salt
    with pytest.raises(WrongPassphrase):
        Vault(location).unlock(b"open sesame")
    reopened = Vault(location)
    reopened.unlock(b"new words")
    assert contents(reopened) == {"api.key": MARKER}
    reopened.rotate(mode=KeyMode.KEYFILE)
    assert Vault.open(location).get("api.key") == MARKER  # unattended again
    assert leftovers(location) == []


def test_a_key_file_vault_moves_to_a_passphrase_and_its_key_file_goes(
        location: Location) -> None:
    vault = Vault(location, argon2=FAST)
    vault.set("s", b"v")
    vault.rotate(passphrase=b"pw")
    assert list(location.keys.iterdir()) == []
    again = Vault.open(location)
    assert again.state is VaultState.LOCKED
    again.unlock(b"pw")
    assert again.get("s") == b"v"


def test_argon2id_parameters_out_of_bounds_are_refused_unrun(location: Location) -> None:
    """A header naming a huge cost is refused before Argon2id runs (no hour-long unlock)."""
    passphrase_vault(location)
    data = bytearray(location.vault.read_bytes())
    data[32:40] = (1 << 40).to_bytes(8, "little")  # memlimit: 1 TiB
    data[-32:] = hashlib.blake2b(bytes(data[:-32]), digest_size=32).digest()
    location.vault.write_bytes(bytes(data))
    with pytest.raises(VaultAltered, match="memlimit 1099511627776 outside"):
        Vault(location).unlock(b"open sesame")


def test_the_shipped_cost_fits_a_256_mb_unit(tmp_path: Path) -> None:
    """Unlock with the shipped parameters in a fresh interpreter: its peak memory stays under
    the MemoryMax=256M it is sized for, and it takes a fraction of a second to seconds. The peak
    is the process's own (``VmHWM``): ``ru_maxrss`` would also count the test runner's pages,
    which the child shares until it runs its own program."""
    code = f"""
import json, time
from pathlib import Path
from runa.coven import Location, Vault
location = Location.in_directory(Path({str(tmp_path)!r}))
Vault(location).create(b"pw")
vault = Vault(location)
start = time.perf_counter()
vault.unlock(b"pw")
elapsed = time.perf_counter() - start
hwm = next(line for line in Path("/proc/self/status").read_text().splitlines()
           if line.startswith("VmHWM:"))
print(json.dumps({{"unlock_s": elapsed, "peak_mib": int(hwm.split()[1]) / 1024}}))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    measured = json.loads(done.stdout)
    assert SHIPPED_ARGON2.memlimit == 128 << 20 and SHIPPED_ARGON2.opslimit == 3
    assert 128 < measured["peak_mib"] < 256, measured
    assert measured["unlock_s"] < 10, measured


@pytest.mark.parametrize(("passphrase", "problem"), [(b"", "the passphrase is empty"),
                                                    ("text", "a passphrase is bytes, not str")])
def test_an_empty_or_text_passphrase_is_refused(location: Location, passphrase: object,
                                                problem: str) -> None:
    with pytest.raises(SecretValueError, match=problem):
        Vault(location, argon2=FAST).create(passphrase)  # type: ignore[arg-type]
    assert not location.vault.exists()
