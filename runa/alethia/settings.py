"""alethia's settings: none of its own yet (the store lives in ``<data>/alethia``; whether a
person's turns are written is ``[memory] record``, read by chat and shown in ``status``);
its unit's limits, the [components.alethia] table."""

from __future__ import annotations

from runa.config import Setting

SETTINGS: tuple[Setting, ...] = ()

#: The unit's limits: Python, PyNaCl and one page of records (at most 64 KiB of JSON) in
#: flight; the store keeps the entries of its days in memory, about 200 bytes a record.
#: Half a core: a chat turn is one encryption, one hash and a batched fsync.
RESOURCES = {"cpu_quota": "50%", "memory_max": "256M"}
