"""Model files: which models Runa knows, setting them up, finding them, checking them.

A library below the components: splinfer uses it to resolve and check a model
before llama.cpp sees it; the CLI uses it for ``runa models setup``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from runa.surface import lazy

if TYPE_CHECKING:
    from runa.models.catalog import (
        CATALOG,
        DEFAULT_EMBEDDING_MODEL,
        DEFAULT_MODEL,
        EMBEDDING_CATALOG,
        lookup,
        lookup_embedding,
    )
    from runa.models.embedder import (
        EMBEDDING_HINT,
        Embedder,
        EmbedderError,
        EmbedderWrapper,
        LlamaEmbedder,
        configured_embedder,
        embedding_model_path,
    )
    from runa.models.embedding_install import setup_embedding_model
    from runa.models.errors import ModelError, ModelNotFoundError
    from runa.models.gguf_info import ModelInfo, read_model_info
    from runa.models.install import SetupEvent, setup_model
    from runa.models.library import (
        ROLES,
        ModelEntry,
        add_model,
        find_entry,
        list_entries,
        remove_model,
    )
    from runa.models.quantize import Progress, quant_types, quantize_model
    from runa.models.resolve import (
        configured_chat_model,
        list_models,
        require_chat_model,
        resolve_model,
    )

__all__ = [
    "CATALOG",
    "DEFAULT_EMBEDDING_MODEL",
    "DEFAULT_MODEL",
    "EMBEDDING_CATALOG",
    "EMBEDDING_HINT",
    "ROLES",
    "Embedder",
    "EmbedderError",
    "EmbedderWrapper",
    "LlamaEmbedder",
    "ModelEntry",
    "ModelError",
    "ModelInfo",
    "ModelNotFoundError",
    "Progress",
    "SetupEvent",
    "add_model",
    "configured_chat_model",
    "configured_embedder",
    "embedding_model_path",
    "find_entry",
    "list_entries",
    "list_models",
    "lookup",
    "lookup_embedding",
    "quant_types",
    "quantize_model",
    "read_model_info",
    "remove_model",
    "require_chat_model",
    "resolve_model",
    "setup_embedding_model",
    "setup_model",
]
if not TYPE_CHECKING:  # mypy reads the imports above; an unknown name stays an error
    __getattr__ = lazy(__name__, {
        "catalog": ("CATALOG", "DEFAULT_EMBEDDING_MODEL", "DEFAULT_MODEL", "EMBEDDING_CATALOG",
                    "lookup", "lookup_embedding"),
        "embedder": ("EMBEDDING_HINT", "Embedder", "EmbedderError", "EmbedderWrapper",
                     "LlamaEmbedder", "configured_embedder", "embedding_model_path"),
        "embedding_install": ("setup_embedding_model",),
        "errors": ("ModelError", "ModelNotFoundError"),
        "gguf_info": ("ModelInfo", "read_model_info"),
        "install": ("SetupEvent", "setup_model"),
        "library": ("ROLES", "ModelEntry", "add_model", "find_entry", "list_entries",
                    "remove_model"),
        "quantize": ("Progress", "quant_types", "quantize_model"),
        "resolve": ("configured_chat_model", "list_models", "require_chat_model", "resolve_model"),
    })
