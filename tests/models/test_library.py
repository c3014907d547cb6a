"""``runa models add | rm`` underneath: a model is checked before it is copied in."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import gguf
import numpy as np
import pytest

from runa.models.errors import CorruptModelError, ModelNotFoundError
from runa.models.library import (
    ModelExistsError,
    ModelInUseError,
    UnsupportedModelError,
    WrongRoleError,
    add_model,
    find_entry,
    list_entries,
    remove_model,
    sidecar,
)


def write_unknown_architecture(path: Path) -> Path:
    """A well-formed GGUF whose architecture no llama.cpp knows."""
    writer = gguf.GGUFWriter(str(path), "nosucharch")
    for key, value in (("block_count", 1), ("embedding_length", 8),
                       ("attention.head_count", 2)):
        writer.add_uint32(f"nosucharch.{key}", value)
    writer.add_token_list(["<unk>", "a"])
    writer.add_tensor("token_embd.weight", np.zeros((2, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_an_added_model_is_copied_with_its_sha256_and_listed(tiny_model: Path,
                                                              tmp_path: Path) -> None:
    models = tmp_path / "models"
    entry = add_model(tiny_model, models, name="mine")
    assert entry.path == models / "mine.gguf" and not entry.path.is_symlink()
    digest = hashlib.sha256(tiny_model.read_bytes()).hexdigest()
    record = json.loads(sidecar(entry.path).read_text())
    assert (record["sha256"], record["role"], record["source"]) == \
        (digest, "chat", str(tiny_model))
    [listed] = list_entries([models])
    assert listed.as_json() | {"path": None} == {
        "name": "mine", "path": None, "bytes": tiny_model.stat().st_size, "role": "chat",
        "architecture": "llama", "quantization": "F32", "context_length": 512,
        "chat_template": True, "sha256": digest, "problem": None}
    assert sorted(p.name for p in models.iterdir()) == ["mine.gguf", "mine.gguf.json"]


def test_a_linked_model_is_a_link_and_its_name_is_not_taken_twice(tiny_model: Path,
                                                                  tmp_path: Path) -> None:
    entry = add_model(tiny_model, tmp_path, name="linked.gguf", link=True)
    assert entry.path.is_symlink() and entry.path.resolve() == tiny_model.resolve()
    with pytest.raises(ModelExistsError, match="already exists") as err:
        add_model(tiny_model, tmp_path, name="linked")
    assert err.value.exit_code == 73


@pytest.mark.parametrize("damage", ["not_gguf", "truncated"])
def test_a_file_that_is_not_a_whole_gguf_is_refused_and_nothing_is_left(
        tiny_model: Path, tmp_path: Path, damage: str) -> None:
    bad = tmp_path / "bad.gguf"
    data = tiny_model.read_bytes()
    bad.write_bytes(b"<html>not a model</html>" * 4 if damage == "not_gguf"
                    else data[: len(data) // 2])
    models = tmp_path / "models"
    with pytest.raises(CorruptModelError, match="bad magic" if damage == "not_gguf"
                       else "truncated") as err:
        add_model(bad, models)
    assert err.value.exit_code == 65
    assert not models.exists()


def test_an_architecture_llama_cpp_does_not_know_is_refused(tmp_path: Path) -> None:
    model = write_unknown_architecture(tmp_path / "odd.gguf")
    with pytest.raises(UnsupportedModelError, match=r"'nosucharch' is not one this llama\.cpp"):
        add_model(model, tmp_path / "models")


def test_an_embedding_model_is_refused_for_chat_and_taken_as_embedding(tmp_path: Path) -> None:
    from tieto.tiny_bert import write_tiny_bert

    from runa.models.bert_gguf import convert_bert

    embedding = tmp_path / "bert.gguf"
    convert_bert(write_tiny_bert(tmp_path / "source"), embedding)
    models = tmp_path / "models"
    with pytest.raises(WrongRoleError, match=r"an embedding model \(bert\), not a chat model; "
                       "add it with --role embedding"):
        add_model(embedding, models)
    entry = add_model(embedding, models, role="embedding")
    assert entry.role == "embedding"


def test_a_chat_model_is_refused_as_an_embedding_model(tiny_model: Path, tmp_path: Path) -> None:
    with pytest.raises(WrongRoleError, match="add it with --role chat"):
        add_model(tiny_model, tmp_path, role="embedding")


def test_rm_refuses_the_model_in_use_and_removes_another(tiny_model: Path,
                                                         tmp_path: Path) -> None:
    models = tmp_path / "models"
    entry = add_model(tiny_model, models, name="gone")
    with pytest.raises(ModelInUseError, match="gone is the model splinfer runs"):
        remove_model(find_entry("gone", [models]), in_use=entry.path)
    assert entry.path.exists()
    remove_model(find_entry("gone.gguf", [models]), in_use=tiny_model)
    assert list(models.iterdir()) == []
    with pytest.raises(ModelNotFoundError):
        find_entry("gone", [models])
