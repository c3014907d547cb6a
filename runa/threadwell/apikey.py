"""The API's bearer key: random bytes kept in coven as ``threadwell.api_key``.

coven makes the bytes (``create``, on first use); the key a client sends is their text form,
``runa-`` and URL-safe base64. threadwell reads it through gilgul's broker (its registry entry
lets it read and create ``threadwell.*``), the person with ``runa api-key show|rotate``. A
rotated key reaches the daemon on the first request that fails with the key it holds.
"""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable

from runa.crypto import sodium
from runa.secret_client import SecretsClient

#: The secret's name in coven.
SECRET = "threadwell.api_key"
#: Random bytes of a key.
KEY_BYTES = 32
#: What every key starts with, so one found in a file says what it is.
PREFIX = "runa-"
#: A wrong key asks coven again (a rotation) at most this often.
REFRESH_S = 2.0


def as_text(raw: bytes | bytearray) -> str:
    """The key as a client sends it."""
    return PREFIX + base64.urlsafe_b64encode(bytes(raw)).decode().rstrip("=")


def fetch(client: SecretsClient) -> str:
    """The key from coven, made there first if there is none yet."""
    raw, _created = client.create(SECRET, KEY_BYTES)
    try:
        return as_text(raw)
    finally:
        sodium.wipe(raw)


def rotate(client: SecretsClient) -> str:
    """A new key in coven; its text. A running threadwell refuses the old one within
    ``REFRESH_S`` (it asks coven again before it trusts a key held longer)."""
    raw = sodium.new_key()
    try:
        client.call("set", name=SECRET, value=raw).wipe()
        return as_text(raw)
    finally:
        sodium.wipe(raw)


class KeyHolder:
    """The key the daemon compares with: asked of ``load`` at start, and again (at most every
    ``REFRESH_S``) when a request brings another one or the one held is older than that, so
    a rotation takes effect within ``REFRESH_S`` whichever key the next client brings."""

    def __init__(self, load: Callable[[], str], clock: Callable[[], float] = time.monotonic
                 ) -> None:
        self._load = load
        self._clock = clock
        self._lock = threading.Lock()
        self._key = load().encode()
        self._loaded_at = clock()

    def current(self) -> bytes:
        return self._key

    def recent(self) -> bool:
        """Whether the key was asked of coven within ``REFRESH_S`` (else a rotation may have
        replaced it: ask again before trusting it)."""
        return self._clock() - self._loaded_at < REFRESH_S

    def refreshed(self) -> bytes:
        """The key, asked again if the last ask is older than ``REFRESH_S``."""
        with self._lock:
            if self._clock() - self._loaded_at >= REFRESH_S:
                self._loaded_at = self._clock()
                self._key = self._load().encode()
            return self._key
