"""Rendering the systemd user units from the registry and the Jinja2 templates (DESIGN §5).

The committed units under ``systemd/`` are this module's output for the packaged registry and
the configuration's packaged defaults, with ``ExecStart=/usr/bin/runa``; a test keeps them
equal. Rendering is pure: text in memory, written only once every unit rendered.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import jinja2

from runa.components import resources_of, settings_of
from runa.config import resource_settings
from runa.registry import Component, Registry, RegistryError, render_value, unit_name

EXECUTABLE = "/usr/bin/runa"
TARGET = "runa.target"


@dataclass(frozen=True)
class Limits:
    """The resource settings a unit carries: CPUQuota=, MemoryMax=, WatchdogSec=."""

    cpu_quota: str
    memory_max: str
    watchdog_sec: int

    @classmethod
    def of(cls, values: Mapping[str, object]) -> Limits:
        """From a ``[components.<name>]`` table (``Config.component``)."""
        return cls(cpu_quota=str(values["cpu_quota"]), memory_max=str(values["memory_max"]),
                   watchdog_sec=int(values["watchdog_sec"]))  # type: ignore[call-overload]

    @classmethod
    def packaged(cls, component: str, defaults: Mapping[str, str] | None = None) -> Limits:
        """The configuration's packaged defaults (``defaults``: the component's own,
        ``runa.components.resources_of``): what the committed units carry."""
        return cls.of({setting.key.rsplit(".", 1)[1]: setting.default
                       for setting in resource_settings(component, defaults)})


def _environment() -> jinja2.Environment:
    templates = resources.files("runa") / "data" / "templates"
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates)),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,  # unit files, not HTML
    )
    env.filters["unit_name"] = unit_name
    env.filters["systemd_value"] = render_value
    return env


def render(registry: Registry, executable: str = EXECUTABLE) -> dict[str, str]:
    """Every unit of ``registry``: ``{file name: text}``, the target first."""
    env = _environment()
    units = {TARGET: env.get_template("target.j2").render(
        components=registry.enabled,
        documentation=registry.components[0].documentation if registry.components else ())}
    service = env.get_template("service.j2")
    socket = env.get_template("socket.j2")
    manager = registry.manager
    for component in registry:
        after = [unit_name(name) for name in component.after]
        if manager is not None and not component.is_manager:
            after.insert(0, manager.unit)  # its drop-ins first; it sees every start
        if component.listen:  # its sockets first: the service is handed them
            after.append(socket_unit(component))
            units[socket_unit(component)] = socket.render(
                unit=socket_unit(component), c=component,
                port=packaged_port(component, registry))
        units[component.unit] = service.render(
            unit=component.unit, c=component, executable=executable, after=after,
            limits=Limits.packaged(component.name, resources_of(component)),
            sockets=socket_unit(component) if component.listen else "")
    return units


def socket_unit(component: Component) -> str:
    """The .socket unit of a component that listens (``listen`` in its registry entry)."""
    return component.unit.removesuffix(".service") + ".socket"


def packaged_port(component: Component, registry: Registry) -> int:
    """The packaged default of the port its ``listen`` names (what the committed unit says;
    the supervisor binds the configured one)."""
    for setting in settings_of(component, registry):
        if setting.key == component.listen:
            return int(setting.default)
    raise RegistryError(registry.origin(f"components.{component.name}.listen"),
                        f"components.{component.name}.listen", component.listen,
                        "names no setting of the component")


def write(units: Mapping[str, str], directory: Path) -> list[Path]:
    """Write ``units`` into ``directory``, each file replaced atomically; the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in units.items():
        written.append(write_atomically(directory / name, text))
    return written


def write_atomically(path: Path, text: str, mode: int = 0o644) -> Path:
    """Write through a temporary file and rename, so readers see the old text or the new."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def differences(units: Mapping[str, str], directory: Path) -> list[str]:
    """How ``directory`` differs from ``units``: one line per missing, changed or extra file."""
    problems = []
    for name, text in units.items():
        path = directory / name
        if not path.is_file():
            problems.append(f"{path}: missing")
        elif path.read_text() != text:
            problems.append(f"{path}: differs from the rendered unit")
    for path in sorted(directory.glob("runa*")):
        if path.suffix in (".service", ".target") and path.name not in units:
            problems.append(f"{path}: not rendered from the registry")
    return problems
