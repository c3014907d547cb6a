"""Runa's own supervisor, for machines without a systemd user manager.

It runs components as children, speaks the sd_notify protocol to them through its
own ``NOTIFY_SOCKET`` and enforces their watchdog, so a component cannot tell
whether systemd or this supervisor started it.
"""
