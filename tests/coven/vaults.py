"""What the vault tests share: cheap Argon2id parameters and readers of a vault's state."""

from __future__ import annotations

from pathlib import Path

from runa.coven import Argon2Params, Location, Vault

#: Argon2id at libsodium's floor for passes and 8 MiB: the tests need a passphrase vault, not
#: the shipped cost (test_passphrase.py measures that once).
FAST = Argon2Params(opslimit=1, memlimit=8 << 20)

#: A value no test writes anywhere else, to search for.
MARKER = b"correct-horse-battery-staple-7f3a"


def contents(vault: Vault) -> dict[str, bytes]:
    """Every secret of an unlocked vault, name -> value (copies: tests only)."""
    found = {}
    for info in vault.names():
        with vault.get(info.name) as value:
            found[info.name] = bytes(value.view())
    return found


def leftovers(location: Location) -> list[str]:
    """Temporary files, and key files the vault does not name, in the vault's directories."""
    directory = location.vault.parent
    names = [p.name for p in directory.iterdir() if p.name.endswith(".tmp")]
    if location.keys.is_dir():
        status = Vault(location).status()
        named = f"{status.key_id}.key"
        names += [p.name for p in location.keys.iterdir() if p.name != named]
    return sorted(names)


def file_bytes(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` and its bytes."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}
