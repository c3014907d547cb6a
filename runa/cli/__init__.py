"""The ``runa`` command: one entry point, one module per group of subcommands."""
