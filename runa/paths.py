"""Where Runa keeps things, for a personal stack and for the shared one (DESIGN §4).

Every path is computed from an environment mapping passed in, so tests and the
packaging checks can point Runa at stand-in directories without patching.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from runa.errors import UsageError
from runa.splinter.segment import NAME_FORM, is_name

SHARED_STACK = "shared"


def check_stack_name(name: str, source: str = "--stack") -> str:
    """``name`` if it is a usable stack name; a UsageError (exit 64) naming the form if not.

    The bus segments' own rule (``runa.splinter.segment``: stack names become file names),
    checked before any command runs: found later, by the bus, it was an I/O error (74).
    """
    if not is_name(name):
        raise UsageError(f"{source} {name!r} is not a stack name: use {NAME_FORM} "
                         "(e.g. u1000, shared)")
    return name


def personal_stack(uid: int | None = None) -> str:
    """The stack name of a person's own stack: ``u<uid>``."""
    return f"u{os.getuid() if uid is None else uid}"


@dataclass(frozen=True)
class Paths:
    """The directories one stack reads and writes."""

    stack: str
    sysconfdir: Path
    user_config: Path | None
    state: Path
    data: Path
    runtime: Path
    models: tuple[Path, ...]
    #: The runtime directory is under ``$TMPDIR/runa-<uid>`` because XDG_RUNTIME_DIR is unset.
    runtime_fallback: bool = False

    @property
    def shared(self) -> bool:
        return self.stack == SHARED_STACK

    @classmethod
    def for_stack(cls, stack: str, env: Mapping[str, str] | None = None) -> Paths:
        """Resolve the directories for ``stack`` from ``env`` (default: os.environ).

        ``RUNA_SYSCONFDIR`` moves ``/etc/runa`` (the test stand-in for the admin layer);
        the XDG variables move the personal directories as the XDG spec says; without
        ``XDG_RUNTIME_DIR`` the runtime directory falls back to ``$TMPDIR/runa-<uid>``
        (``/tmp`` when TMPDIR is unset), which runa.supervisor.rundir makes private.
        """
        env = os.environ if env is None else env
        sysconfdir = Path(env.get("RUNA_SYSCONFDIR", "/etc/runa"))
        if stack == SHARED_STACK:
            var = Path(env.get("RUNA_SHARED_STATEDIR", "/var/lib/runa"))
            return cls(
                stack=stack,
                sysconfdir=sysconfdir,
                user_config=None,
                state=var,
                data=var,
                runtime=Path(env.get("RUNA_SHARED_RUNTIMEDIR", "/run/runa")),
                models=(Path("/usr/share/runa/models"), var / "models"),
            )
        home = Path(env.get("HOME", os.path.expanduser("~")))
        config_home = Path(env.get("XDG_CONFIG_HOME") or home / ".config")
        data_home = Path(env.get("XDG_DATA_HOME") or home / ".local/share")
        state_home = Path(env.get("XDG_STATE_HOME") or home / ".local/state")
        xdg_runtime = env.get("XDG_RUNTIME_DIR")
        runtime_dir = xdg_runtime or os.path.join(env.get("TMPDIR") or "/tmp",
                                                  f"runa-{os.getuid()}")
        return cls(
            stack=stack,
            sysconfdir=sysconfdir,
            user_config=config_home / "runa",
            state=state_home / "runa",
            data=data_home / "runa",
            runtime=Path(runtime_dir) / "runa",
            models=(data_home / "runa/models", Path("/usr/share/runa/models")),
            runtime_fallback=not xdg_runtime,
        )
