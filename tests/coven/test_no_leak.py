"""A secret's value never shows in the repr or str of anything the vault hands back or raises,
never reaches the files in the clear, and is wiped from the buffers the caller gives back."""

from __future__ import annotations

import pickle
import traceback
from collections.abc import Callable
from pathlib import Path

import pytest

from runa.coven import (
    VALUE_MAX,
    AccessEvent,
    CovenError,
    Location,
    SecretBytes,
    Vault,
)

from .vaults import FAST, MARKER, file_bytes


def shown(thing: object) -> str:
    """Everything a log line, a traceback or a debugger's summary could print of ``thing``."""
    parts = [repr(thing), str(thing)]
    if isinstance(thing, BaseException):
        parts += [repr(thing.args), "".join(traceback.format_exception(thing))]
        parts += [repr(value) for value in vars(thing).values()]
    return "\n".join(parts)


def test_secret_bytes_shows_only_its_length() -> None:
    value = SecretBytes(MARKER)
    assert repr(value) == str(value) == f"<SecretBytes: {len(MARKER)} bytes>"
    assert f"{value}" == str(value) and "%s" % (value,) == str(value)  # noqa: UP031
    assert value == MARKER and value != b"other" and value == SecretBytes(bytearray(MARKER))
    with pytest.raises(TypeError, match="not pickled"):
        pickle.dumps(value)
    with pytest.raises(TypeError):
        hash(value)
    with pytest.raises(TypeError):
        bytes(value)  # type: ignore[call-overload]  # a copy only on purpose: view()


def test_wiping_zeroes_the_buffer_the_value_lived_in() -> None:
    buffer = bytearray(MARKER)
    value = SecretBytes.adopt(buffer)
    view = value.view()
    assert bytes(view) == MARKER
    value.wipe()
    assert buffer == bytearray(len(MARKER))  # the very memory, zeroed
    assert bytes(view) == bytes(len(MARKER)) and value.wiped and len(value) == 0
    with SecretBytes(MARKER) as held:
        assert held == MARKER
    assert held.wiped


def test_no_value_in_any_object_or_error(location: Location, tmp_path: Path) -> None:
    events: list[AccessEvent] = []
    vault = Vault(location, audit=events.append, argon2=FAST)
    vault.create(MARKER)  # the passphrase is a secret too
    vault.set("api.key", MARKER)
    objects: list[object] = [vault, vault.status(), vault.names(), vault.get("api.key")]
    errors: list[BaseException] = []

    def failing(attempt: Callable[[], object]) -> None:
        with pytest.raises(CovenError) as raised:
            attempt()
        errors.append(raised.value)

    failing(lambda: vault.get("missing"))
    failing(lambda: vault.set("Bad Name", MARKER))
    failing(lambda: vault.set("api.key", MARKER * (VALUE_MAX // len(MARKER) + 1)))
    failing(lambda: vault.set("api.key", MARKER.decode()))  # type: ignore[arg-type]
    failing(lambda: Vault(location).unlock(MARKER + b"!"))
    vault.lock()
    failing(lambda: vault.get("api.key"))
    data = bytearray(location.vault.read_bytes())
    data[-1] ^= 1
    location.vault.write_bytes(bytes(data))
    failing(lambda: Vault(location).unlock(MARKER))
    objects += events + errors
    assert len(errors) == 7
    for thing in objects:
        assert MARKER.decode() not in shown(thing), type(thing).__name__
        assert repr(MARKER) not in shown(thing), type(thing).__name__
    for name, content in file_bytes(tmp_path).items():
        assert MARKER not in content, name
