"""Find a model by name or path and check it before anything loads it.

Search order is the caller's list of directories (for a personal stack:
``~/.local/share/runa/models`` then ``/usr/share/runa/models``, see
``runa.paths``); the first match wins, so a person's own copy overrides the
packaged one.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from runa.models.catalog import lookup
from runa.models.errors import ModelNotFoundError
from runa.models.gguf_info import ModelInfo, read_model_info

NOT_FOUND_HINT = (
    "Run `runa models setup` to install the default model, install the runa-model-default "
    "package, or pass a GGUF file with -m PATH."
)


def _is_explicit_path(name: str) -> bool:
    return os.sep in name or name.startswith("~")


def candidates(name: str, search_dirs: Sequence[Path]) -> list[Path]:
    """Every file ``name`` could mean, in search order.

    A name with a slash or ``~`` is a path and nothing else. ``x.gguf`` is tried in
    the current directory first, as llama.cpp's ``-m x.gguf`` would; then each
    directory is tried for the name, the name plus ``.gguf`` and, for a catalog
    name such as ``default``, the catalog's file name.
    """
    if _is_explicit_path(name):
        return [Path(name).expanduser()]
    names = [name] if name.endswith(".gguf") else [name, name + ".gguf"]
    known = lookup(name)
    if known is not None:
        names.append(known.filename)
    here = [Path(name)] if name.endswith(".gguf") else []
    return here + [Path(d) / n for d in search_dirs for n in names]


def resolve_model(name: str | Path, search_dirs: Sequence[Path]) -> ModelInfo:
    """Return the checked model ``name`` refers to.

    ``name`` is a path (anything with a slash, ``~`` or a ``.gguf`` suffix), a file
    name in one of ``search_dirs``, or a catalog name such as ``default``.
    Raises ModelNotFoundError listing where it looked, or CorruptModelError.
    """
    name = str(name)
    tried = candidates(name, search_dirs)
    for path in tried:
        if path.is_file():
            return read_model_info(path)
    searched = tried if _is_explicit_path(name) else [Path(d) for d in search_dirs]
    raise ModelNotFoundError(name, searched, NOT_FOUND_HINT)


def list_models(search_dirs: Sequence[Path]) -> list[Path]:
    """GGUF files in ``search_dirs``, earlier directories shadowing later same names."""
    seen: dict[str, Path] = {}
    for d in search_dirs:
        try:
            entries = sorted(Path(d).glob("*.gguf"))
        except OSError:
            continue
        for p in entries:
            seen.setdefault(p.name, p)
    return list(seen.values())
