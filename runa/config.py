"""Layered TOML configuration (DESIGN §4).

Layers, later wins::

    packaged defaults (the Schema: the shared sections below, and each component's)
    /etc/runa/runa.toml, then /etc/runa/conf.d/*.toml in name order
    ~/.config/runa/runa.toml, then ~/.config/runa/conf.d/*.toml   (personal stack only)
    RUNA_* environment variables
    command-line flags

Every value is checked against the schema when its layer is read, so a bad value
is reported with the file (or variable), the dotted key and the value itself, and
nothing from a broken configuration is ever half-applied.

This module knows the shared sections ([bus], [log], [service]) and the machinery. Each
component's own section comes from its settings module, named in the component registry;
``runa.components`` gathers them into a ``Schema`` and this module imports no component.
"""

from __future__ import annotations

import difflib
import math
import re
import tomllib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runa.errors import ConfigError
from runa.paths import Paths

Check = Callable[[Any], str | None]
"""A value check: returns a problem description, or None when the value is fine."""


def in_range(low: float | None = None, high: float | None = None) -> Check:
    def check(value: Any) -> str | None:
        if low is not None and value < low:
            return f"must be at least {low}"
        if high is not None and value > high:
            return f"must be at most {high}"
        return None

    return check


def one_of(*choices: str) -> Check:
    def check(value: Any) -> str | None:
        return None if value in choices else f"must be one of {', '.join(choices)}"

    return check


_SIZE = re.compile(r"^(\d+)([KMGT]?)$")
_PERCENT = re.compile(r"^(\d+)%$")


def parse_size(text: str) -> int:
    """Parse a systemd-style byte size ("512M", "2G", "1048576") into bytes."""
    match = _SIZE.match(text.strip().upper())
    if not match:
        raise ValueError(f"not a size: {text!r}")
    number, unit = match.groups()
    return int(number) * 1024 ** " KMGT".index(unit or " ")


def size_check(value: Any) -> str | None:
    try:
        parse_size(value)
    except ValueError:
        return 'must be a size such as "512M" or "2G"'
    return None


def percent_check(value: Any) -> str | None:
    match = _PERCENT.match(value)
    if not match or int(match.group(1)) == 0:
        return 'must be a percentage of one CPU such as "50%" or "150%"'
    return None


def octal_mode_check(value: Any) -> str | None:
    if not re.fullmatch(r"0?[0-7]{3}", value):
        return 'must be an octal file mode such as "0600"'
    return None


@dataclass(frozen=True)
class Setting:
    """One configuration key: its type, packaged default and check."""

    key: str
    type: type
    default: Any
    doc: str
    check: Check | None = None
    #: Honoured only from the administrator's files (/etc/runa); any other layer is an error.
    admin_only: bool = False

    def validate(self, value: Any, source: str, key: str) -> Any:
        """Coerce and check ``value``, raising ConfigError naming source, key and value."""
        expected = self.type
        if expected is bool and not isinstance(value, bool):
            raise ConfigError(source, key, value, "must be true or false")
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            raise ConfigError(source, key, value, f"must be {_type_name(expected)}")
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(source, key, value, "must be a finite number")
        if self.check is not None:
            problem = self.check(value)
            if problem:
                raise ConfigError(source, key, value, problem)
        return value


def _type_name(kind: type) -> str:
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(
        kind, kind.__name__
    )


# The sections every installation has; no component may take one of these names.
SHARED_SECTIONS = ("bus", "log", "service", "components", "policy", "memory")

SHARED: tuple[Setting, ...] = (
    Setting("bus.dir", str, "/dev/shm", "Directory holding the bus segments."),
    Setting("bus.mode", str, "0600", "File mode of the bus segments.", octal_mode_check),
    Setting("bus.group", str, "", "Group owning the bus segments (empty: the user's)."),
    Setting("bus.slots", int, 2048, "KV slots in the main bus.", in_range(16, 1 << 22)),
    Setting("bus.max_key_bytes", int, 128, "Longest key, in UTF-8 bytes.", in_range(16, 1024)),
    Setting("bus.max_value_bytes", int, 2048, "Largest KV value.", in_range(64, 1 << 20)),
    Setting("bus.channels", int, 32, "Channels in the main bus.", in_range(4, 4096)),
    Setting(
        "bus.channel_bytes", int, 131072, "Ring size of each channel.", in_range(4096, 1 << 26)
    ),
    Setting(
        "bus.envelope_max_bytes", int, 32768, "Largest envelope.", in_range(512, 1 << 24)
    ),
    Setting("log.level", str, "info", "Lowest level logged.",
            one_of("debug", "info", "warning", "error")),
    Setting("log.target", str, "auto", "Where logs go: journald if present, else stderr.",
            one_of("auto", "journal", "stderr")),
    Setting("service.heartbeat_interval_s", float, 1.0,
            "Seconds between a daemon's health writes.", in_range(0.05, 60)),
    Setting("service.watchdog_sec", int, 10, "Default WatchdogSec= of the units.",
            in_range(1, 3600)),
    Setting("service.start_timeout_s", float, 30.0,
            "How long a component may take to become ready.", in_range(1, 3600)),
    Setting("policy.default", str, "default",
            "The policy set a conversation starts with (docs/policy.md)."),
    Setting("policy.minimum", str, "",
            "The least strict policy set anyone may choose (empty: no lock); only /etc/runa.",
            admin_only=True),
    Setting("memory.record", bool, True,
            "Whether chat and ask turns are written to alethia's memory (docs/memory.md)."),
)


