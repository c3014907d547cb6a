"""YAML front matter: the one reader for personas and tieto's documents.

The rules, the same for every file that may carry front matter:

* The front matter opens with a first line of ``---`` and closes with the next line of ``---``
  or ``...`` (spaces or tabs after either are allowed). A file whose first line is anything
  else has no front matter: all of it is body. An opening line without a closing one is an
  error.
* Between them is YAML, read with PyYAML's safe loader: either nothing (only blank lines or
  comments: no keys) or a mapping of ``key: value`` lines. A list or a lone value is an error.
* Keys are strings, each given once: ``1:`` or ``true:`` as a key, or a key written twice, is
  an error (YAML merge keys, ``<<: *anchor``, are allowed).
* Values are whatever YAML makes of them (numbers, dates, lists …); what a value must be is
  for the caller to say (a persona's ``temp``, a topic's declared key).

Every error is a FrontMatterError naming the file and the line of the file (not of the YAML
snippet), so a person can jump straight to it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from runa.errors import RunaError

_OPEN = re.compile(r"^---[ \t]*$")
_CLOSE = re.compile(r"^(---|\.\.\.)[ \t]*$")
_MERGE_TAG = "tag:yaml.org,2002:merge"
_STR_TAG = "tag:yaml.org,2002:str"
_NULL_TAG = "tag:yaml.org,2002:null"


class FrontMatterError(RunaError):
    """Front matter that is unclosed, not YAML, not a mapping, or has a bad or repeated key."""

    exit_code = 65  # EX_DATAERR

    def __init__(self, path: Path | str, line: int, problem: str) -> None:
        self.path = str(path)
        self.line = line
        self.problem = problem
        super().__init__(f"{self.path}:{line}: {problem}")


@dataclass(frozen=True)
class Document:
    """A file split into its front matter and its body."""

    meta: dict[str, Any]
    """The front matter's keys and values, in the file's order; empty without front matter."""
    body: str
    body_line: int
    """1-based line of the file where ``body`` starts."""
    key_lines: dict[str, int] = field(default_factory=dict)
    """1-based line of each key in ``meta`` (of ``<<`` for a key it merged in), for the
    caller's own error messages."""


def split(text: str, path: Path | str) -> Document:
    """Split ``text`` (the whole file) into front matter and body.

    Raises FrontMatterError naming ``path`` and the line when a rule in the module's
    docstring is broken.
    """
    lines = text.splitlines(keepends=True)
    if not lines or not _OPEN.match(lines[0].rstrip("\r\n")):
        return Document({}, text, 1)
    for i in range(1, len(lines)):
        if _CLOSE.match(lines[i].rstrip("\r\n")):
            meta, key_lines = _load("".join(lines[1:i]), path)
            return Document(meta, "".join(lines[i + 1 :]), i + 2, key_lines)
    raise FrontMatterError(path, 1, "front matter opened with '---' has no closing '---' line")


_FIRST_LINE = 2
"""The file's line of the YAML's first line: the one after ``---``."""


def _load(yaml_text: str, path: Path | str) -> tuple[dict[str, Any], dict[str, int]]:
    """(mapping, line of each key) of the YAML between the fences."""
    loader = yaml.SafeLoader(yaml_text)
    try:
        node = loader.get_single_node()
        key_lines, merge_line = _key_lines(node, path)  # before merge keys are flattened
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as error:
        raise FrontMatterError(path, _error_line(error, yaml_text),
                               f"front matter is not valid YAML: {_problem(error)}") from None
    except yaml.YAMLError as error:
        raise FrontMatterError(path, _FIRST_LINE,
                               f"front matter is not valid YAML: {error}") from None
    finally:
        loader.dispose()
    if data is None:
        return {}, {}
    if not isinstance(data, dict) or not all(isinstance(key, str) for key in data):
        # not all str: a merge key brought in a key that is not a word
        raise FrontMatterError(path, _FIRST_LINE, "front matter keys must be words")
    return data, {key: key_lines.get(key, merge_line) for key in data}


def _key_lines(node: yaml.Node | None, path: Path | str) -> tuple[dict[str, int], int]:
    """(the file's line of each key, the line of a ``<<`` merge key); FrontMatterError for a
    key that is not a word or repeats."""
    if node is None or (isinstance(node, yaml.ScalarNode) and node.tag == _NULL_TAG):
        return {}, _FIRST_LINE
    if not isinstance(node, yaml.MappingNode):
        kind = "list" if isinstance(node, yaml.SequenceNode) else "single value"
        raise FrontMatterError(path, _FIRST_LINE + node.start_mark.line,
                               f"front matter must be 'key: value' lines, not a {kind}")
    key_lines: dict[str, int] = {}
    merge_line = _FIRST_LINE
    for key_node, _ in node.value:
        line = _FIRST_LINE + key_node.start_mark.line
        if key_node.tag == _MERGE_TAG:
            merge_line = line
            continue
        if not isinstance(key_node, yaml.ScalarNode) or key_node.tag != _STR_TAG:
            raise FrontMatterError(path, line, "front matter keys must be words")
        key = key_node.value
        if key in key_lines:
            raise FrontMatterError(path, line, f"{key} is already set on line {key_lines[key]}")
        key_lines[key] = line
    return key_lines, merge_line


def _error_line(error: yaml.MarkedYAMLError, yaml_text: str) -> int:
    """The file's line of a YAML error: where the broken construct starts when the parser
    only noticed it at the end (an unclosed ``[``), else where it noticed."""
    mark = error.problem_mark or error.context_mark
    if mark is not None and mark.line >= yaml_text.count("\n") and error.context_mark:
        mark = error.context_mark
    return _FIRST_LINE + mark.line if mark is not None else _FIRST_LINE


def _problem(error: yaml.MarkedYAMLError) -> str:
    return " ".join(p for p in (error.context, error.problem) if p) or str(error)
