"""What the component registry names, imported: each component's settings and daemon factory.

A component is declared once, in the registry (``runa.registry``): its entry names the module
holding its settings schema (``SETTINGS``, a tuple of ``runa.config.Setting`` under its own
``[<name>]`` section) and the ``module:function`` that builds its daemon. This module gathers
the settings into the configuration's ``Schema``, so ``runa.config`` imports no component, and
finds the factory ``runa daemon NAME`` runs. Nothing is imported before it is asked for.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Mapping
from typing import Any

from runa import registry as registry_mod
from runa.config import SHARED_SECTIONS, Config, Schema, Setting
from runa.paths import Paths
from runa.registry import Component, Registry, RegistryError

DaemonFactory = Callable[[Config, logging.Logger, str], Any]
"""Builds a component's daemon from (configuration, logger, stack name)."""


def schema(registry: Registry) -> Schema:
    """The configuration schema of ``registry``: the shared sections and every component's."""
    return Schema({component.name: settings_of(component, registry)
                   for component in registry},
                  {component.name: resources_of(component) for component in registry})


def packaged_schema() -> Schema:
    """The schema of the packaged registry alone: what the shipped files describe."""
    return schema(registry_mod.load())


def load_config(paths: Paths, env: Mapping[str, str],
                overrides: Mapping[str, Any] | None = None,
                registry: Registry | None = None) -> Config:
    """The effective configuration of ``paths``, with the sections its registry declares.

    ``registry`` defaults to the one of ``paths.sysconfdir`` (packaged plus components.d).
    """
    if registry is None:
        registry = registry_mod.load(paths.sysconfdir)
    return schema(registry).load(paths, env, overrides)


def settings_of(component: Component, registry: Registry) -> tuple[Setting, ...]:
    """The ``SETTINGS`` of the component's settings module, each under ``[<name>]``."""
    key = f"components.{component.name}.settings"
    if component.name in SHARED_SECTIONS:
        raise RegistryError(registry.origin(f"components.{component.name}"),
                            f"components.{component.name}", component.name,
                            f"names a shared section ({', '.join(SHARED_SECTIONS)})")
    if not component.settings:
        return ()
    module = _import(component.settings, registry.origin(key), key)
    settings = getattr(module, "SETTINGS", None)
    if not isinstance(settings, tuple) or not all(isinstance(s, Setting) for s in settings):
        raise RegistryError(registry.origin(key), key, component.settings,
                            "has no SETTINGS tuple of runa.config.Setting")
    for setting in settings:
        if not setting.key.startswith(f"{component.name}.") or setting.key.count(".") != 1:
            raise RegistryError(registry.origin(key), key, component.settings,
                                f"declares {setting.key}: a component's settings are "
                                f"{component.name}.<key>")
    return settings


def resources_of(component: Component) -> Mapping[str, str]:
    """The unit limits the component's settings module sizes for it (``RESOURCES``:
    ``cpu_quota``, ``memory_max``); the shared defaults for what it leaves out."""
    if not component.settings:
        return {}
    module = importlib.import_module(component.settings)  # settings_of imported it already
    resources = getattr(module, "RESOURCES", None)
    return dict(resources) if isinstance(resources, Mapping) else {}


def daemon_factory(component: Component, registry: Registry) -> DaemonFactory:
    """The function the registry names to build ``component``'s daemon."""
    key = f"components.{component.name}.factory"
    module_name, function = component.factory.split(":")
    factory = getattr(_import(module_name, registry.origin(key), key), function, None)
    if not callable(factory):
        raise RegistryError(registry.origin(key), key, component.factory,
                            f"{module_name} has no function {function}")
    return factory


def _import(module: str, source: str, key: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise RegistryError(source, key, module, f"cannot be imported: {error}") from error

