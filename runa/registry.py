"""The component registry: which components exist, their order, their sandbox (DESIGN §4, §5, §7).

A component is declared here once: its entry names the daemon factory ``runa daemon`` runs and
the module holding its settings schema; the units, the supervisor's stack and the configuration's
sections are derived from the entries (``runa.components`` imports what they name). This module
imports no component, so every layer may read the registry.

The packaged registry is ``runa/data/components.toml``; ``<sysconfdir>/components.d/*.toml``
(``/etc/runa/components.d``) override it in name order. Every value is checked as its file is
read, so an error names that file, the dotted key and the value; cross-references (``after``)
are checked once everything is merged and name the file that set them. A registry either loads
completely or raises: nothing downstream ever sees half of one.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from runa.errors import ConfigError

ROLES = ("component", "manager")

# Sandboxing directives of systemd.exec(5)/systemd.resource-control(5) a registry may set.
# An allowlist, because `systemd-analyze verify` only warns about a misspelt directive.
HARDENING_DIRECTIVES = frozenset({
    "NoNewPrivileges", "ProtectSystem", "ProtectHome", "PrivateTmp", "PrivateDevices",
    "PrivateNetwork", "PrivateIPC", "PrivateUsers", "PrivateMounts", "ProtectKernelTunables",
    "ProtectKernelModules", "ProtectKernelLogs", "ProtectControlGroups", "ProtectClock",
    "ProtectHostname", "ProtectProc", "ProcSubset", "RestrictNamespaces", "RestrictRealtime",
    "RestrictSUIDSGID", "RestrictAddressFamilies", "RestrictFileSystems", "LockPersonality",
    "MemoryDenyWriteExecute", "SystemCallArchitectures", "SystemCallFilter",
    "SystemCallErrorNumber", "CapabilityBoundingSet", "AmbientCapabilities", "UMask",
    "KeyringMode", "RemoveIPC", "ReadOnlyPaths", "ReadWritePaths", "InaccessiblePaths",
    "TemporaryFileSystem", "DevicePolicy", "DeviceAllow", "IPAddressDeny", "IPAddressAllow",
    "NoExecPaths", "ExecPaths", "LimitCORE",
})
# Directives whose value is a list of paths: none may cover /dev/shm, where the buses live.
_PATH_DIRECTIVES = frozenset({"ReadOnlyPaths", "InaccessiblePaths", "TemporaryFileSystem",
                              "NoExecPaths"})
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_MODULE = r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*"
_FACTORY = re.compile(rf"^{_MODULE}:[A-Za-z_][A-Za-z0-9_]*$")
_SETTINGS = re.compile(rf"^{_MODULE}$")
_BUS_DIR = Path("/dev/shm")
# A secret's name as coven takes it (runa.coven.secret), optionally a prefix ending in "*".
_SECRET_PATTERN = re.compile(r"^[a-z][a-z0-9._-]{0,63}\*?$")

HardeningValue = str | bool | int


class RegistryError(ConfigError):
    """The registry cannot be used; names the file, the dotted key and the bad value."""


@dataclass(frozen=True)
class Component:
    """One component as the units and gilgul see it."""

    name: str
    description: str
    factory: str = ""  # "module:function" that builds the daemon of `runa daemon NAME`
    settings: str = ""  # the module whose SETTINGS are the [<name>] section ("": none)
    role: str = "component"
    enabled: bool = True
    after: tuple[str, ...] = ()
    timeout_start_sec: int = 30
    timeout_stop_sec: int = 15
    documentation: tuple[str, ...] = ()
    hardening: tuple[tuple[str, HardeningValue], ...] = ()
    secrets: tuple[str, ...] = ()  # what gilgul's broker lets it read: names, or "prefix*"
    # The configuration key of a TCP port its manager listens on, on loopback, and hands over
    # by socket activation (its .socket unit; the supervisor alike); "": none.
    listen: str = ""

    def may_read(self, secret: str) -> bool:
        """Whether ``secrets`` names ``secret``: exactly, or by a prefix ending in ``*``."""
        return any(secret.startswith(pattern[:-1]) if pattern.endswith("*")
                   else secret == pattern for pattern in self.secrets)

    @property
    def unit(self) -> str:
        return unit_name(self.name)

    @property
    def is_manager(self) -> bool:
        return self.role == "manager"


@dataclass(frozen=True)
class Registry:
    """Every component, in start order, and the files they came from."""

    components: tuple[Component, ...]
    sources: tuple[str, ...] = field(default=())
    origins: Mapping[str, str] = field(default_factory=dict, compare=False, hash=False)

    def __iter__(self) -> Iterator[Component]:
        return iter(self.components)

    def get(self, name: str) -> Component:
        for component in self.components:
            if component.name == name:
                return component
        raise KeyError(name)

    @property
    def enabled(self) -> tuple[Component, ...]:
        """What ``runa.target`` wants."""
        return tuple(c for c in self.components if c.enabled)

    @property
    def watched(self) -> tuple[Component, ...]:
        """What gilgul keeps running: every enabled component but gilgul itself."""
        return tuple(c for c in self.components if c.enabled and not c.is_manager)

    @property
    def manager(self) -> Component | None:
        return next((c for c in self.components if c.is_manager), None)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.components)

    def origin(self, dotted: str) -> str:
        """The file that set ``dotted`` (e.g. ``components.tieto.settings``)."""
        return self.origins.get(dotted) or self.origins.get(dotted.rsplit(".", 1)[0], "registry")


def unit_name(component: str) -> str:
    return f"runa-{component}.service"


def packaged_path() -> Path:
    return Path(str(resources.files("runa") / "data" / "components.toml"))


def override_files(sysconfdir: Path) -> list[Path]:
    directory = sysconfdir / "components.d"
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.glob("*.toml") if p.is_file())


def load(sysconfdir: Path | None = None, packaged: Path | None = None) -> Registry:
    """The packaged registry with the overrides of ``sysconfdir`` (None: packaged only)."""
    files = [packaged or packaged_path()]
    if sysconfdir is not None:
        files += override_files(sysconfdir)
    return load_files(files)


def load_files(files: list[Path]) -> Registry:
    """Merge ``files`` in order, validating each as it is read."""
    merged = _Merged()
    for path in files:
        merged.add(str(path), _read(path))
    return merged.build(tuple(str(p) for p in files))


def _read(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as error:
        raise RegistryError(str(path), "(file)", "", f"not valid TOML: {error}") from error
    except OSError as error:
        raise RegistryError(str(path), "(file)", "", f"cannot be read: {error.strerror}") \
            from error


class _Merged:
    """Raw tables merged file by file, remembering which file set each key."""

    def __init__(self) -> None:
        self.documentation: tuple[str, ...] = ()
        self.hardening: dict[str, HardeningValue] = {}
        self.components: dict[str, dict[str, Any]] = {}
        self.origin: dict[str, str] = {}

    def add(self, source: str, table: Mapping[str, Any]) -> None:
        for key, value in table.items():
            if key == "defaults":
                self._defaults(source, _table(source, key, value))
            elif key == "components":
                for name, body in _table(source, key, value).items():
                    self._component(source, name, _table(source, f"components.{name}", body))
            else:
                raise RegistryError(source, key, value,
                                    "unknown key (a registry has [defaults] and [components.*])")

    def _defaults(self, source: str, table: Mapping[str, Any]) -> None:
        for key, value in table.items():
            dotted = f"defaults.{key}"
            if key == "documentation":
                self.documentation = _documentation(source, dotted, value)
            elif key == "hardening":
                self.hardening.update(_hardening(source, dotted, value))
            else:
                raise RegistryError(source, dotted, value,
                                    "unknown key (defaults are documentation and hardening)")
            self.origin[dotted] = source

    def _component(self, source: str, name: str, table: Mapping[str, Any]) -> None:
        prefix = f"components.{name}"
        if not _NAME.match(name):
            raise RegistryError(source, prefix, name,
                                "a component name is lower-case letters, digits and _")
        entry = self.components.setdefault(name, {"hardening": {}})
        for key, value in table.items():
            dotted = f"{prefix}.{key}"
            if key == "hardening":
                entry["hardening"].update(_hardening(source, dotted, value))
            else:
                entry[key] = _component_value(source, dotted, key, value)
            self.origin[dotted] = source
        self.origin.setdefault(prefix, source)

    def build(self, sources: tuple[str, ...]) -> Registry:
        components = []
        for name, entry in self.components.items():
            prefix = f"components.{name}"
            if "description" not in entry:
                raise RegistryError(self.origin[prefix], f"{prefix}.description", "",
                                    "missing: every component needs a description")
            if "factory" not in entry:
                raise RegistryError(self.origin[prefix], f"{prefix}.factory", "",
                                    "missing: every component names the 'module:function' "
                                    "that builds its daemon")
            for other in entry.get("after", ()):
                if other not in self.components:
                    raise RegistryError(self.origin[f"{prefix}.after"], f"{prefix}.after",
                                        other, "names no component of the registry")
            hardening = {**self.hardening, **entry.pop("hardening")}
            documentation = entry.pop("documentation", self.documentation)
            checked: dict[str, Any] = {  # each value checked by _component_value
                k: tuple(v) if isinstance(v, list) else v for k, v in entry.items()}
            components.append(Component(
                name=name, documentation=tuple(documentation),
                hardening=tuple(hardening.items()), **checked))
        managers = [c.name for c in components if c.is_manager]
        if len(managers) > 1:
            raise RegistryError(self.origin[f"components.{managers[1]}.role"],
                                f"components.{managers[1]}.role", "manager",
                                f"only one manager may exist ({managers[0]} is one)")
        return Registry(_start_order(components, self.origin), sources, dict(self.origin))


def _start_order(components: list[Component], origin: Mapping[str, str]) -> tuple[Component, ...]:
    """Components ordered so each comes after what it names in ``after`` (file order otherwise)."""
    done: list[Component] = []
    pending = list(components)
    while pending:
        ready = [c for c in pending if all(a in {d.name for d in done} for a in c.after)]
        if not ready:
            name = pending[0].name
            raise RegistryError(origin.get(f"components.{name}.after", "registry"),
                                f"components.{name}.after", list(pending[0].after),
                                "the after lists form a cycle")
        done.append(ready[0])
        pending.remove(ready[0])
    return tuple(done)


def _table(source: str, key: str, value: Any) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise RegistryError(source, key, value, "must be a table")
    return value


_COMPONENT_KEYS: dict[str, tuple[type[Any], str]] = {
    "description": (str, "a string"),
    "factory": (str, "a string"),
    "settings": (str, "a string"),
    "role": (str, "a string"),
    "enabled": (bool, "true or false"),
    "after": (list, "a list of component names"),
    "timeout_start_sec": (int, "an integer"),
    "timeout_stop_sec": (int, "an integer"),
    "documentation": (list, "a list of URIs"),
    "secrets": (list, "a list of secret names or prefixes ending in '*'"),
    "listen": (str, "the configuration key of a port, e.g. 'threadwell.port'"),
}


def _component_value(source: str, dotted: str, key: str, value: Any) -> Any:
    if key not in _COMPONENT_KEYS:
        raise RegistryError(source, dotted, value,
                            f"unknown key (known: {', '.join(sorted(_COMPONENT_KEYS))}, "
                            "hardening)")
    kind, what = _COMPONENT_KEYS[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise RegistryError(source, dotted, value, f"must be {what}")
    if key == "description" and (not value.strip() or "\n" in value):
        raise RegistryError(source, dotted, value, "must be one non-empty line")
    if key == "factory" and not _FACTORY.match(str(value)):
        raise RegistryError(source, dotted, value, "must be 'module:function', e.g. "
                            "'runa.keeper.daemon:create'")
    if key == "settings" and not _SETTINGS.match(str(value)):
        raise RegistryError(source, dotted, value, "must be a module name, e.g. "
                            "'runa.keeper.settings'")
    if key == "role" and value not in ROLES:
        raise RegistryError(source, dotted, value, f"must be one of {', '.join(ROLES)}")
    if key == "after" and not all(isinstance(v, str) for v in value):
        raise RegistryError(source, dotted, value, "must be a list of component names")
    if key.startswith("timeout_") and not 1 <= value <= 3600:
        raise RegistryError(source, dotted, value, "must be 1 to 3600 seconds")
    if key == "documentation":
        return list(_documentation(source, dotted, value))
    if key == "secrets":
        for pattern in value:
            if not isinstance(pattern, str) or not _SECRET_PATTERN.match(pattern):
                raise RegistryError(source, dotted, pattern,
                                    "must be a secret's name (a lowercase letter, then "
                                    "lowercase letters, digits, '.', '_' or '-') or such a "
                                    "prefix ending in '*', e.g. 'alethia.*'")
    return value


def _documentation(source: str, dotted: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise RegistryError(source, dotted, value, "must be a list of URIs")
    for uri in value:
        if not re.match(r"^(man|info|file|https?):\S+$", uri):
            raise RegistryError(source, dotted, uri,
                                "must be a man:, info:, file:, http: or https: URI")
    return tuple(value)


def _hardening(source: str, dotted: str, value: Any) -> dict[str, HardeningValue]:
    table = _table(source, dotted, value)
    out: dict[str, HardeningValue] = {}
    for directive, setting in table.items():
        key = f"{dotted}.{directive}"
        if directive not in HARDENING_DIRECTIVES:
            raise RegistryError(source, key, setting,
                                "not a sandboxing directive Runa knows (see docs/gilgul.md)")
        if not isinstance(setting, str | bool | int) or "\n" in str(setting):
            raise RegistryError(source, key, setting, "must be one line: a string, "
                                "true/false or a number")
        problem = _bus_problem(directive, setting)
        if problem:
            raise RegistryError(source, key, setting, problem)
        out[directive] = setting
    return out


def _bus_problem(directive: str, setting: HardeningValue) -> str | None:
    """Why ``directive=setting`` would cut a component off the buses in /dev/shm, if it would."""
    if directive == "RemoveIPC" and render_value(setting) == "yes":
        return "would delete the bus segments in /dev/shm when the unit stops"
    if directive in _PATH_DIRECTIVES:
        for word in str(setting).split():
            path = Path(word.lstrip("-+").split(":", 1)[0])
            if path == _BUS_DIR or path in _BUS_DIR.parents:
                return f"would hide or freeze {_BUS_DIR}, where the buses live"
    return None


def render_value(value: HardeningValue) -> str:
    """A registry value as systemd spells it: true/false as yes/no."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)
