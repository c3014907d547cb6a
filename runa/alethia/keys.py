"""alethia's keys from coven, through gilgul's broker (CONTRACT; bodies by the keys change).

alethia never makes up a key of its own and never writes one to disk: it asks gilgul's
broker (``runa.secret_client.SecretsClient``) to ``create`` its secrets, which coven makes of
random bytes on first use and hands back afterwards (the registry lets alethia read and
create ``alethia.*``). Memory keys are versioned (``alethia.memory_key.v1``, ``.v2``, …):
rotation creates the next version, alethia re-wraps its day keys, and the person's
``runa memory rotate-key`` then removes the old version (a person's right only).
"""

from __future__ import annotations

from runa.alethia.store import Keys
from runa.secret_client import SecretsClient


def load(client: SecretsClient, versions: list[int]) -> Keys:
    """The signing seed and the memory keys of ``versions`` (the versions the store's days
    name; ``[]`` for a new store, which gets version 1), created by coven if absent.
    A locked vault raises ``SecretFault`` whose ``locked`` is true: the caller waits."""
    raise NotImplementedError


def create_next(client: SecretsClient, keys: Keys) -> int:
    """Create memory key version ``max(keys.memory) + 1`` in coven, add it to ``keys``; its
    version."""
    raise NotImplementedError
