"""The policy's YAML files: reading them with line numbers, their layers, and their errors.

The matrix (``matrix.d``) and the policy sets (``sets``) are layered as personas are (DESIGN
§4), later wins: the packaged files (``runa/data/policy``) < ``<sysconfdir>/policy`` (the
administrator) < ``<user config>/policy`` (the personal stack only).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from runa.errors import RunaError
from runa.paths import Paths

PACKAGED = Path(str(resources.files("runa"))) / "data" / "policy"


class PolicyFileError(RunaError):
    """A policy file cannot be used; names the file, the line and the field."""

    exit_code = 65  # EX_DATAERR

    def __init__(self, path: Path | str, line: int | None, field: str | None,
                 problem: str) -> None:
        self.path = Path(path)
        self.line = line
        self.field = field
        self.problem = problem
        where = str(path)
        if line:
            where += f" line {line}"
        if field:
            where += f", field {field!r}"
        super().__init__(f"{where}: {problem}")


@dataclass(frozen=True)
class Layer:
    """One directory of policy files and who owns it."""

    name: str  # packaged, admin, user
    path: Path


def layers(paths: Paths, kind: str, *, packaged: Path = PACKAGED) -> list[Layer]:
    """The directories of ``kind`` (``matrix.d`` or ``sets``), lowest first."""
    found = [Layer("packaged", packaged / kind), Layer("admin", paths.sysconfdir / "policy" / kind)]
    if paths.user_config is not None:
        found.append(Layer("user", paths.user_config / "policy" / kind))
    return found


def owners(dirs: Sequence[Layer]) -> dict[Path, str]:
    """Each layer's directory and its owner's name (packaged, admin, user)."""
    return {layer.path: layer.name for layer in dirs}


def yaml_files(dirs: Sequence[Layer]) -> list[Path]:
    """The ``*.yaml`` files of every layer, lowest layer first, each layer in name order."""
    files: list[Path] = []
    for layer in dirs:
        try:
            entries = sorted(os.scandir(layer.path), key=lambda e: e.name)
        except OSError:
            continue
        files.extend(Path(e.path) for e in entries
                     if e.name.endswith(".yaml") and not e.name.startswith(".") and e.is_file())
    return files


def signature(files: Sequence[Path]) -> tuple[tuple[str, int, int], ...]:
    """What changes when a file is added, edited or removed (mtime and size)."""
    stamps = []
    for path in files:
        try:
            st = path.stat()
        except OSError:
            continue
        stamps.append((str(path), st.st_mtime_ns, st.st_size))
    return tuple(stamps)


def compose(path: Path, text: str | None = None) -> yaml.Node | None:
    """The YAML node tree of ``path`` (None when the file is empty); errors name the line."""
    try:
        if text is None:
            text = path.read_text(encoding="utf-8")
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except UnicodeDecodeError:
        raise PolicyFileError(path, None, None, "is not UTF-8 text") from None
    except OSError as error:
        raise PolicyFileError(path, None, None, f"cannot be read: {error.strerror}") from None
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line = mark.line + 1 if mark else None
        raise PolicyFileError(path, line, None,
                              f"not valid YAML: {error.problem or error.context}") from None
    except yaml.YAMLError as error:
        raise PolicyFileError(path, None, None, f"not valid YAML: {error}") from None


def line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


def plain(node: yaml.Node) -> Any:
    """The Python value of a node (YAML's safe types)."""
    return yaml.constructor.SafeConstructor().construct_document(node)


def items(path: Path, node: yaml.Node, field: str | None
          ) -> Iterator[tuple[str, yaml.Node, yaml.Node]]:
    """(key, key node, value node) of a mapping; PolicyFileError when it is not one."""
    if not isinstance(node, yaml.MappingNode):
        raise PolicyFileError(path, line(node), field, "must be a mapping of names to values")
    seen: dict[str, int] = {}
    for key_node, value_node in node.value:
        key = plain(key_node)
        if not isinstance(key, str):
            raise PolicyFileError(path, line(key_node), field, f"{key!r} is not a name")
        if key in seen:
            raise PolicyFileError(path, line(key_node), key,
                                  f"is given twice (first on line {seen[key]})")
        seen[key] = line(key_node)
        yield key, key_node, value_node


def text(path: Path, node: yaml.Node, field: str) -> str:
    """A scalar string field."""
    value = plain(node) if isinstance(node, yaml.ScalarNode) else None
    if isinstance(value, bool):
        raise PolicyFileError(path, line(node), field, f"{node.value!r} reads as "
                              f"{str(value).lower()} in YAML: put the text in quotes")
    if not isinstance(value, str):
        raise PolicyFileError(path, line(node), field, "must be text")
    return value
