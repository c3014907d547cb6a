"""The coven bus: envelopes that hold a largest secret, and the smaller coven segment an
earlier Runa left in /dev/shm replaced while nothing uses it (never one in use)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support import isolated_env, remove_segments

from runa import stackbus
from runa.components import load_config
from runa.config import Config
from runa.paths import Paths
from runa.splinter import Bus, ensure_segment
from runa.splinter.errors import SegmentError


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[Config, str]]:
    env = isolated_env(tmp_path)
    config = load_config(Paths.for_stack(env["RUNA_STACK"], env), env)
    yield config, env["RUNA_STACK"]
    remove_segments(env)


def test_the_coven_bus_takes_a_64_kib_secret_in_one_envelope(stack: tuple[Config, str]) -> None:
    config, _ = stack
    assert stackbus.geometry(config, "coven").max_envelope >= 87_871  # a largest `set`
    assert stackbus.geometry(config, "alethia") == stackbus.ALETHIA_BUS  # whole turns


def test_an_unused_coven_bus_of_the_old_geometry_is_replaced(stack: tuple[Config, str]) -> None:
    config, name = stack
    where = stackbus.path(config, name, "coven")
    assert ensure_segment(where, stackbus.SMALL_BUS, mode=0o600)
    assert stackbus.ensure_bus(config, name, "coven") is True
    with Bus.open(where) as bus:
        assert bus.geometry == stackbus.COVEN_BUS
    assert stackbus.ensure_bus(config, name, "coven") is False  # and then kept


@pytest.mark.parametrize("use", ["key", "queue"])
def test_a_coven_bus_in_use_is_never_replaced(stack: tuple[Config, str], use: str) -> None:
    config, name = stack
    where = stackbus.path(config, name, "coven")
    ensure_segment(where, stackbus.SMALL_BUS, mode=0o600)
    with Bus.open(where) as bus:
        if use == "key":
            bus.set("coven:kept", b"1")
        else:
            bus.queue("coven", service=True)  # held while the keeper looks
        with pytest.raises(SegmentError, match="remove it to change it"):
            stackbus.ensure_bus(config, name, "coven")
    with Bus.open(where) as bus:
        assert bus.geometry == stackbus.SMALL_BUS
