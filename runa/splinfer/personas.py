"""Personas: a system prompt and default sampling parameters, in one Markdown file each.

``<name>.md`` holds YAML front matter (runa.frontmatter's rules), then the system prompt::

    ---
    description: A calm, plain, honest assistant.
    temp: 0.7
    repeat_penalty: 1.1
    ---
    You are Runa, ...

Front matter keys are llama.cpp's sampling options (``temp``, ``top_k``,
``mirostat_ent`` …; upstream spellings such as ``temperature`` or
``mirostat_tau`` work with a warning), plus ``description`` and ``tags``.
Upstream Runa's ``persona`` (the name; the file name decides) and ``access``
(not enforced: the trust boundary is the uid, DESIGN §6) are accepted with a
warning. Options fixed when the model loads (``ctx_size`` …) are an error, as
is anything else unknown: every error names the file and the line.

Layers, later wins, a name in a later layer replaces the same name below it
(DESIGN §4): the packaged defaults (``runa/data/personas``) <
``/usr/share/runa/personas`` < ``/etc/runa/personas`` < ``~/.config/runa/personas``
(the personal stack only). The library re-reads the directories when a file in
them changes, so a new or edited persona works without a restart.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

from runa import frontmatter
from runa.config import Config
from runa.errors import ConfigError
from runa.paths import Paths
from runa.policy.files import signature as files_signature
from runa.protocol.params import (
    ContextParams,
    ParamError,
    SamplingParams,
    canonical_name,
    parse_params,
)
from runa.splinfer.errors import InferenceError

PACKAGED = Path(str(resources.files("runa"))) / "data" / "personas"
SYSTEM = Path("/usr/share/runa/personas")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_CONTEXT_OPTIONS = set(ContextParams.__dataclass_fields__)


class PersonaError(InferenceError):
    """A persona file cannot be used; the message names the file and the line."""

    exit_code = 65  # EX_DATAERR

    def __init__(self, path: Path, line: int | None, problem: str) -> None:
        self.path = path
        self.line = line
        self.problem = problem
        where = f"{path}:{line}" if line else str(path)
        super().__init__(f"{where}: {problem}")


class UnknownPersonaError(InferenceError):
    """No persona of that name; the message lists the known ones."""

    exit_code = 65

    def __init__(self, name: str, known: Sequence[str]) -> None:
        self.name = name
        self.known = list(known)
        listed = ", ".join(self.known) if self.known else "none"
        super().__init__(f"unknown persona {name!r}; known personas: {listed}")


@dataclass(frozen=True)
class Persona:
    name: str
    description: str
    system: str
    """The system prompt (the file's body); empty means the model's own default."""
    params: Mapping[str, Any]
    """Sampling options under llama.cpp's names, already checked."""
    source: Path
    tags: tuple[str, ...] = ()
    policy: str = ""
    """The policy set this persona's conversations run under ("" : policy.default)."""
    policy_line: int | None = None

    def sampling(self, base: SamplingParams | None = None) -> SamplingParams:
        """``base`` (llama.cpp's defaults) with this persona's options on top."""
        return parse_params(self.params, sampling=base, source=str(self.source))[1]


def parse_persona(path: Path, text: str, warn: Callable[[str], None],
                  policies: Callable[[], Collection[str]] | None = None) -> Persona:
    """Read one persona file's text; PersonaError names the file and line of any problem
    (``policies`` gives the known policy set names, for the ``policy:`` key)."""
    name = path.stem
    if not NAME.match(name):
        raise PersonaError(path, None, f"{name!r} is not a persona name: use letters, "
                           "digits, '_', '.', '-' (at most 64), starting with a letter or digit")
    try:
        doc = frontmatter.split(text, path)
    except frontmatter.FrontMatterError as error:
        raise PersonaError(path, error.line, error.problem) from None
    info: dict[str, Any] = {"description": "", "tags": (), "policy": "", "policy_line": None}
    params: dict[str, Any] = {}
    param_lines: dict[str, int] = {}
    for key, value in doc.meta.items():
        line = doc.key_lines[key]
        where = f"{path}:{line}"
        if key == "description":
            if not isinstance(value, str):
                raise PersonaError(path, line, "description must be text")
            info["description"] = value.strip()
        elif key == "tags":
            if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
                raise PersonaError(path, line, "tags must be a list of words")
            info["tags"] = tuple(value)
        elif key == "policy":
            if isinstance(value, bool):  # YAML reads a bare off/no as false
                raise PersonaError(path, line, "policy must be a policy set's name; quote "
                                               "it (policy: \"off\")")
            if not isinstance(value, str) or not value:
                raise PersonaError(path, line, "policy must be a policy set's name")
            known = sorted(policies()) if policies is not None else None
            if known is not None and value not in known:
                raise PersonaError(path, line, f"policy {value!r} is not a policy set; known "
                                               f"sets: {', '.join(known) or 'none'}")
            info["policy"], info["policy_line"] = value, line
        elif key in ("persona", "name"):
            if value != name:
                warn(f"{where}: {key} {value!r} is ignored; the file name makes this persona "
                     f"{name!r}")
        elif key == "access":
            warn(f"{where}: access is not enforced: everyone who can use this stack can use "
                 "every persona")
        else:
            option, checked = _param(path, line, key, value, warn)
            if option in params:
                raise PersonaError(path, line, f"{option} is already set on line "
                                               f"{param_lines[option]} (as another spelling)")
            params[option], param_lines[option] = checked, line
    return Persona(name=name, description=info["description"], system=doc.body.strip(),
                   params=MappingProxyType(params), source=path, tags=info["tags"],
                   policy=info["policy"], policy_line=info["policy_line"])


def _param(path: Path, line: int, key: str, value: Any,
           warn: Callable[[str], None]) -> tuple[str, Any]:
    """(llama.cpp name, value) for one option line; PersonaError if it cannot be used."""
    where = f"{path}:{line}"
    try:
        name = canonical_name(key, source=where, warn=warn)
    except ParamError as error:
        raise PersonaError(path, line, error.args[0].removeprefix(f"{where}: ")) from None
    if name in _CONTEXT_OPTIONS:
        raise PersonaError(path, line, f"{name} is fixed when the model loads, not per persona; "
                                       "set it in the [splinfer] table of runa.toml")
    try:
        parse_params({name: value}, source=where)
    except ParamError as error:
        raise PersonaError(path, line, error.args[0].removeprefix(f"{where}: ")) from None
    return name, value


@dataclass(frozen=True)
class PersonaDir:
    layer: str
    path: Path


def persona_dirs(paths: Paths, *, packaged: Path = PACKAGED,
                 system: Path = SYSTEM) -> list[PersonaDir]:
    """The persona layers of a stack, lowest first (DESIGN §4)."""
    dirs = [PersonaDir("packaged", packaged), PersonaDir("system", system),
            PersonaDir("admin", paths.sysconfdir / "personas")]
    if paths.user_config is not None:
        dirs.append(PersonaDir("user", paths.user_config / "personas"))
    return dirs


@dataclass
class _Loaded:
    signature: tuple = ()
    personas: dict[str, Persona] = field(default_factory=dict)
    problems: dict[str, PersonaError] = field(default_factory=dict)


class PersonaLibrary:
    """Every persona of a stack, layered; re-read when a file changes."""

    def __init__(self, dirs: Sequence[PersonaDir], logger: logging.Logger | None = None,
                 policies: Callable[[], Collection[str]] | None = None) -> None:
        self.dirs = list(dirs)
        self.policies = policies  # the known policy sets' names, for ``policy:``
        self.log = logger or logging.getLogger(__name__)
        self._loaded = _Loaded(signature=("never",))

    def _files(self) -> list[Path]:
        """Persona files, lowest layer first; within a layer in name order."""
        found: list[Path] = []
        for directory in self.dirs:
            try:
                entries = sorted(os.scandir(directory.path), key=lambda e: e.name)
            except OSError:
                continue
            found.extend(Path(e.path) for e in entries
                         if e.name.endswith(".md") and not e.name.startswith(".")
                         and e.is_file())
        return found

    def refresh(self) -> None:
        """Re-read the layers if any persona file appeared, changed or went away."""
        files = self._files()
        signature = files_signature(files)
        if signature == self._loaded.signature:
            return
        loaded = _Loaded(signature=signature)
        for path in files:
            name = path.stem
            try:
                text = path.read_text(encoding="utf-8")
                persona = parse_persona(path, text, self.log.warning, self.policies)
            except UnicodeDecodeError:
                loaded.problems[name] = PersonaError(path, None, "is not UTF-8 text")
                loaded.personas.pop(name, None)
                continue
            except OSError as error:
                loaded.problems[name] = PersonaError(path, None,
                                                     f"cannot be read: {error.strerror}")
                loaded.personas.pop(name, None)
                continue
            except PersonaError as error:
                loaded.problems[name] = error
                loaded.personas.pop(name, None)
                continue
            loaded.personas[name] = persona
            loaded.problems.pop(name, None)
        for problem in loaded.problems.values():
            self.log.warning("persona not usable: %s", problem,
                             extra={"RUNA_EVENT": "persona_error"})
        self._loaded = loaded

    def get(self, name: str) -> Persona:
        """The persona ``name``; UnknownPersonaError lists the known ones, PersonaError says
        what is wrong with its file."""
        self.refresh()
        if name in self._loaded.problems:
            raise self._loaded.problems[name]
        try:
            return self._loaded.personas[name]
        except KeyError:
            raise UnknownPersonaError(name, sorted(self._loaded.personas)) from None

    def all(self) -> list[Persona]:
        self.refresh()
        return [self._loaded.personas[name] for name in sorted(self._loaded.personas)]

    def problems(self) -> dict[str, PersonaError]:
        self.refresh()
        return dict(self._loaded.problems)


def configured_persona(config: Config, library: PersonaLibrary) -> Persona:
    """The persona ``splinfer.persona`` names; ConfigError naming the layer if it is unusable.

    splinfer refuses to start with it, and ``runa config check`` prints the same line.
    """
    name = config["splinfer.persona"]
    try:
        return library.get(name)
    except (UnknownPersonaError, PersonaError) as error:
        raise ConfigError(config.origin("splinfer.persona"), "splinfer.persona", name,
                          str(error)) from None
