"""The GGUF header check that stands between a bad file and llama.cpp."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from runa.models.errors import CorruptModelError, ModelNotFoundError
from runa.models.gguf_info import read_model_info


def test_reads_hyperparameters_of_the_tiny_model(tiny_model: Path) -> None:
    info = read_model_info(tiny_model)
    assert (info.architecture, info.n_layer, info.n_embd, info.n_ctx_train) == ("llama", 2, 64, 512)
    assert info.n_head == (4, 4) and info.n_head_kv == (2, 2)
    assert (info.head_dim_k, info.head_dim_v, info.n_vocab) == (16, 16, 1024)
    assert info.chat_template is not None and "<|im_start|>" in info.chat_template
    # 2 layers x 2 KV heads x (16 + 16) dims x 2 bytes
    assert info.kv_bytes_per_token() == 2 * 2 * 32 * 2


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.gguf"
    with pytest.raises(ModelNotFoundError, match=r"nope\.gguf"):
        read_model_info(missing)


def test_text_file_is_refused_with_the_path(tmp_path: Path) -> None:
    bogus = tmp_path / "notes.gguf"
    bogus.write_text("these are not the weights you are looking for\n" * 10)
    with pytest.raises(CorruptModelError, match=r"notes\.gguf.*bad magic"):
        read_model_info(bogus)


def test_truncated_download_is_refused(tiny_model: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(tiny_model.read_bytes()[: tiny_model.stat().st_size // 2])
    with pytest.raises(CorruptModelError, match=r"cut\.gguf.*truncated"):
        read_model_info(cut)


def test_empty_file_and_directory_are_refused(tmp_path: Path) -> None:
    (tmp_path / "empty.gguf").write_bytes(b"")
    with pytest.raises(CorruptModelError, match="too short"):
        read_model_info(tmp_path / "empty.gguf")
    with pytest.raises(CorruptModelError, match="directory"):
        read_model_info(tmp_path)


def test_damaged_headers_never_escape_as_other_exceptions(tiny_model: Path, tmp_path: Path) -> None:
    """Random damage in the header either still parses or is a CorruptModelError."""
    data = tiny_model.read_bytes()
    rng = random.Random(7)
    refused = 0
    for i in range(200):
        damaged = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            damaged[rng.randrange(4, 4096)] = rng.randrange(256)
        path = tmp_path / f"d{i}.gguf"
        path.write_bytes(bytes(damaged))
        try:
            read_model_info(path)
        except CorruptModelError as e:
            assert str(path) in str(e)
            refused += 1
    assert refused > 50  # most header damage is caught


def test_wrong_version_is_refused(tiny_model: Path, tmp_path: Path) -> None:
    data = bytearray(tiny_model.read_bytes())
    data[4:8] = (99).to_bytes(4, "little")
    path = tmp_path / "v99.gguf"
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptModelError, match="version 99"):
        read_model_info(path)
