"""Test support that ships with Runa: the systemd harness, a tiny synthetic model, a fake clock."""

from runa.testing.clock import FakeClock

__all__ = ["FakeClock"]
