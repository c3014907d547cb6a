"""Fixtures of the vault tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from runa.coven import Location


@pytest.fixture
def location(tmp_path: Path) -> Location:
    """A vault of the test's own: ``<tmp>/coven/vault`` and ``<tmp>/coven/keys/``."""
    return Location.in_directory(tmp_path / "coven")
