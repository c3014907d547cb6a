"""Finding a model by name or path, personal directory first."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from runa.models.catalog import SMOLLM2_135M
from runa.models.errors import CorruptModelError, ModelNotFoundError
from runa.models.resolve import list_models, resolve_model


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
    assert "runa models setup" in message and "-m" in message


def test_corrupt_file_is_named(dirs: tuple[Path, Path]) -> None:
    personal, _ = dirs
    (personal / "broken.gguf").write_bytes(b"GGUF" + b"\xff" * 64)
    with pytest.raises(CorruptModelError, match=r"broken\.gguf"):
        resolve_model("broken", dirs)
