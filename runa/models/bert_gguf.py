"""Convert a Hugging Face BERT sentence-embedding model to GGUF with numpy alone.

llama.cpp's own converter imports torch and transformers; a person's machine has
neither (PyPI's torch is a multi-gigabyte CUDA build). This converter reads
``model.safetensors`` with ``safetensors.numpy``, the vocabulary straight from
``tokenizer.json`` and writes the file with the ``gguf`` package, following the
measured recipe in notes/embedding-gguf-no-torch.md:

* the vocabulary is written in llama.cpp's phantom-space form (``##x`` → ``x``,
  every other normal token → ``▁tok``, special tokens unchanged) — raw WordPiece
  strings make llama.cpp abort the whole process;
* ``bert.attention.layer_norm_epsilon`` and ``tokenizer.ggml.token_type_count``
  are required, ``bert.pooling_type`` must be written or pooling silently
  disappears;
* ``embeddings.position_ids`` and ``pooler.*`` are dropped; 1-D tensors, norms,
  position and token-type embeddings stay f32, other matrices follow ``outtype``.

Nothing here imports torch; a test asserts it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf
import numpy as np

from runa.models.errors import ModelSetupError

#: Bumped whenever the bytes this converter writes change; recorded in the manifest.
CONVERTER_VERSION = 1

PHANTOM_SPACE = "\u2581"
_POOLING = {"mean": gguf.PoolingType.MEAN, "cls": gguf.PoolingType.CLS}
_SKIPPED_PREFIXES = ("pooler.", "cls.predictions", "cls.seq_relationship")
_ALWAYS_F32 = ("position_embd.weight", "token_types.weight")


class ConversionError(ModelSetupError):
    """The source files are not a BERT model this converter understands."""


@dataclass(frozen=True)
class BertConfig:
    """The hyperparameters the GGUF needs, read from ``config.json``."""

    n_layer: int
    n_embd: int
    n_head: int
    n_ff: int
    n_ctx: int
    n_vocab: int
    type_vocab_size: int
    layer_norm_eps: float

    @classmethod
    def read(cls, path: Path) -> BertConfig:
        raw = _read_json(path)
        if raw.get("model_type") != "bert":
            raise ConversionError(f"{path}: model_type is {raw.get('model_type')!r}, not 'bert'")
        if raw.get("position_embedding_type", "absolute") != "absolute":
            raise ConversionError(f"{path}: only absolute position embeddings are supported")
        if raw.get("hidden_act", "gelu") != "gelu":
            raise ConversionError(f"{path}: hidden_act {raw.get('hidden_act')!r} is not gelu")
        try:
            return cls(
                n_layer=int(raw["num_hidden_layers"]),
                n_embd=int(raw["hidden_size"]),
                n_head=int(raw["num_attention_heads"]),
                n_ff=int(raw["intermediate_size"]),
                n_ctx=int(raw["max_position_embeddings"]),
                n_vocab=int(raw["vocab_size"]),
                type_vocab_size=int(raw.get("type_vocab_size", 2)),
                layer_norm_eps=float(raw.get("layer_norm_eps", 1e-12)),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ConversionError(f"{path}: missing or bad hyperparameter: {e}") from None


@dataclass(frozen=True)
class Vocab:
    """A WordPiece vocabulary in id order, with the special tokens' ids."""

    tokens: tuple[str, ...]
    special: frozenset[int]
    ids: dict[str, int]
    lowercase: bool

    @classmethod
    def read(cls, path: Path) -> Vocab:
        raw = _read_json(path)
        model = raw.get("model") or {}
        if model.get("type") != "WordPiece" or model.get("continuing_subword_prefix") != "##":
            raise ConversionError(f"{path}: not a WordPiece tokenizer with '##' continuations")
        vocab: dict[str, int] = model.get("vocab") or {}
        by_id = sorted(vocab.items(), key=lambda kv: kv[1])
        if [i for _, i in by_id] != list(range(len(by_id))):
            raise ConversionError(f"{path}: vocabulary ids are not 0..{len(by_id) - 1}")
        special = frozenset(
            int(t["id"]) for t in raw.get("added_tokens", []) if t.get("special")
        )
        normalizer = raw.get("normalizer") or {}
        return cls(
            tokens=tuple(tok for tok, _ in by_id),
            special=special,
            ids=dict(vocab),
            lowercase=bool(normalizer.get("lowercase", True)),
        )

    def gguf_tokens(self) -> list[str]:
        """Tokens in llama.cpp's phantom-space form (see the module docstring)."""
        out = []
        for i, tok in enumerate(self.tokens):
            if i in self.special:
                out.append(tok)
            elif tok.startswith("##"):
                out.append(tok[2:])
            else:
                out.append(PHANTOM_SPACE + tok)
        return out

    def token_types(self) -> list[int]:
        control, normal = gguf.TokenType.CONTROL, gguf.TokenType.NORMAL
        return [control if i in self.special else normal for i in range(len(self.tokens))]

    def special_id(self, token: str, path: Path) -> int:
        try:
            return self.ids[token]
        except KeyError:
            raise ConversionError(f"{path}: special token {token} is not in the vocabulary") \
                from None


