"""alethia's keys from coven, through gilgul's broker.

alethia never makes up a key of its own and never writes one to disk: it asks gilgul's
broker (``runa.secret_client.SecretsClient``) to ``create`` its secrets, which coven makes of
random bytes on first use and hands back afterwards (the registry lets alethia read and
create ``alethia.*``). Memory keys are versioned (``alethia.memory_key.v1``, ``.v2``, …):
rotation creates the next version, alethia re-wraps its day keys, and the person's
``runa memory rotate-key`` then removes the old version (a person's right only).
"""

from __future__ import annotations

from runa.alethia.store import MEMORY_KEY, SIGNING_KEY, Keys, WrongKey
from runa.crypto import sodium
from runa.secret_client import SecretsClient

#: Bytes of a memory key (an XChaCha20-Poly1305 key) and of the Ed25519 seed.
KEY_BYTES = 32


def load(client: SecretsClient, versions: list[int]) -> Keys:
    """The signing seed and the memory keys of ``versions`` (the versions the store's days
    name; ``[]`` for a new store, which gets version 1), created by coven if absent.
    A locked vault raises ``SecretFault`` whose ``locked`` is true: the caller waits."""
    keys = Keys(memory={}, signing_seed=_created(client, SIGNING_KEY))
    try:
        for version in sorted(set(versions) or {1}):
            keys.memory[version] = _created(client, MEMORY_KEY.format(version=version))
    except BaseException:
        wipe(keys)
        raise
    return keys


def create_next(client: SecretsClient, keys: Keys) -> int:
    """Create memory key version ``max(keys.memory) + 1`` in coven, add it to ``keys``; its
    version."""
    version = max(keys.memory, default=0) + 1
    keys.memory[version] = _created(client, MEMORY_KEY.format(version=version))
    return version


def wipe(keys: Keys) -> None:
    """Zero every key ``keys`` holds (the store's caller does, when it is done)."""
    for key in keys.memory.values():
        sodium.wipe(key)
    sodium.wipe(keys.signing_seed)


def _created(client: SecretsClient, name: str) -> bytearray:
    value, _made = client.create(name, KEY_BYTES)
    if len(value) != KEY_BYTES:  # a person set it by hand to something else
        sodium.wipe(value)
        raise WrongKey(f"the secret {name!r} is {len(value)} bytes, not a {KEY_BYTES}-byte key")
    return value
