"""alethia's unit and registry entry: after coven, its own keys only, no core dumps, limits."""

from __future__ import annotations

from pathlib import Path

from runa import registry
from runa.alethia.keysource import versions_in
from runa.gilgul import units

COMMITTED = Path(__file__).resolve().parents[2] / "systemd/runa-alethia.service"


def settings() -> dict[str, str]:
    text = units.render(registry.load())["runa-alethia.service"]
    assert text == COMMITTED.read_text()  # what is packaged is what the registry renders
    return dict(line.split("=", 1) for line in text.splitlines()
                if "=" in line and not line.startswith("#"))


def test_the_unit_starts_after_coven_with_limits_and_no_core_dumps() -> None:
    unit = settings()
    assert unit["ExecStart"] == "/usr/bin/runa daemon alethia" and unit["Type"] == "notify"
    assert "runa-coven.service" in unit["After"].split()
    assert unit["LimitCORE"] == "0" and unit["MemoryMax"] == "768M"
    assert unit["CPUQuota"] == "50%"
    assert unit["NoNewPrivileges"] == "yes" and unit["PrivateNetwork"] == "yes"


def test_the_registry_lets_alethia_read_its_own_keys_only() -> None:
    entry = registry.load().get("alethia")
    assert entry.after == ("splinter", "coven")
    assert entry.may_read("alethia.memory_key.v1") and entry.may_read("alethia.signing_key")
    assert not entry.may_read("api.token")


def test_the_memory_key_versions_are_the_ones_coven_lists() -> None:
    listed = [{"name": "alethia.memory_key.v2"}, {"name": "alethia.signing_key"},
              {"name": "alethia.memory_key.v1"}, {"name": "alethia.memory_key.vx"},
              {"name": "alethia.memory_key.v10"}]
    assert versions_in(listed) == [1, 2, 10]
    assert versions_in([]) == []
