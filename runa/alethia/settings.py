"""alethia's settings, the [alethia] section: the embedding model its search index reads
records with (docs/alethia-index.md); the store lives in ``<data>/alethia``, whether a
person's turns are written is ``[memory] record``. Its unit's limits, the
[components.alethia] table."""

from __future__ import annotations

from runa.config import Setting, in_range

SETTINGS: tuple[Setting, ...] = (
    Setting("alethia.embedding_model", str, "default",
            "The embedding model memory search reads records and queries with: a catalog "
            "name, a file in a models directory, or a path (another model's vectors are "
            "dropped and every record embedded again)."),
    Setting("alethia.threads", int, 1,
            "Threads for embedding (-1: one per usable CPU); one leaves the other cores to "
            "generation.", in_range(-1, 1024)),
)

#: The unit's limits: Python, PyNaCl and one page of records (at most 64 KiB of JSON) in
#: flight; the store keeps the entries of its days in memory, about 200 bytes a record.
#: Half a core: a chat turn is one encryption, one hash and a batched fsync.
RESOURCES = {"cpu_quota": "50%", "memory_max": "256M"}
