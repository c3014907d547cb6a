"""Layered TOML configuration (DESIGN §4).

Layers, later wins::

    packaged defaults (the schema below)
    /etc/runa/runa.toml, then /etc/runa/conf.d/*.toml in name order
    ~/.config/runa/runa.toml, then ~/.config/runa/conf.d/*.toml   (personal stack only)
    RUNA_* environment variables
    command-line flags

Every value is checked against the schema when its layer is read, so a bad value
is reported with the file (or variable), the dotted key and the value itself, and
nothing from a broken configuration is ever half-applied.
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
from runa.protocol.names import topic_name_problem
from runa.protocol.ranges import param_problem
from runa.protocol.tieto import FUSIONS, MODES, UNCITED, number_problem

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


def llama_param(name: str) -> Check:
    """The range llama.cpp's option ``name`` allows, taken from ``runa.protocol.ranges``.

    One table for config and splinfer, so ``runa config check`` refuses exactly what
    splinfer would.
    """
    return lambda value: param_problem(name, value)


def wire_number(name: str) -> Check:
    """The range tieto holds number ``name`` to in a request (``runa.protocol.tieto``)."""
    return lambda value: number_problem(name, value)


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

    def validate(self, value: Any, source: str, key: str) -> Any:
        """Coerce and check ``value``, raising ConfigError naming source, key and value."""
        expected = self.type
        if expected is bool and not isinstance(value, bool):
            raise ConfigError(source, key, value, "must be true or false")
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            raise ConfigError(source, key, value, f"must be {_type_name(expected)}")
        if expected is float and not math.isfinite(value):
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


# Component names that may carry a [components.<name>] table.
COMPONENTS = ("splinter", "splinfer", "tieto", "gilgul", "demo")

SCHEMA: tuple[Setting, ...] = (
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
    Setting("splinter.reap_interval_s", float, 1.0,
            "Seconds between the keeper's sweeps for channels of dead processes.",
            in_range(0.05, 60)),
    Setting("splinter.decay_interval_s", float, 0.5,
            "Seconds between the keeper's decay sweeps (expired keys go within TTL + this).",
            in_range(0.05, 60)),
    Setting("splinter.idle_expiry_s", float, 0.0,
            "Remove ephemeral keys neither read nor written for this long (0: never).",
            in_range(0, 10**8)),
    Setting("splinter.promote_reads", int, 100,
            "Reads of a key since its last promote event that trigger the next one.",
            in_range(1, 1 << 40)),
    Setting("splinter.promote_cooldown_s", float, 600.0,
            "A key gets at most one promote event per this many seconds.", in_range(0, 10**8)),
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
    Setting("splinfer.model", str, "default",
            "The chat model: a catalog name, a file in a models directory, or a path."),
    Setting("splinfer.ctx_size", int, 4096, "Context length in tokens (0: the model's own).",
            llama_param("ctx_size")),
    Setting("splinfer.threads", int, -1, "Threads for generation (-1: one per usable CPU, "
            "fewer while other programs keep CPUs busy).",
            llama_param("threads")),
    Setting("splinfer.batch_size", int, 2048, "Logical batch size for prompt processing.",
            llama_param("batch_size")),
    Setting("splinfer.flash_attn", bool, True, "Use flash attention (faster and smaller on CPU)."),
    Setting("splinfer.memory_max", str, "",
            "Refuse a model that would need more (empty: the unit's MemoryMax= only).",
            lambda v: None if v == "" else size_check(v)),
    Setting("splinfer.idle_unload_s", float, 300.0,
            "Unload the model after this many idle seconds (0: never).", in_range(0, 1e7)),
    Setting("splinfer.stream_flush_ms", float, 50.0,
            "Streamed text is sent at most this often (the first piece at once; 0: every token).",
            in_range(0, 1000)),
    Setting("splinfer.stream_timeout_s", float, 10.0,
            "Give up on a reader that has not made room in its reply channel for this long.",
            in_range(0.1, 3600)),
    Setting("splinfer.cache_type_k", str, "f16",
            "Element type of the K cache: f32, f16, bf16, q8_0, q4_0, q4_1, iq4_nl, q5_0, q5_1.",
            one_of("f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "iq4_nl", "q5_0", "q5_1")),
    Setting("splinfer.cache_type_v", str, "f16",
            "Element type of the V cache (a quantized one needs flash_attn).",
            one_of("f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "iq4_nl", "q5_0", "q5_1")),
    Setting("splinfer.parallel", int, 4,
            "Conversations decoded together, one sequence each, sharing the context's cells.",
            llama_param("parallel")),
    Setting("splinfer.persona", str, "default",
            "The persona of one-shot turns and of new conversations that name none."),
    Setting("splinfer.state_max_mib", int, 1024,
            "Saved conversation states (KV cache files) kept at most; the oldest go first.",
            in_range(0, 1 << 24)),
    Setting("splinfer.state_max_age_days", float, 30.0,
            "Drop a saved conversation state not used for this many days (0: no age limit); "
            "the history is kept.", in_range(0, 36500)),
    Setting("splinfer.state_save_idle_s", float, 30.0,
            "Save an idle conversation's state after this many seconds (0: only when it leaves).",
            in_range(0, 1e7)),
    # gilgul: the reincarnation policy (docs/gilgul.md).
    Setting("gilgul.backoff_initial_s", float, 1.0,
            "Delay before the second restart in a row; each further one doubles it "
            "(the first restart is immediate).", in_range(0, 3600)),
    Setting("gilgul.backoff_max_s", float, 30.0, "The longest delay between restarts.",
            in_range(0, 86400)),
    Setting("gilgul.window_s", float, 60.0,
            "Failures older than this are forgotten: a component up this long starts over "
            "with an immediate restart.", in_range(1, 86400)),
    Setting("gilgul.escalate_after", int, 5,
            "Failures within the window that escalate: the policy script runs and the "
            "component is held.", in_range(1, 1000)),
    Setting("gilgul.retry_after_escalation", bool, False,
            "Keep restarting an escalated component (at the backoff) instead of holding it."),
    Setting("gilgul.policy_script", str, "",
            "Run as '<script> <component> <reason> <incarnation>' on escalation (empty: none)."),
    Setting("gilgul.heartbeat_timeout_s", float, 10.0,
            "Restart a running component whose <component>:health key has been missing or "
            "stale this long (0: never).", in_range(0, 3600)),
    # tieto: retrieval over a person's own documents (docs/tieto.md).
    Setting("tieto.dir", str, "",
            "Directory of the topic indexes (empty: <data dir>/tieto, e.g. "
            "~/.local/share/runa/tieto)."),
    Setting("tieto.embedding_model", str, "default",
            "The embedding model: a catalog name, a file in a models directory, or a path."),
    Setting("tieto.threads", int, -1, "Threads for embedding (-1: one per usable CPU).",
            in_range(-1, 1024)),
    Setting("tieto.chunk_tokens", int, 254,
            "Longest chunk in the embedding model's word-pieces (254 + [CLS] + [SEP] = 256).",
            in_range(16, 254)),
    Setting("tieto.chunk_overlap", int, 32,
            "Word-pieces of whole sentences consecutive chunks share.", in_range(0, 100)),
    Setting("tieto.k", int, 5, "Chunks 'runa recall' returns.", wire_number("k")),
    Setting("tieto.mode", str, "hybrid", "Ranking: hybrid (vector + full text, fused), "
            "vector or fts.", one_of(*MODES)),
    Setting("tieto.candidates", int, 50,
            "Depth of the vector and full-text lists before fusion.", wire_number("candidates")),
    Setting("tieto.fusion", str, "zscore",
            "How hybrid combines vector and full-text results: zscore (standardised scores, "
            "mixed by fts_weight) or rrf (reciprocal rank fusion).", one_of(*FUSIONS)),
    Setting("tieto.rrf_k", float, 1.0,
            "Reciprocal rank fusion constant (fusion = rrf): score = sum of "
            "weight/(rrf_k + rank).", wire_number("rrf_k")),
    Setting("tieto.fts_weight", float, 0.2,
            "Weight of the full-text side in hybrid ranking, 0-1 (zscore: the vector score "
            "weighs 1 minus this; rrf: the vector ranking weighs 1).", wire_number("fts_weight")),
    Setting("tieto.min_similarity", float, 0.0,
            "Drop chunks whose cosine similarity to the question is below this (0: keep all).",
            wire_number("min_similarity")),
    Setting("tieto.sieve", float, 0.35,
            "'runa recall --complete' and /rag: sources under this cosine similarity are not "
            "given to the model; with none left the answer is that it does not know.",
            wire_number("sieve")),
    Setting("tieto.uncited", str, "mark",
            "A --complete or /rag answer that cites none of its sources: mark it as not "
            "grounded, or refuse it (\"I don't know\" and the best passage instead).",
            one_of(*UNCITED)),
    Setting("tieto.complete_k", int, 3,
            "Chunks retrieved as the sources of a completion (--complete, /rag).",
            in_range(1, 20)),
    Setting("tieto.short_term_topic", str, "short-term",
            "Topic that short-term memory (keys the keeper promotes) is filed into; on the "
            "shared stack each user gets <topic>-u<uid>.", topic_name_problem),
    Setting("demo.startup_delay_s", float, 0.0,
            "Seconds the demo daemon pretends to load before READY.", in_range(0, 600)),
    Setting("demo.tick_s", float, 1.0, "Seconds between the demo daemon's ticks.",
            in_range(0.01, 3600)),
    Setting("demo.heartbeat_stop_after_s", float, 0.0,
            "Test seam: stop writing demo:health after this many seconds, staying alive "
            "(0: never).", in_range(0, 86400)),
    *(
        setting
        for name in COMPONENTS
        for setting in (
            Setting(f"components.{name}.cpu_quota", str, "100%",
                    f"CPUQuota= of runa-{name}.service.", percent_check),
            Setting(f"components.{name}.memory_max", str, "512M",
                    f"MemoryMax= of runa-{name}.service.", size_check),
            Setting(f"components.{name}.watchdog_sec", int, 10,
                    f"WatchdogSec= of runa-{name}.service.", in_range(1, 3600)),
        )
    ),
)

_BY_KEY = {setting.key: setting for setting in SCHEMA}


def _env_name(key: str) -> str:
    return "RUNA_" + key.replace(".", "_").upper()


_BY_ENV = {_env_name(key): key for key in _BY_KEY}


@dataclass(frozen=True)
class Layer:
    """The values one source contributed, already validated."""

    source: str
    values: Mapping[str, Any]


class Config(Mapping[str, Any]):
    """The effective configuration: every schema key with the value of the last layer."""

    def __init__(self, layers: Iterable[Layer]) -> None:
        self.layers = (Layer("packaged defaults", {s.key: s.default for s in SCHEMA}),
                       *layers)
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


def _unknown(source: str, key: str, value: Any) -> ConfigError:
    close = difflib.get_close_matches(key, _BY_KEY, n=1)
    hint = f"unknown key (did you mean {close[0]}?)" if close else "unknown key"
    return ConfigError(source, key, value, hint)


def read_toml(path: Path) -> Layer:
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
        raise ConfigError(source, "(file)", "", f"cannot be read: {error.strerror}") from error
    values = {}
    for key, value in _flatten(table):
        setting = _BY_KEY.get(key)
        if setting is None:
            raise _unknown(source, key, value)
        values[key] = setting.validate(value, source, key)
    return Layer(source, values)


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


def read_env(env: Mapping[str, str]) -> Layer:
    """The ``RUNA_*`` variables that name a configuration key."""
    values = {}
    for name in sorted(env):
        key = _BY_ENV.get(name)
        if key is None:
            continue
        setting = _BY_KEY[key]
        values[key] = setting.validate(_parse_env(setting, env[name], name), name, key)
    return Layer("environment", values)


def read_overrides(overrides: Mapping[str, Any], source: str = "command line") -> Layer:
    """Values given as flags, as ``{dotted key: value}``."""
    values = {}
    for key, value in overrides.items():
        setting = _BY_KEY.get(key)
        if setting is None:
            raise _unknown(source, key, value)
        if isinstance(value, str) and setting.type is not str:
            value = _parse_env(setting, value, source)
        values[key] = setting.validate(value, source, key)
    return Layer(source, values)


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


def load(
    paths: Paths,
    env: Mapping[str, str],
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Read every layer for ``paths`` and return the effective configuration."""
    layers = [read_toml(path) for path in config_files(paths)]
    layers.append(read_env(env))
    if overrides:
        layers.append(read_overrides(overrides))
    return Config(layers)


def setting(key: str) -> Setting:
    """The schema entry of ``key``."""
    return _BY_KEY[key]


def admin_template() -> str:
    """The text of the shipped /etc/runa/runa.toml: every key, commented, with its default."""
    lines = [
        "# /etc/runa/runa.toml: system-wide Runa settings (DESIGN §4).",
        "# Later layers win: packaged defaults < this file < /etc/runa/conf.d/*.toml",
        "# < ~/.config/runa/runa.toml < ~/.config/runa/conf.d/*.toml < RUNA_* variables < flags.",
        "# Every key is shown commented out with its packaged default. `runa config check`",
        "# validates; `runa config show` prints each key's effective value and its origin.",
        "# This file is generated by `runa config template`.",
    ]
    section = None
    for entry in SCHEMA:
        table, key = entry.key.rsplit(".", 1)
        if table.startswith("components.") and table != f"components.{COMPONENTS[0]}":
            continue
        if table != section:
            lines += ["", f"# [{table}]"]
            section = table
        lines += [f"# {entry.doc}", f"# {key} = {_toml_value(entry.default)}"]
    others = ", ".join(COMPONENTS[1:])
    lines += ["", f"# The same [components.<name>] table exists for {others}.", ""]
    return "\n".join(lines)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return repr(value)
