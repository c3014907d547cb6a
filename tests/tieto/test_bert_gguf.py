"""The torch-free converter: ids match `tokenizers`, vectors match a numpy BERT (cos >= 0.999)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from runa.models.bert_gguf import ConversionError, convert_bert
from runa.models.gguf_info import read_model_info

from .bert_reference import ReferenceBert
from .conftest import sentences
from .tiny_bert import write_tiny_bert

TINY_SENTENCES = ["the cat sat on the mat", "hello world!", "dogs running", "The CATS sat.",
                  "zyx?", "tokens: the dog's mat-ing"]


def _tokenizer(source: Path):
    tokenizers = pytest.importorskip("tokenizers")
    tok = tokenizers.Tokenizer.from_file(str(source / "tokenizer.json"))
    tok.no_padding()  # the shipped file pads and truncates to 128 (notes, pitfall 5)
    tok.no_truncation()
    return tok


def _llama(path: Path, n_ctx: int):
    from llama_cpp import Llama

    return Llama(str(path), embedding=True, n_ctx=n_ctx, n_batch=n_ctx, n_ubatch=n_ctx,
                 n_threads=2, verbose=False)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    source = write_tiny_bert(tmp_path_factory.mktemp("tiny-bert") / "model")
    out = source.parent / "tiny.gguf"
    convert_bert(source, out, name="tiny")
    return source, out


def test_conversion_imports_no_torch(tmp_path: Path) -> None:
    """In a fresh interpreter that refuses torch/transformers, the conversion still works."""
    source = write_tiny_bert(tmp_path / "model")
    code = f"""
import sys
class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "transformers"):
            raise ImportError("refused: " + name)
sys.meta_path.insert(0, Refuse())
from pathlib import Path
from runa.models.bert_gguf import convert_bert
convert_bert(Path({str(source)!r}), Path({str(tmp_path / 'out.gguf')!r}))
assert "torch" not in sys.modules and "transformers" not in sys.modules
print("ok")
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"
    assert "torch" not in sys.modules


def test_tiny_model_header_and_tensors(tiny: tuple[Path, Path]) -> None:
    _, out = tiny
    info = read_model_info(out)
    assert info.architecture == "bert" and info.n_layer == 2 and info.n_embd == 32
    assert info.tensor_count == 5 + 16 * 2  # position_ids and pooler.* dropped


def test_tiny_model_matches_tokenizers_and_reference(tiny: tuple[Path, Path]) -> None:
    source, out = tiny
    tok = _tokenizer(source)
    llm = _llama(out, 64)
    reference = ReferenceBert(source)
    for text in TINY_SENTENCES:
        ids = tok.encode(text).ids
        assert llm.tokenize(text.encode(), add_bos=True) == ids, text
        vector = np.asarray(llm.embed(text, normalize=True))
        assert float(vector @ reference.embed(ids)) >= 0.999, text
    llm.close()


def test_conversion_is_deterministic(tiny: tuple[Path, Path], tmp_path: Path) -> None:
    source, out = tiny
    again = tmp_path / "again.gguf"
    convert_bert(source, again, name="tiny")
    assert again.read_bytes() == out.read_bytes()


def test_f16_keeps_norms_and_positions_in_f32(tiny: tuple[Path, Path], tmp_path: Path) -> None:
    import gguf

    source, _ = tiny
    out = tmp_path / "f16.gguf"
    convert_bert(source, out, outtype="f16")
    types = {t.name: t.tensor_type for t in gguf.GGUFReader(out).tensors}
    assert types["token_embd.weight"] == gguf.GGMLQuantizationType.F16
    assert types["blk.0.attn_q.weight"] == gguf.GGMLQuantizationType.F16
    for name in ("position_embd.weight", "token_types.weight", "token_embd_norm.weight",
                 "blk.0.attn_q.bias"):
        assert types[name] == gguf.GGMLQuantizationType.F32, name


def test_missing_or_wrong_source_files_name_the_file(tmp_path: Path) -> None:
    source = write_tiny_bert(tmp_path / "model")
    (source / "modules.json").unlink()
    with pytest.raises(ConversionError, match=r"modules\.json: missing"):
        convert_bert(source, tmp_path / "x.gguf")
    source = write_tiny_bert(tmp_path / "model2")
    config = json.loads((source / "config.json").read_text())
    (source / "config.json").write_text(json.dumps({**config, "model_type": "llama"}))
    with pytest.raises(ConversionError, match=r"config\.json: model_type is 'llama'"):
        convert_bert(source, tmp_path / "y.gguf")
    source = write_tiny_bert(tmp_path / "model3")
    (source / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ConversionError, match=r"model\.safetensors: not a readable"):
        convert_bert(source, tmp_path / "z.gguf")


@pytest.mark.slow
@pytest.mark.real_model
def test_real_model_token_ids_match_tokenizers(minilm_source: Path, minilm_gguf: Path) -> None:
    tok = _tokenizer(minilm_source)
    llm = _llama(minilm_gguf, 512)
    mismatched = [s for s in sentences()
                  if llm.tokenize(s.encode(), add_bos=True) != tok.encode(s).ids]
    llm.close()
    assert mismatched == []


@pytest.mark.slow
@pytest.mark.real_model
def test_real_model_vectors_match_numpy_reference(minilm_source: Path, minilm) -> None:
    """The installed GGUF through tieto's embedder vs the float64 reference, per sentence."""
    tok = _tokenizer(minilm_source)
    reference = ReferenceBert(minilm_source)
    texts = sentences()
    vectors = minilm.embed(texts)
    cosines = [float(v @ reference.embed(tok.encode(t).ids)) for t, v in zip(texts, vectors,
                                                                              strict=True)]
    assert min(cosines) >= 0.999, list(zip(texts, cosines, strict=True))
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


@pytest.mark.real_model
def test_the_packaged_embedding_model_is_refused_as_the_chat_model(
    minilm_gguf: Path, runa_env: dict[str, str]
) -> None:
    """Set as splinfer.model, all-MiniLM once loaded and answered '[unused27] …' with exit 0."""
    env = {**runa_env, "RUNA_SPLINFER_MODEL": str(minilm_gguf), "RUNA_LOG_TARGET": "stderr"}
    line = (f"environment: splinfer.model = '{minilm_gguf}': {minilm_gguf}: an embedding model "
            "(bert); set splinfer.model to a chat model")
    for args in (("config", "check"), ("daemon", "splinfer")):
        done = subprocess.run([sys.executable, "-m", "runa", *args], env=env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 78 and line in done.stderr, (args, done.stderr)
