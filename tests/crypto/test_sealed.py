"""Sealed bus payloads: a value travels encrypted and opens only with the same key and context."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from runa.crypto.sealed import BusKey, BusKeyError, SealError, key_path


def test_a_sealed_payload_opens_to_its_fields_and_value_and_shows_neither(tmp_path: Path) -> None:
    key = BusKey.load_or_create(key_path(tmp_path / "run"))
    payload = key.seal("coven/request", {"op": "get", "name": "api.key"}, b"s3cret-value")
    assert set(payload) == {"sealed"}
    assert "api.key" not in payload["sealed"] and b"s3cret" not in payload["sealed"].encode()
    opened = key.open("coven/request", payload)
    assert opened.fields == {"op": "get", "name": "api.key"}
    assert bytes(opened.value) == b"s3cret-value"
    opened.wipe()
    assert bytes(opened.value) == bytes(len(b"s3cret-value"))


def test_the_key_file_is_private_and_shared_by_every_process_of_the_stack(tmp_path: Path) -> None:
    path = key_path(tmp_path / "run")
    first = BusKey.load_or_create(path)
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert os.stat(path.parent).st_mode & 0o777 == 0o700
    second = BusKey.load_or_create(path)
    assert second.open("alethia/reply", first.seal("alethia/reply", {"n": 1})).fields == {"n": 1}
    assert [p.name for p in path.parent.iterdir()] == ["bus.key"]  # no temp file left


def test_another_context_or_key_or_a_flipped_byte_is_refused(tmp_path: Path) -> None:
    key = BusKey.load_or_create(key_path(tmp_path / "a"))
    payload = key.seal("coven/reply", {"ok": True}, b"v")
    with pytest.raises(SealError, match="coven/request"):
        key.open("coven/request", payload)  # a reply replayed as a request
    other = BusKey.load_or_create(key_path(tmp_path / "b"))
    with pytest.raises(SealError, match="bus key"):
        other.open("coven/reply", payload)
    raw = bytearray(payload["sealed"].encode())
    raw[40] = ord("A") if raw[40] != ord("A") else ord("B")
    with pytest.raises(SealError):
        key.open("coven/reply", {"sealed": raw.decode()})
    for bad in ({}, {"sealed": 7}, {"sealed": "not base64!"}, {"sealed": "AAAA"}):
        with pytest.raises(SealError):
            key.open("coven/reply", bad)


def test_an_exposed_or_damaged_key_file_is_refused_not_replaced(tmp_path: Path) -> None:
    path = key_path(tmp_path / "run")
    BusKey.load_or_create(path)
    os.chmod(path, 0o644)
    with pytest.raises(BusKeyError, match="readable by others"):
        BusKey.load_or_create(path)
    os.chmod(path, 0o600)
    with open(path, "ab") as f:
        f.write(b"x")
    with pytest.raises(BusKeyError, match="33 bytes"):
        BusKey.load_or_create(path)
    assert os.path.getsize(path) == 33  # left as it was


def test_a_key_directory_of_someone_else_or_open_to_writes_is_refused(tmp_path: Path) -> None:
    """Under a /tmp fallback another user may have made the directory first."""
    for name, mode in (("shared", 0o777), ("group", 0o770)):
        directory = tmp_path / name
        directory.mkdir()
        directory.chmod(mode)
        with pytest.raises(BusKeyError, match="not a directory of yours that only you can"):
            BusKey.load_or_create(key_path(directory))
        assert list(directory.iterdir()) == []  # nothing written there
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    (tmp_path / "link").symlink_to(real)
    with pytest.raises(BusKeyError, match="is a symbolic link"):
        BusKey.load_or_create(key_path(tmp_path / "link"))
    if os.getuid() == 0:  # only root can give a directory away
        theirs = tmp_path / "theirs"
        theirs.mkdir(mode=0o700)
        os.chown(theirs, 65534, 65534)
        with pytest.raises(BusKeyError, match="owned by uid 65534"):
            BusKey.load_or_create(key_path(theirs))


def test_a_key_directory_readable_by_others_is_closed_to_0700(tmp_path: Path) -> None:
    directory = tmp_path / "runa"
    directory.mkdir(mode=0o755)
    directory.chmod(0o755)
    BusKey.load_or_create(key_path(directory)).close()
    assert directory.stat().st_mode & 0o777 == 0o700
