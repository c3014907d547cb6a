"""Sentence embeddings, as tieto uses them: the shared ``runa.models.embedder``."""

from runa.models import (
    EMBEDDING_HINT,
    Embedder,
    EmbedderError,
    EmbedderWrapper,
    LlamaEmbedder,
    embedding_model_path,
)

__all__ = ["EMBEDDING_HINT", "Embedder", "EmbedderError", "EmbedderWrapper", "LlamaEmbedder",
           "embedding_model_path"]
