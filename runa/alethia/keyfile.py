"""A day key file: the day's data key wrapped (XChaCha20-Poly1305) by a memory key version,
its day and version authenticated (docs/alethia.md, "Day key file")."""

from __future__ import annotations

import json
from pathlib import Path

from runa.alethia import chain, layout
from runa.alethia.errors import StoreError, WrongKey
from runa.alethia.model import Keys
from runa.crypto import sodium


def wrap(day: str, version: int, data_key: bytearray, memory_key: bytearray) -> bytes:
    nonce = sodium.random_bytes(sodium.NONCE_BYTES)
    wrapped = sodium.encrypt(memory_key, nonce, data_key, chain.day_key_associated(day, version))
    return json.dumps({"day": day, "version": version, "nonce": nonce.hex(),
                       "wrapped": wrapped.hex()}).encode() + b"\n"


def versions(root: Path) -> list[int]:
    """The memory-key versions the store's day keys are wrapped under (no key needed: the
    version is in the clear, authenticated when the day key is opened), lowest first."""
    found: set[int] = set()
    for path in [*(root / layout.DAYS).glob("*.key"), *(root / layout.VECTORS_KEY,)]:
        if not path.exists():
            continue
        try:
            found.add(int(json.loads(path.read_bytes())["version"]))
        except (OSError, ValueError, KeyError, TypeError):
            raise StoreError(f"{path}: not a day key file") from None
    return sorted(found)


def unwrap(path: Path, keys: Keys) -> tuple[bytearray, int]:
    day = path.stem
    try:
        fields = json.loads(path.read_bytes())
        version, nonce = int(fields["version"]), bytes.fromhex(fields["nonce"])
        wrapped = bytes.fromhex(fields["wrapped"])
    except (ValueError, KeyError, TypeError):
        raise StoreError(f"{path}: not a day key file") from None
    if version not in keys.memory:
        raise WrongKey(f"{path}: the day key is wrapped by memory key version {version}, "
                       f"which was not given (given: {sorted(keys.memory)})")
    key = sodium.decrypt_into(keys.memory[version], nonce, wrapped,
                              chain.day_key_associated(day, version))
    if key is None:
        raise WrongKey(f"{path}: memory key version {version} does not open this day's key")
    return key, version
