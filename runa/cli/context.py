"""What every subcommand needs: the environment, the stack's paths, the configuration."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from runa import config as config_mod
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
    def config(self) -> config_mod.Config:
        return config_mod.load(self.paths, self.env, self.overrides)
