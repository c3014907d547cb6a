"""coven's unit: room for Argon2id, no core dumps, and a vault directory it can write."""

from __future__ import annotations

from pathlib import Path

from runa import registry
from runa.coven.fileformat import SHIPPED_ARGON2
from runa.gilgul import units

COMMITTED = Path(__file__).resolve().parents[2] / "systemd/runa-coven.service"


def settings() -> dict[str, str]:
    text = units.render(registry.load())["runa-coven.service"]
    assert text == COMMITTED.read_text()  # what is packaged is what the registry renders
    return dict(line.split("=", 1) for line in text.splitlines()
                if "=" in line and not line.startswith("#"))


def test_the_unit_leaves_room_for_argon2id_and_dumps_no_core() -> None:
    unit = settings()
    assert unit["ExecStart"] == "/usr/bin/runa daemon coven" and unit["Type"] == "notify"
    memory_max = int(unit["MemoryMax"].removesuffix("M")) << 20
    assert memory_max >= SHIPPED_ARGON2.memlimit + (100 << 20)  # 151 MiB measured at peak
    assert unit["LimitCORE"] == "0"


def test_the_sandbox_keeps_the_data_directory_writable() -> None:
    unit = settings()
    assert unit["ProtectSystem"] == "full"  # /usr, /boot, /etc read-only; not /home
    assert "ProtectHome" not in unit and "ReadOnlyPaths" not in unit
    assert unit["NoNewPrivileges"] == "yes" and unit["PrivateNetwork"] == "yes"
