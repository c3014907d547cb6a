"""Policy sets: what to do, per category and weight, when a motif matches.

One YAML file per set, ``sets/<name>.yaml`` (docs/policy.md, "Policy sets")::

    description: The everyday policy.
    fail: open                 # open | closed: when the semantic tier is down
    refusal: I can't help with that.
    mask: "[…]"                # the default replacement text of a mask
    actions:
      default: {light: allow, medium: flag, heavy: block}    # the fallback row
      suicide_self_harm: whisper                              # one action for every weight
      hate: {heavy: block}                                    # other weights: the default row
    whisper:
      default: A note from the policy.
      suicide_self_harm: If you are thinking about ending your life, …

Layered as the matrix is: an administrator's set replaces the packaged set of the same name;
a user's set may only add a name (a user file reusing one is refused, so the lock holds).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import yaml

from runa.policy import files
from runa.policy.files import Layer, PolicyFileError, line
from runa.policy.taxonomy import CATEGORIES, WEIGHTS, Action, Weight, choices

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_FIELDS = ("description", "fail", "refusal", "mask", "actions", "whisper")
Cell = tuple[str, Weight]


class PolicySetError(PolicyFileError):
    """A policy set file cannot be used: the file, line and field."""


@dataclass(frozen=True)
class PolicySet:
    """One policy set: an action for every (category, weight), and its texts."""

    name: str
    description: str
    actions: Mapping[Cell, Action]
    refusal: str
    whispers: Mapping[str, str]
    mask: str
    fail: str  # open | closed
    source: Path

    def action(self, category: str, weight: Weight) -> Action:
        return self.actions[(category, weight)]

    def whisper(self, category: str) -> str:
        """The note a whisper adds to the next turn for ``category``."""
        return self.whispers.get(category) or self.whispers.get("default", "")

    @property
    def passes_everything(self) -> bool:
        """Every cell allows: a gate under this set has nothing to do."""
        return all(action is Action.ALLOW for action in self.actions.values())


def parse_set(path: Path, text: str | None = None) -> PolicySet:
    """The set of one file (named by the file); PolicySetError names file, line and field."""
    name = path.stem
    if not NAME.match(name):
        raise PolicySetError(path, None, None, f"{name!r} is not a policy set name: use "
                             "letters, digits, '_', '.', '-'")
    try:
        root = files.compose(path, text)
        if root is None:
            raise PolicySetError(path, None, None, "is empty")
        values = {}
        for key, key_node, value_node in files.items(path, root, None):
            if key not in _FIELDS:
                raise PolicySetError(path, line(key_node), key, "is not a policy set field "
                                     f"(known: {', '.join(_FIELDS)})")
            values[key] = value_node
    except PolicySetError:
        raise
    except PolicyFileError as error:
        raise PolicySetError(error.path, error.line, error.field, error.problem) from None
    for required in ("description", "refusal", "actions"):
        if required not in values:
            raise PolicySetError(path, line(root), required, "is missing")
    fail = _text(path, values, "fail", "open")
    if fail not in ("open", "closed"):
        raise PolicySetError(path, line(values["fail"]), "fail",
                             f"{fail!r} is not open or closed")
    whispers = {}
    if "whisper" in values:
        for category, key_node, value_node in _items(path, values["whisper"], "whisper"):
            _check_category(path, key_node, "whisper", category)
            whispers[category] = _need_text(path, value_node, f"whisper.{category}")
    return PolicySet(
        name=name,
        description=_text(path, values, "description", "").strip(),
        actions=MappingProxyType(_actions(path, values["actions"])),
        refusal=_text(path, values, "refusal", "").strip(),
        whispers=MappingProxyType(whispers),
        mask=_text(path, values, "mask", "[…]"),
        fail=fail,
        source=path,
    )


def _items(path: Path, node: yaml.Node, field: str) -> list[tuple[str, yaml.Node, yaml.Node]]:
    try:
        return list(files.items(path, node, field))
    except PolicySetError:
        raise
    except PolicyFileError as error:
        raise PolicySetError(error.path, error.line, error.field, error.problem) from None


def _need_text(path: Path, node: yaml.Node, name: str) -> str:
    try:
        return files.text(path, node, name)
    except PolicyFileError as error:
        raise PolicySetError(error.path, error.line, error.field, error.problem) from None


def _text(path: Path, values: Mapping[str, yaml.Node], name: str, default: str) -> str:
    return _need_text(path, values[name], name) if name in values else default


def _check_category(path: Path, node: yaml.Node, field: str, category: str) -> None:
    if category != "default" and category not in CATEGORIES:
        raise PolicySetError(path, line(node), field, f"{category!r} is not a category or "
                             f"'default' (known: {', '.join(CATEGORIES)})")


def _action(path: Path, node: yaml.Node, field: str) -> Action:
    value = _need_text(path, node, field)
    try:
        return Action(value)
    except ValueError:
        raise PolicySetError(path, line(node), field,
                             f"{value!r} is not {choices(Action)}") from None


def _row(path: Path, node: yaml.Node, field: str) -> dict[Weight, Action]:
    if isinstance(node, yaml.ScalarNode):
        action = _action(path, node, field)
        return {weight: action for weight in WEIGHTS}
    row = {}
    for weight_name, key_node, value_node in _items(path, node, field):
        try:
            weight = Weight(weight_name)
        except ValueError:
            raise PolicySetError(path, line(key_node), field,
                                 f"{weight_name!r} is not {choices(Weight)}") from None
        row[weight] = _action(path, value_node, f"{field}.{weight_name}")
    return row


def _actions(path: Path, node: yaml.Node) -> dict[Cell, Action]:
    rows = {}
    for category, key_node, value_node in _items(path, node, "actions"):
        _check_category(path, key_node, "actions", category)
        rows[category] = _row(path, value_node, f"actions.{category}")
    default = rows.get("default", {})
    if set(default) != set(WEIGHTS):
        raise PolicySetError(path, line(node), "actions.default",
                             "must give an action for light, medium and heavy (the fallback)")
    return {(category, weight): rows.get(category, {}).get(weight, default[weight])
            for category in CATEGORIES for weight in WEIGHTS}


@dataclass
class _Loaded:
    signature: tuple = ("never",)
    sets: dict[str, PolicySet] = field(default_factory=dict)
    problems: dict[Path, PolicySetError] = field(default_factory=dict)


class SetLibrary:
    """Every policy set of a stack, layered; re-read when a file changes.

    A set whose file becomes malformed stays as it last read well (the problem is reported);
    one that never read well is a problem only. The administrator's layer may replace a
    packaged set; the user layer may only add sets: a user file named like a packaged or
    administrator's set is refused (else a user could undo the lock by rewriting its minimum).
    """

    def __init__(self, dirs: Sequence[Layer], logger: logging.Logger | None = None) -> None:
        self.dirs = list(dirs)
        self.log = logger or logging.getLogger(__name__)
        self._loaded = _Loaded()
        self._good: dict[Path, PolicySet] = {}

    def refresh(self) -> _Loaded:
        paths = files.yaml_files(self.dirs)
        stamp = files.signature(paths)
        if stamp == self._loaded.signature:
            return self._loaded
        loaded = _Loaded(stamp)
        owners = files.owners(self.dirs)
        protected: dict[str, Path] = {}  # set name -> the packaged or admin file defining it
        for path in paths:
            user = owners.get(path.parent) == "user"
            if user and path.stem in protected:
                error = PolicySetError(path, None, None, (
                    f"replaces the set {path.stem!r} of {protected[path.stem]}: a user's "
                    "policy files may add sets, not replace them; rename it"))
                loaded.problems[path] = error
                self.log.warning("policy set file not usable (%s)", error,
                                 extra={"RUNA_EVENT": "policy_set_error"})
                continue
            try:
                policy = parse_set(path)
            except PolicySetError as error:
                loaded.problems[path] = error
                kept = self._good.get(path)
                self.log.warning("policy set file not usable (%s)%s", error,
                                 "; its last good version stays" if kept else "",
                                 extra={"RUNA_EVENT": "policy_set_error"})
                if kept is None:
                    if not user:  # an admin's broken file still guards its name
                        protected[path.stem] = path
                    continue
                policy = kept
            else:
                self._good[path] = policy
            if not user:
                protected[policy.name] = path
            loaded.sets[policy.name] = policy
        self._loaded = loaded
        return loaded

    def sets(self) -> dict[str, PolicySet]:
        return dict(self.refresh().sets)

    def problems(self) -> dict[Path, PolicySetError]:
        """Every file that cannot be used now, by path (a good file of the same name in
        another layer does not hide it)."""
        return dict(self.refresh().problems)

    def problems_of(self, name: str) -> list[PolicySetError]:
        """The problems of the files that define set ``name``, lowest layer first."""
        return [error for path, error in self.refresh().problems.items() if path.stem == name]
