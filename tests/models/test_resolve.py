"""Finding a model by name or path, personal directory first."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from runa.models.catalog import SMOLLM2_135M
from runa.models.errors import CorruptModelError, ModelNotFoundError, NotAChatModelError
from runa.models.gguf_info import read_model_info
from runa.models.resolve import list_models, require_chat_model, resolve_model


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    personal, system = tmp_path / "home-models", tmp_path / "usr-models"
    personal.mkdir()
    system.mkdir()
    return personal, system


def test_personal_copy_shadows_the_system_one(tiny_model: Path, dirs: tuple[Path, Path]) -> None:
    personal, system = dirs
    shutil.copy(tiny_model, system / "chat.gguf")
    assert resolve_model("chat", dirs).path == system / "chat.gguf"
    shutil.copy(tiny_model, personal / "chat.gguf")
    assert resolve_model("chat", dirs).path == personal / "chat.gguf"
    assert resolve_model("chat.gguf", dirs).path == personal / "chat.gguf"
    assert list_models(dirs) == [personal / "chat.gguf"]


def test_default_means_the_catalog_file(tiny_model: Path, dirs: tuple[Path, Path]) -> None:
    _, system = dirs
    shutil.copy(tiny_model, system / SMOLLM2_135M.filename)
    assert resolve_model("default", dirs).path == system / SMOLLM2_135M.filename


def test_explicit_path_is_used_as_is(tiny_model: Path, dirs: tuple[Path, Path]) -> None:
    assert resolve_model(str(tiny_model), dirs).path == tiny_model
    with pytest.raises(ModelNotFoundError) as err:
        resolve_model(str(tiny_model.parent / "other.gguf"), dirs)
    assert str(tiny_model.parent / "other.gguf") in str(err.value)


def test_missing_model_says_where_it_looked_and_what_to_do(dirs: tuple[Path, Path]) -> None:
    with pytest.raises(ModelNotFoundError) as err:
        resolve_model("default", dirs)
    message = str(err.value)
    assert str(dirs[0]) in message and str(dirs[1]) in message
    assert "runa models setup" in message
    assert "set splinfer.model" in message and "RUNA_SPLINFER_MODEL" in message
    assert "-m PATH" not in message  # most commands that show this have no such flag


def test_corrupt_file_is_named(dirs: tuple[Path, Path]) -> None:
    personal, _ = dirs
    (personal / "broken.gguf").write_bytes(b"GGUF" + b"\xff" * 64)
    with pytest.raises(CorruptModelError, match=r"broken\.gguf"):
        resolve_model("broken", dirs)


def test_an_embedding_model_is_not_a_chat_model(tiny_model: Path, tmp_path: Path) -> None:
    """Judged by its metadata (architecture, pooling type), before llama.cpp loads it."""
    from tieto.tiny_bert import write_tiny_bert

    from runa.models.bert_gguf import convert_bert
    from runa.splinfer.engine import Engine

    embedding = tmp_path / "bert.gguf"
    convert_bert(write_tiny_bert(tmp_path / "source"), embedding)
    info = read_model_info(embedding)
    assert (info.architecture, info.pooling_type) == ("bert", 1)
    with pytest.raises(NotAChatModelError) as err:
        require_chat_model(info)
    assert str(err.value) == (f"{embedding}: an embedding model (bert); set splinfer.model to "
                              "a chat model")
    with pytest.raises(NotAChatModelError):
        Engine(embedding)  # every way in to the chat engine refuses it
    assert require_chat_model(read_model_info(tiny_model)).architecture == "llama"
