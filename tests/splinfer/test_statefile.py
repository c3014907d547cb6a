"""Saved states: a damaged, cut or foreign file is refused before llama.cpp sees it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from runa.protocol.params import SamplingParams
from runa.splinfer import statefile
from runa.splinfer.engine import Engine
from runa.splinfer.statefile import StateCorrupt, StateForeign, StateIdentity, StateMissing
from runa.splinfer.storage import atomic_write

ME = StateIdentity(model="a" * 64, llama=statefile.llama_identity(),
                   kv=statefile.kv_identity(False))


def write(path: Path, tokens=(5, 6, 7), data=b"\x01\x02\x03" * 1000, who=ME, conv="c1") -> None:
    chunks, size, _ = statefile.encode(conv, who, list(tokens), memoryview(data))
    atomic_write(path, chunks, size=size)


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "c1.state"
    write(path)
    saved = statefile.read(path, ME, "c1")
    assert saved.tokens == [5, 6, 7] and bytes(saved.data) == b"\x01\x02\x03" * 1000
    assert saved.header.n_tokens == 3 and saved.header.checksum.startswith("crc32:")
    meta = saved.header.meta(path)
    assert set(meta) == {"path", "n_tokens", "model", "llama_version", "checksum"}


def test_a_flipped_byte_is_caught_by_the_checksum(tmp_path: Path) -> None:
    path = tmp_path / "c1.state"
    write(path)
    raw = bytearray(path.read_bytes())
    raw[-100] ^= 0x40
    path.write_bytes(bytes(raw))
    with pytest.raises(StateCorrupt, match="checksum"):
        statefile.read(path, ME, "c1")


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "header"])
def test_damaged_files_are_corrupt_not_crashes(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "c1.state"
    write(path)
    raw = path.read_bytes()
    path.write_bytes({"truncated": raw[:-10], "garbage": b"\x00" * 64, "empty": b"",
                      "header": raw[:12] + b"{not json" + raw[21:]}[damage])
    with pytest.raises(StateCorrupt):
        statefile.read(path, ME, "c1")


@pytest.mark.parametrize("field", ["model", "llama", "kv"])
def test_a_state_from_another_model_or_llama_cpp_is_foreign(tmp_path: Path, field: str) -> None:
    path = tmp_path / "c1.state"
    write(path, who=dataclasses.replace(ME, **{field: "something else"}))
    with pytest.raises(StateForeign, match=field):
        statefile.read(path, ME, "c1")


def test_missing_and_misplaced(tmp_path: Path) -> None:
    with pytest.raises(StateMissing):
        statefile.read(tmp_path / "nope.state", ME, "nope")
    write(tmp_path / "c2.state", conv="c1")
    with pytest.raises(StateCorrupt, match="belongs to conversation 'c1'"):
        statefile.read(tmp_path / "c2.state", ME, "c2")


def test_a_real_state_survives_the_file_and_llama_cpp_takes_it(tiny_engine: Engine,
                                                               tmp_path: Path) -> None:
    seq = tiny_engine.new_sequence()
    tiny_engine.generate(seq, tiny_engine.tokenize("hello world the sea"),
                         SamplingParams(temp=0, n_predict=6))
    chunks, size, _ = statefile.encode("c1", ME, seq.tokens, tiny_engine.save_state(seq))
    atomic_write(tmp_path / "c1.state", chunks, size=size)
    tokens = list(seq.tokens)
    tiny_engine.release(seq)
    saved = statefile.read(tmp_path / "c1.state", ME, "c1")
    tiny_engine.restore_state(seq, saved.data, saved.tokens)
    assert seq.tokens == tokens
