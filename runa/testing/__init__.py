"""Test support that ships with Runa: the systemd harness, a tiny synthetic model, a fake clock."""

from __future__ import annotations

from typing import TYPE_CHECKING

from runa.surface import lazy

if TYPE_CHECKING:
    from runa.testing.clock import FakeClock
    from runa.testing.tiny_gguf import IM_END_ID, IM_START_ID, write_tiny_gguf
    from runa.testing.usermanager import UserManager

__all__ = ["IM_END_ID", "IM_START_ID", "FakeClock", "UserManager", "write_tiny_gguf"]
if not TYPE_CHECKING:  # mypy reads the imports above; an unknown name stays an error
    __getattr__ = lazy(__name__, {
        "clock": ("FakeClock",),
        "tiny_gguf": ("IM_END_ID", "IM_START_ID", "write_tiny_gguf"),
        "usermanager": ("UserManager",),
    })
