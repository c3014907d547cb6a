"""Where things are in the store's directory, and reading its description."""

from __future__ import annotations

import json
from pathlib import Path

from runa.alethia.errors import StoreError

META = "alethia.json"
DAYS = "days"
#: The search index's files (runa.alethia.recall): the vectors' data key, wrapped as a day's
#: is (its "day" is ``vectors``); the sealed vectors; each row's record id and hash; the
#: embedding model they were made with.
VECTORS_KEY = "vectors.key"
VECTORS = "vectors.bin"
ROWS = "vectors.rows"
VECTORS_META = "vectors.json"


def read_public_key(root: Path) -> bytes | None:
    try:
        meta = json.loads((root / META).read_text())
        return bytes.fromhex(meta["public_key"])
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError):
        raise StoreError(f"{root / META}: not an alethia store's description") from None


def day_names(root: Path) -> list[str]:
    return sorted(path.stem for path in (root / DAYS).glob("*.log"))


def old(root: Path) -> Path:
    """Where ``restore`` keeps the store it replaced, until the restored one opens."""
    return root.with_name(f".{root.name}.old")
