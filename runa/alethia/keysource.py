"""Where the daemon's keys come from: coven, through gilgul's secrets broker.

The daemon holds a ``KeySource``; the one it ships with asks the broker, tests give it keys
of their own. Which memory-key versions to load is what coven holds (the broker's ``list``
of the names alethia may read): every version the store's days may still be wrapped under
is there until the person's ``runa memory rotate-key`` removes the old one after a rotation,
and a half-done rotation (a new version created, the days not yet re-wrapped) opens with
both. So the versions are found without a key and without reading the store's files.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Protocol

from runa.alethia import keys as keys_mod
from runa.alethia.store import MEMORY_KEY, Keys
from runa.crypto.sealed import BusKey
from runa.secret_client import SecretsClient
from runa.splinter import Bus

_VERSION = re.compile("^" + re.escape(MEMORY_KEY).replace(r"\{version\}", r"([1-9][0-9]*)")
                      + "$")


class KeySource(Protocol):
    """The daemon's keys: loaded at start (and on ``reload``), the next version on
    ``rotate``. A locked vault raises ``SecretFault`` whose ``locked`` is true."""

    def load(self) -> Keys: ...

    def create_next(self, keys: Keys) -> int: ...


def versions_in(listed: list[dict[str, Any]]) -> list[int]:
    """The memory-key versions among the broker's ``list`` answer, lowest first."""
    found = (_VERSION.match(str(item.get("name", ""))) for item in listed)
    return sorted(int(match[1]) for match in found if match)


class BrokerKeys:
    """Keys asked of gilgul's broker on the main bus (opened when first needed: under systemd
    alethia may start before the keeper made the buses)."""

    def __init__(self, open_bus: Callable[[], Bus], key: BusKey) -> None:
        self._open_bus = open_bus
        self._key = key
        self._bus: Bus | None = None
        self._client: SecretsClient | None = None

    def client(self) -> SecretsClient:
        if self._client is None:
            self._bus = self._open_bus()
            self._client = SecretsClient(self._bus, self._key, client_name="alethia")
        return self._client

    def versions(self) -> list[int]:
        """The memory-key versions coven holds for alethia."""
        opened = self.client().call("list")
        try:
            listed = opened.fields.get("secrets") or []
            return versions_in([item for item in listed if isinstance(item, dict)])
        finally:
            opened.wipe()

    def load(self) -> Keys:
        return keys_mod.load(self.client(), self.versions())

    def create_next(self, keys: Keys) -> int:
        return keys_mod.create_next(self.client(), keys)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._bus is not None:
            self._bus.close()
            self._bus = None
