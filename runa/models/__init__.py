"""Model files: which models Runa knows, setting them up, finding them, checking them.

A library below the components: splinfer uses it to resolve and check a model
before llama.cpp sees it; the CLI uses it for ``runa models setup``.
"""
