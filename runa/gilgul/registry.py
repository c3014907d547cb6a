"""The component registry, under the name gilgul's modules have always imported it by.

The registry is a shared library (``runa.registry``): configuration, the CLI and the supervisor
read it too, and a library must not live inside a component.
"""

from runa.registry import (
    HARDENING_DIRECTIVES,
    ROLES,
    Component,
    Registry,
    RegistryError,
    load,
    load_files,
    override_files,
    packaged_path,
    render_value,
    unit_name,
)

__all__ = ["HARDENING_DIRECTIVES", "ROLES", "Component", "Registry", "RegistryError", "load",
           "load_files", "override_files", "packaged_path", "render_value", "unit_name"]
