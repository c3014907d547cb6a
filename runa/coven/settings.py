"""coven's settings: none of its own yet (the vault lives in ``<data>/coven``); its unit's
limits, the [components.coven] table."""

from __future__ import annotations

from runa.config import Setting

SETTINGS: tuple[Setting, ...] = ()

#: The unit's limits: an unlock runs Argon2id with the shipped 128 MiB (docs/coven.md
#: measures 151 MiB at its peak, Python and libsodium included), so 256M leaves room for a
#: vault being rewritten meanwhile; one core, which Argon2id uses whole while unlocking.
RESOURCES = {"cpu_quota": "100%", "memory_max": "256M"}
