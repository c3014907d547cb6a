"""Test support that ships with Runa: the systemd harness and a tiny synthetic model."""
