"""The bus keeper (``runa daemon splinter``): creates the buses, reaps, keeps stats."""

# Nothing here is for other packages: the keeper runs as ``runa daemon splinter``, its
# daemon named by the daemon registry as ``runa.keeper.daemon:create``.
__all__: list[str] = []