def resource_settings(component: str, defaults: Mapping[str, str] | None = None
                      ) -> tuple[Setting, ...]:
    """The ``[components.<name>]`` table every registered component gets: its unit's limits
    (``defaults``: the component's own ``cpu_quota`` and ``memory_max``, its settings
    module's ``RESOURCES``)."""
    own = defaults or {}
    return (
        Setting(f"components.{component}.cpu_quota", str, own.get("cpu_quota", "100%"),
                f"CPUQuota= of runa-{component}.service.", percent_check),
        Setting(f"components.{component}.memory_max", str, own.get("memory_max", "512M"),
                f"MemoryMax= of runa-{component}.service.", size_check),
        Setting(f"components.{component}.watchdog_sec", int, 10,
                f"WatchdogSec= of runa-{component}.service.", in_range(1, 3600)),
    )


def _env_name(key: str) -> str:
    return "RUNA_" + key.replace(".", "_").upper()


@dataclass(frozen=True)
class Layer:
    """The values one source contributed, already validated."""

    source: str
    values: Mapping[str, Any]


class Schema:
    """Every key one installation knows: the shared sections, then each registered component's
    own settings, then its ``[components.<name>]`` table, in registry order.

    Built by ``runa.components`` from the registry; ``Schema()`` alone is the shared sections.
    """

    def __init__(self, components: Mapping[str, Iterable[Setting]] | None = None,
                 resources: Mapping[str, Mapping[str, str]] | None = None) -> None:
        own = dict(components or {})
        limits = resources or {}
        self.components: tuple[str, ...] = tuple(own)
        self.settings: tuple[Setting, ...] = (
            *SHARED,
            *(setting for settings in own.values() for setting in settings),
            *(setting for name in own for setting in resource_settings(name, limits.get(name))),
        )
        self._by_key = {setting.key: setting for setting in self.settings}
        self._by_env = {_env_name(key): key for key in self._by_key}

    def setting(self, key: str) -> Setting:
        """The schema entry of ``key``."""
        return self._by_key[key]

    def defaults(self) -> Layer:
        return Layer("packaged defaults", {s.key: s.default for s in self.settings})

    def _unknown(self, source: str, key: str, value: Any) -> ConfigError:
        close = difflib.get_close_matches(key, self._by_key, n=1)
        hint = f"unknown key (did you mean {close[0]}?)" if close else "unknown key"
        return ConfigError(source, key, value, hint)

    def read_toml(self, path: Path) -> Layer:
        """Read and validate one TOML file."""
        source = str(path)
        try:
            with path.open("rb") as handle:
                table = tomllib.load(handle)
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(source, "(file)", "", f"not valid TOML: {error}") from error
        except UnicodeDecodeError as error:
            byte = error.object[error.start]
            raise ConfigError(source, "(file)", "", f"not UTF-8 text: byte {error.start} is "
                              f"0x{byte:02x} (save the file as UTF-8)") from None
        except OSError as error:
            raise ConfigError(source, "(file)", "", f"cannot be read: {error.strerror}") \
                from error
        values = {}
        for key, value in _flatten(table):
            setting = self._by_key.get(key)
            if setting is None:
                raise self._unknown(source, key, value)
            values[key] = setting.validate(value, source, key)
        return Layer(source, values)

    def read_env(self, env: Mapping[str, str]) -> Layer:
        """The ``RUNA_*`` variables that name a configuration key."""
        values = {}
        for name in sorted(env):
            key = self._by_env.get(name)
            if key is None:
                continue
            setting = self._by_key[key]
            values[key] = setting.validate(_parse_env(setting, env[name], name), name, key)
        return Layer("environment", values)

    def read_overrides(self, overrides: Mapping[str, Any], source: str = "command line"
                       ) -> Layer:
        """Values given as flags, as ``{dotted key: value}``."""
        values = {}
        for key, value in overrides.items():
            setting = self._by_key.get(key)
            if setting is None:
                raise self._unknown(source, key, value)
            if isinstance(value, str) and setting.type is not str:
                value = _parse_env(setting, value, source)
            values[key] = setting.validate(value, source, key)
        return Layer(source, values)

    def load(self, paths: Paths, env: Mapping[str, str],
             overrides: Mapping[str, Any] | None = None) -> Config:
        """Read every layer for ``paths`` and return the effective configuration."""
        layers = [self.read_toml(path) for path in config_files(paths)]
        layers.append(self.read_env(env))
        if overrides:
            layers.append(self.read_overrides(overrides))
        for layer in layers:
            self._check_admin_only(layer, paths)
        return Config(layers, self)

    def _check_admin_only(self, layer: Layer, paths: Paths) -> None:
        """An admin-only key set by a layer outside /etc/runa (e.g. a user's file): an error
        naming that layer, so nobody lowers a lock the administrator set."""
        admin = {paths.sysconfdir, paths.sysconfdir / "conf.d"}
        for key, value in layer.values.items():
            if self._by_key[key].admin_only and Path(layer.source).parent not in admin:
                raise ConfigError(layer.source, key, value, "only the administrator may set "
                                  f"this, in {paths.sysconfdir / 'runa.toml'}")

    def admin_template(self) -> str:
        """The text of the shipped /etc/runa/runa.toml: every key, commented, with its default."""
        lines = [
            "# /etc/runa/runa.toml: system-wide Runa settings (DESIGN §4).",
            "# Later layers win: packaged defaults < this file < /etc/runa/conf.d/*.toml",
            "# < ~/.config/runa/runa.toml < ~/.config/runa/conf.d/*.toml < RUNA_* variables "
            "< flags.",
            "# Every key is shown commented out with its packaged default. `runa config check`",
            "# validates; `runa config show` prints each key's effective value and its origin.",
            "# This file is generated by `runa config template`.",
        ]
        first = f"components.{self.components[0]}" if self.components else None
        section = None
        for entry in self.settings:
            table, key = entry.key.rsplit(".", 1)
            if table.startswith("components.") and table != first:
                continue
            if table != section:
                lines += ["", f"# [{table}]"]
                section = table
            lines += [f"# {entry.doc}", f"# {key} = {_toml_value(entry.default)}"]
        if len(self.components) > 1:
            others = ", ".join(self.components[1:])
            lines += ["", f"# The same [components.<name>] table exists for {others}."]
        return "\n".join([*lines, ""])


