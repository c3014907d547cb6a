"""Split a Markdown or text document into its YAML front matter and its body.

A document may open with a ``---`` line; everything up to the next ``---`` (or
``...``) line is YAML and must be a mapping. Errors carry the line number in
the file, not in the YAML snippet, so a person can jump straight to it.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from runa.tieto.errors import FrontMatterError

_OPEN = "---"
_CLOSE = ("---", "...")
_KEY_LINE = re.compile(r"""^["']?([^\s:"'#][^:"']*?)["']?\s*:(\s|$)""")


@dataclass(frozen=True)
class Document:
    meta: dict[str, Any]
    body: str
    body_line: int
    """1-based line of the file where ``body`` starts."""
    key_lines: dict[str, int] = field(default_factory=dict)
    """1-based line of each top-level front-matter key, for error messages."""


def split(text: str, path: str) -> Document:
    """Parse ``text`` (the whole file) into front matter and body.

    Raises FrontMatterError naming ``path`` and the line when the front matter is
    never closed, is not valid YAML, or is not a mapping of keys to values.
    """
    lines = text.splitlines(keepends=True)
    if not lines or lines[0].rstrip("\r\n").rstrip() != _OPEN:
        return Document({}, text, 1)
    for i in range(1, len(lines)):
        if lines[i].rstrip("\r\n").rstrip() in _CLOSE:
            yaml_text = "".join(lines[1:i])
            meta = _load(yaml_text, path)
            key_lines: dict[str, int] = {}
            for number, line in enumerate(lines[1:i], start=2):
                match = _KEY_LINE.match(line)
                if match and match.group(1) in meta:
                    key_lines.setdefault(match.group(1), number)
            return Document(meta, "".join(lines[i + 1 :]), i + 2, key_lines)
    raise FrontMatterError(path, 1, "front matter opened with '---' is never closed with '---'")


def _load(yaml_text: str, path: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(yaml_text)
    except yaml.YAMLError as e:
        # where the broken construct starts (an unclosed '[') beats where the parser noticed
        mark = getattr(e, "context_mark", None) or getattr(e, "problem_mark", None)
        line = mark.line + 2 if mark is not None else 1  # +1 for 1-based, +1 for '---'
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise FrontMatterError(path, line, f"front matter is not valid YAML: {problem}") \
            from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise FrontMatterError(
            path, 2, f"front matter must be 'key: value' lines, not a {type(data).__name__}"
        )
    return {str(k): _plain(v) for k, v in data.items()}


def _plain(value: Any) -> Any:
    """YAML values as JSON-able Python: dates become ISO strings, keys strings."""
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_plain(v) for v in value]
    return value
