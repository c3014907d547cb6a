"""Runa: a local, offline LLM runtime built from small cooperating processes."""

__version__ = "0.1.0"
