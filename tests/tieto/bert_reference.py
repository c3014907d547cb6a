"""A reference BERT sentence embedding written in numpy (float64), to check the GGUF against.

Embeddings (word + position + token type, LayerNorm), then post-LN encoder layers
with exact erf GELU as Hugging Face's "gelu", then mean pooling over the tokens
and L2 normalisation — what sentence-transformers computes for all-MiniLM-L6-v2.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

_erf = np.vectorize(math.erf)


def _layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * w + b


def _gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


class ReferenceBert:
    def __init__(self, source: Path) -> None:
        from safetensors.numpy import load_file

        self.config = json.loads((source / "config.json").read_text())
        raw = load_file(str(source / "model.safetensors"))
        self.w = {k.removeprefix("bert."): v.astype(np.float64) for k, v in raw.items()
                  if v.dtype.kind == "f"}

    def embed(self, ids: Sequence[int]) -> np.ndarray:
        w, c = self.w, self.config
        eps = c.get("layer_norm_eps", 1e-12)
        n_head = c["num_attention_heads"]
        ids_arr = np.asarray(ids)
        x = (w["embeddings.word_embeddings.weight"][ids_arr]
             + w["embeddings.position_embeddings.weight"][: len(ids)]
             + w["embeddings.token_type_embeddings.weight"][0])
        x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], eps)
        n, d = x.shape
        hd = d // n_head
        for i in range(c["num_hidden_layers"]):
            p = f"encoder.layer.{i}."

            def lin(t: np.ndarray, name: str, p: str = p) -> np.ndarray:
                return t @ w[p + name + ".weight"].T + w[p + name + ".bias"]

            q = lin(x, "attention.self.query").reshape(n, n_head, hd).transpose(1, 0, 2)
            k = lin(x, "attention.self.key").reshape(n, n_head, hd).transpose(1, 0, 2)
            v = lin(x, "attention.self.value").reshape(n, n_head, hd).transpose(1, 0, 2)
            scores = q @ k.transpose(0, 2, 1) / math.sqrt(hd)
            scores = np.exp(scores - scores.max(-1, keepdims=True))
            attn = (scores / scores.sum(-1, keepdims=True)) @ v
            attn = attn.transpose(1, 0, 2).reshape(n, d)
            x = _layer_norm(x + lin(attn, "attention.output.dense"),
                            w[p + "attention.output.LayerNorm.weight"],
                            w[p + "attention.output.LayerNorm.bias"], eps)
            h = _gelu(lin(x, "intermediate.dense"))
            x = _layer_norm(x + lin(h, "output.dense"), w[p + "output.LayerNorm.weight"],
                            w[p + "output.LayerNorm.bias"], eps)
        pooled = x.mean(0)
        return pooled / np.linalg.norm(pooled)