class Config(Mapping[str, Any]):
    """The effective configuration: every schema key with the value of the last layer."""

    def __init__(self, layers: Iterable[Layer], schema: Schema) -> None:
        self.schema = schema
        self.layers = (schema.defaults(), *layers)
        self._values: dict[str, Any] = {}
        self._origin: dict[str, str] = {}
        for layer in self.layers:
            for key, value in layer.values.items():
                self._values[key] = value
                self._origin[key] = layer.source

    def __getitem__(self, key: str) -> Any:
        try:
            return self._values[key]
        except KeyError:
            raise KeyError(f"no configuration key {key!r}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def origin(self, key: str) -> str:
        """The layer that set ``key`` (a file path, an environment variable, or a flag)."""
        return self._origin[key]

    def component(self, name: str) -> dict[str, Any]:
        """The ``[components.<name>]`` table as a plain dict."""
        prefix = f"components.{name}."
        return {k[len(prefix):]: v for k, v in self._values.items() if k.startswith(prefix)}


def _flatten(table: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for name, value in table.items():
        key = f"{prefix}{name}"
        if isinstance(value, dict):
            yield from _flatten(value, key + ".")
        else:
            yield key, value


def _parse_env(setting: Setting, text: str, source: str) -> Any:
    if setting.type is str:
        return text
    if setting.type is bool:
        lowered = text.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ConfigError(source, setting.key, text, "must be true or false")
    try:
        return setting.type(text)
    except ValueError:
        raise ConfigError(source, setting.key, text, f"must be {_type_name(setting.type)}") \
            from None


def config_files(paths: Paths) -> list[Path]:
    """The TOML files of every file layer that exists, in the order they apply."""
    dirs = [paths.sysconfdir]
    if paths.user_config is not None:
        dirs.append(paths.user_config)
    files: list[Path] = []
    for base in dirs:
        main = base / "runa.toml"
        if main.is_file():
            files.append(main)
        dropins = base / "conf.d"
        if dropins.is_dir():
            files.extend(sorted(p for p in dropins.glob("*.toml") if p.is_file()))
    return files


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return repr(value)
