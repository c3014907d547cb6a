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

from runa.config import Config
from runa.errors import ConfigError
from runa.models.catalog import lookup
from runa.models.errors import ModelError, ModelNotFoundError, NotAChatModelError
from runa.models.gguf_info import ModelInfo, not_a_chat_model, read_model_info
from runa.paths import Paths

#: Where the chat model is chosen. No flag is named here: only `runa up` and `runa daemon`
#: have -m, and these messages also reach commands that do not.
CHOOSE_CHAT_MODEL = (
    "set splinfer.model to a GGUF file (in ~/.config/runa/runa.toml, /etc/runa/runa.toml or "
    "the variable RUNA_SPLINFER_MODEL)"
)
NOT_FOUND_HINT = (
    "Run `runa models setup` to install the default model, install the runa-model-default "
    f"package, or {CHOOSE_CHAT_MODEL}."
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


def require_chat_model(info: ModelInfo) -> ModelInfo:
    """``info`` if it can chat, else NotAChatModelError naming the file and what it is."""
    what = not_a_chat_model(info)
    if what is not None:
        raise NotAChatModelError(info.path, what)
    return info


def configured_chat_model(config: Config, paths: Paths) -> ModelInfo:
    """The checked chat model ``splinfer.model`` names.

    Missing, damaged or not a chat model: a ConfigError naming the layer that chose
    it, the value and the problem; splinfer refuses to start with it and
    ``runa config check`` prints the same line.
    """
    name = config["splinfer.model"]
    try:
        return require_chat_model(resolve_model(name, paths.models))
    except ModelError as error:
        raise ConfigError(config.origin("splinfer.model"), "splinfer.model", name,
                          str(error)) from None


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
