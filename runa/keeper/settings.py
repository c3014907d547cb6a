"""The bus keeper's settings, the [splinter] section (docs/protocol.md, Decay)."""

from __future__ import annotations

from runa.config import Setting, in_range

SETTINGS: tuple[Setting, ...] = (
    Setting("splinter.reap_interval_s", float, 1.0,
            "Seconds between the keeper's sweeps for channels of dead processes.",
            in_range(0.05, 60)),
    Setting("splinter.decay_interval_s", float, 0.5,
            "Seconds between the keeper's decay sweeps (expired keys go within TTL + this).",
            in_range(0.05, 60)),
    Setting("splinter.idle_expiry_s", float, 0.0,
            "Remove ephemeral keys neither read nor written for this long (0: never).",
            in_range(0, 10**8)),
    Setting("splinter.promote_reads", int, 100,
            "Reads of a key since its last promote event that trigger the next one.",
            in_range(1, 1 << 40)),
    Setting("splinter.promote_cooldown_s", float, 600.0,
            "A key gets at most one promote event per this many seconds.", in_range(0, 10**8)),
)