def pooling_type(source: Path) -> gguf.PoolingType:
    """The sentence-transformers pooling (``modules.json`` → the Pooling module's config)."""
    modules = _read_json(source / "modules.json")
    for module in modules if isinstance(modules, list) else []:
        if str(module.get("type", "")).endswith(".Pooling"):
            config = _read_json(source / module.get("path", "") / "config.json")
            for mode, kind in _POOLING.items():
                if config.get(f"pooling_mode_{mode}_token" + ("s" if mode == "mean" else "")):
                    return kind
            raise ConversionError(f"{source}: pooling mode not supported (mean or cls only)")
    raise ConversionError(f"{source / 'modules.json'}: no Pooling module")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConversionError(f"{path}: missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConversionError(f"{path}: cannot be read as JSON: {e}") from None


def _tensors(source: Path, config: BertConfig) -> Iterator[tuple[str, np.ndarray]]:
    """(GGUF name, float32 array) for every tensor llama.cpp's BERT graph uses."""
    from safetensors.numpy import load_file  # numpy flavour: never imports torch

    path = source / "model.safetensors"
    try:
        weights = load_file(str(path))
    except FileNotFoundError:
        raise ConversionError(f"{path}: missing") from None
    except Exception as e:  # safetensors raises its own error types
        raise ConversionError(f"{path}: not a readable safetensors file: {e}") from None
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.BERT, config.n_layer)
    for hf_name in sorted(weights):
        name = hf_name.removeprefix("bert.")
        if name == "embeddings.position_ids" or name.startswith(_SKIPPED_PREFIXES):
            continue
        gguf_name = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise ConversionError(f"{path}: tensor {hf_name} has no GGUF name for BERT")
        yield gguf_name, np.asarray(weights[hf_name], dtype=np.float32)


def _cast(name: str, array: np.ndarray, outtype: str) -> np.ndarray:
    if outtype == "f16" and array.ndim == 2 and name not in _ALWAYS_F32 \
            and not name.endswith("_norm.weight"):
        return array.astype(np.float16)
    return array


def convert_bert(source: Path, out: Path, *, outtype: str = "f32", name: str = "") -> None:
    """Write the GGUF of the HF BERT model in ``source`` to ``out``.

    ``source`` holds ``config.json``, ``model.safetensors``, ``tokenizer.json`` and
    ``modules.json`` (with its Pooling module). Raises ConversionError naming the
    file when any of them is missing or not what a BERT embedding model has.
    """
    if outtype not in ("f32", "f16"):
        raise ConversionError(f"outtype {outtype!r}: must be f32 or f16")
    source = Path(source)
    config = BertConfig.read(source / "config.json")
    tok_path = source / "tokenizer.json"
    vocab = Vocab.read(tok_path)
    if len(vocab.tokens) != config.n_vocab:
        raise ConversionError(
            f"{tok_path}: {len(vocab.tokens)} tokens, config.json says {config.n_vocab}"
        )
    pooling = pooling_type(source)
    tensors = list(_tensors(source, config))

    writer = gguf.GGUFWriter(str(out), gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.BERT])
    try:
        writer.add_name(name or source.name)
        writer.add_file_type(
            gguf.LlamaFileType.MOSTLY_F16 if outtype == "f16" else gguf.LlamaFileType.ALL_F32
        )
        writer.add_block_count(config.n_layer)
        writer.add_context_length(config.n_ctx)
        writer.add_embedding_length(config.n_embd)
        writer.add_feed_forward_length(config.n_ff)
        writer.add_head_count(config.n_head)
        writer.add_layer_norm_eps(config.layer_norm_eps)
        writer.add_causal_attention(False)
        writer.add_pooling_type(pooling)
        writer.add_tokenizer_model("bert")
        writer.add_tokenizer_pre("default")
        writer.add_token_list(vocab.gguf_tokens())
        writer.add_token_types(vocab.token_types())
        writer.add_token_type_count(config.type_vocab_size)
        writer.add_bool("tokenizer.ggml.normalizer.lowercase", vocab.lowercase)
        writer.add_bos_token_id(vocab.special_id("[CLS]", tok_path))
        writer.add_eos_token_id(vocab.special_id("[SEP]", tok_path))
        writer.add_sep_token_id(vocab.special_id("[SEP]", tok_path))
        writer.add_unk_token_id(vocab.special_id("[UNK]", tok_path))
        writer.add_pad_token_id(vocab.special_id("[PAD]", tok_path))
        writer.add_mask_token_id(vocab.special_id("[MASK]", tok_path))
        writer.add_add_bos_token(True)
        writer.add_add_eos_token(True)
        for gguf_name, array in tensors:
            writer.add_tensor(gguf_name, _cast(gguf_name, array, outtype))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
