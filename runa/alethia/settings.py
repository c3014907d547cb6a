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

#: The unit's limits (docs/alethia-index.md, "Memory"; measured by bench/alethia_start.py):
#: Python and the store's code about 40 MiB, the embedding model (MiniLM, f32) and its
#: llama.cpp context about 120 MiB, the index 56 bytes a record: 214 MiB at 4M records, and
#: as much again and a quarter while its arrays grow by a quarter (copied). 768M holds those
#: at 4M records. The store's own map of its records' offsets (about 170 bytes a record,
#: measured) is not in that sum: a store of more than about 2M records needs a larger one.
#: Half a core: a chat turn is one encryption, one hash, a batched fsync and an embedding.
RESOURCES = {"cpu_quota": "50%", "memory_max": "768M"}
