"""A small daemon on the service base, used to show and test the foundation."""

# Nothing here is for other packages: the demo runs as ``runa daemon demo``, its daemon
# named by the daemon registry as ``runa.demo.daemon:create``.
__all__: list[str] = []
