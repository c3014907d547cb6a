"""A package's public names, imported from their modules on first use.

Each package's ``__init__`` lists in ``__all__`` what other packages may use, and other
packages import those names from the package (``from runa.tieto import open_tieto``), never
from its modules, which are internal. Importing every public name in ``__init__`` would
make ``runa chat`` load numpy and the index to show a prompt; so ``__init__`` hands the
names to ``lazy`` instead, and each is imported when first used (PEP 562).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any


def lazy(package: str, exports: Mapping[str, Sequence[str]]) -> Callable[[str], Any]:
    """The module ``__getattr__`` of ``package``: ``exports`` maps each of its modules (by
    name within the package) to the names it exports."""
    where = {name: module for module, names in exports.items() for name in names}

    def __getattr__(name: str) -> Any:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{module}"), name)
        setattr(sys.modules[package], name, value)  # found directly from now on
        return value

    return __getattr__
