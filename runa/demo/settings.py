"""The demo daemon's settings, the [demo] section (there once the demo is registered)."""

from __future__ import annotations

from runa.config import Setting, in_range

SETTINGS: tuple[Setting, ...] = (
    Setting("demo.startup_delay_s", float, 0.0,
            "Seconds the demo daemon pretends to load before READY.", in_range(0, 600)),
    Setting("demo.tick_s", float, 1.0, "Seconds between the demo daemon's ticks.",
            in_range(0.01, 3600)),
    Setting("demo.heartbeat_stop_after_s", float, 0.0,
            "Test seam: stop writing demo:health after this many seconds, staying alive "
            "(0: never).", in_range(0, 86400)),
)
