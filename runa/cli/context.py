"""What every subcommand needs: the environment, the stack's paths, the configuration."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from runa import config as config_mod
from runa import registry as registry_mod
from runa.components import load_config
from runa.paths import Paths, personal_stack


@dataclass
class CliContext:
    """Built once per invocation from the flags and the environment; passed to commands."""

    env: Mapping[str, str]
    stack_flag: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_environ(cls, stack: str | None = None) -> CliContext:
        return cls(env=dict(os.environ), stack_flag=stack)

    @property
    def stack(self) -> str:
        """``--stack``, else ``RUNA_STACK``, else the person's own ``u<uid>``."""
        return self.stack_flag or self.env.get("RUNA_STACK") or personal_stack()

    @cached_property
    def paths(self) -> Paths:
        return Paths.for_stack(self.stack, self.env)

    @cached_property
    def registry(self) -> registry_mod.Registry:
        """The component registry: packaged, overridden by ``<sysconfdir>/components.d``."""
        return registry_mod.load(self.paths.sysconfdir)

    @cached_property
    def config(self) -> config_mod.Config:
        return load_config(self.paths, self.env, self.overrides, self.registry)


# llama.cpp's command-line spellings for the settings that choose and size the model.
MODEL_FLAGS = (
    (("-m", "--model"), str, "splinfer.model", "PATH|NAME",
     "the GGUF model (a path, a file in a models directory, or 'default')"),
    (("-c", "--ctx-size"), int, "splinfer.ctx_size", "N", "context length in tokens"),
    (("-t", "--threads"), int, "splinfer.threads", "N", "threads for generation"),
)


def add_model_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model (llama.cpp's options)")
    for flags, kind, key, metavar, text in MODEL_FLAGS:
        group.add_argument(*flags, type=kind, dest=key, metavar=metavar, default=None, help=text)


def model_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The model flags given on the command line, as configuration overrides."""
    return {key: getattr(args, key) for _, _, key, _, _ in MODEL_FLAGS
            if getattr(args, key, None) is not None}


def as_environment(overrides: dict[str, Any]) -> dict[str, str]:
    """Overrides as ``RUNA_*`` variables, for child processes (the supervised components)."""
    return {"RUNA_" + key.replace(".", "_").upper(): str(value) for key, value in overrides.items()}
