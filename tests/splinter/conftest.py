"""Fixtures for the splinter tests: private segment directories and real child processes.

Every test gets its own directory under /dev/shm (the real tmpfs, so mmap/futex behave as in
production) and removes it afterwards. Children are forked with multiprocessing (fork context) and
open their own Bus from the path, as separate services would.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator

import pytest

from runa.splinter import Bus, Geometry, create_segment

from .support import SMALL


@pytest.fixture
def shm_dir() -> Iterator[str]:
    d = tempfile.mkdtemp(prefix="runa-test-", dir="/dev/shm")
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def make_bus(shm_dir: str) -> Iterator[Callable[..., tuple[Bus, str]]]:
    """make_bus(geometry=SMALL, name="main", **bus_kwargs) -> (bus, path); closed afterwards."""
    opened: list[Bus] = []

    def make(geometry: Geometry = SMALL, name: str = "main", **kwargs: object) -> tuple[Bus, str]:
        path = os.path.join(shm_dir, f"runa-test-{name}")
        if not os.path.exists(path):
            create_segment(path, geometry)
        bus = Bus.open(path, **kwargs)
        opened.append(bus)
        return bus, path

    yield make
    for b in opened:
        b.close()


@pytest.fixture
def mp() -> multiprocessing.context.BaseContext:
    return multiprocessing.get_context("fork")
