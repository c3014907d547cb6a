"""A small daemon on the service base, used to show and test the foundation.

It is not in the packaged registry, the shipped configuration or /etc/runa/runa.toml: it
joins a stack as any new component would, with one registry entry in
``/etc/runa/components.d`` (``REGISTRY_ENTRY``), which the tests and benchmarks write.
"""

REGISTRY_ENTRY = """\
[components.demo]
description = "Runa demo daemon (gilgul's test subject)"
factory = "runa.demo.daemon:create"
settings = "runa.demo.settings"
after = ["splinter"]
"""

__all__ = ["REGISTRY_ENTRY"]
