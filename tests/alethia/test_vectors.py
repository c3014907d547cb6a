"""The encrypted vector file: fixed slots, each sealed to its row, read back on demand."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest

from runa.alethia.vectors import HEADER, VectorFile, VectorFileError
from runa.crypto import sodium


@pytest.fixture
def key() -> bytearray:
    return sodium.new_key()


def vectors(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 384)).astype(np.float32)


def test_appended_vectors_come_back_by_row_in_any_order(tmp_path: Path, key: bytearray) -> None:
    first, second = vectors(5000), vectors(7, seed=1)
    with VectorFile(tmp_path / "v", key) as file:
        assert file.append(first) == 0
        assert file.append(second) == 5000
        assert len(file) == 5007
        rows = np.array([5006, 3, 4999, 3])
        assert np.array_equal(file.fetch(rows), np.concatenate([first, second])[rows])
    with VectorFile(tmp_path / "v", key) as reopened:
        assert np.array_equal(reopened.read_all(), np.concatenate([first, second]))
        assert [len(b) for b in reopened.blocks(2048)] == [2048, 2048, 911]


def test_row_r_is_at_a_fixed_offset_and_nothing_is_in_the_clear(tmp_path: Path,
                                                                 key: bytearray) -> None:
    data = vectors(3)
    with VectorFile(tmp_path / "v", key) as file:
        file.append(data)
        slot = file.slot
    raw = (tmp_path / "v").read_bytes()
    assert slot == 24 + 384 * 4 + 16
    assert len(raw) == HEADER.size + 3 * slot
    assert data[1].tobytes()[:64] not in raw
    assert stat.S_IMODE(os.stat(tmp_path / "v").st_mode) == 0o600


def test_a_wrong_key_is_a_clear_error(tmp_path: Path, key: bytearray) -> None:
    with VectorFile(tmp_path / "v", key) as file:
        file.append(vectors(2))
    with VectorFile(tmp_path / "v", sodium.new_key()) as other, \
            pytest.raises(VectorFileError, match="row 1 does not open: a wrong key"):
        other.fetch([1])


def test_an_altered_or_moved_slot_does_not_open(tmp_path: Path, key: bytearray) -> None:
    path = tmp_path / "v"
    with VectorFile(path, key) as file:
        file.append(vectors(3))
        slot = file.slot
    raw = bytearray(path.read_bytes())
    raw[HEADER.size + slot + 100] ^= 1  # a bit of row 1's ciphertext
    path.write_bytes(bytes(raw))
    with VectorFile(path, key) as file:
        file.fetch([0, 2])
        with pytest.raises(VectorFileError, match="row 1 does not open"):
            file.fetch([1])
    raw = bytearray(path.read_bytes())
    row0, row2 = raw[HEADER.size:HEADER.size + slot], raw[HEADER.size + 2 * slot:]
    raw[HEADER.size:HEADER.size + slot], raw[HEADER.size + 2 * slot:] = row2, row0
    path.write_bytes(bytes(raw))
    with VectorFile(path, key) as file, pytest.raises(VectorFileError, match="row 0"):
        file.read_all()


def test_a_cut_short_last_slot_is_not_a_row_and_the_next_append_replaces_it(
        tmp_path: Path, key: bytearray) -> None:
    path = tmp_path / "v"
    data = vectors(4)
    with VectorFile(path, key) as file:
        file.append(data[:3])
    with open(path, "ab") as f:
        f.write(b"\0" * 500)  # a write cut short
    with VectorFile(path, key) as file:
        assert len(file) == 3
        assert file.append(data[3:]) == 3
        assert np.array_equal(file.read_all(), data)


def test_rows_it_does_not_hold_and_foreign_files_are_refused(tmp_path: Path,
                                                             key: bytearray) -> None:
    with VectorFile(tmp_path / "v", key) as file:
        file.append(vectors(2))
        with pytest.raises(VectorFileError, match="no row 2"):
            file.fetch([2])
        with pytest.raises(VectorFileError, match="384-dimensional"):
            file.append(np.zeros((1, 10), dtype=np.float32))
    with pytest.raises(VectorFileError, match="not 128"):
        VectorFile(tmp_path / "v", key, dim=128)
    (tmp_path / "other").write_bytes(b"SQLite format 3\0" + bytes(100))
    with pytest.raises(VectorFileError, match="not a vector file"):
        VectorFile(tmp_path / "other", key)


def test_decrypt_to_fills_the_callers_buffer_or_zeroes_it(key: bytearray) -> None:
    nonce = sodium.random_bytes(sodium.NONCE_BYTES)
    sealed = sodium.encrypt(key, nonce, b"0123456789", b"ad")
    out = bytearray(10)
    assert sodium.decrypt_to(key, nonce, sealed, b"ad", out) and out == b"0123456789"
    assert not sodium.decrypt_to(key, nonce, sealed, b"other", out) and out == bytes(10)
    with pytest.raises(ValueError):
        sodium.decrypt_to(key, nonce, sealed, b"ad", bytearray(3))
