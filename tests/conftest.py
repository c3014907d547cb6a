"""Shared fixtures: the real systemd user manager (harness) and an isolated Runa environment."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from runa.testing.usermanager import UserManager


@pytest.fixture(scope="session")
def user_manager() -> Iterator[UserManager]:
    """A real ``systemd --user`` and journald for the whole session, torn down at the end."""
    manager = UserManager()
    manager.start()
    try:
        yield manager
    finally:
        manager.stop()


@pytest.fixture
def systemctl(user_manager: UserManager) -> Callable[..., subprocess.CompletedProcess[str]]:
    env = {**os.environ, **user_manager.env}

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["systemctl", "--user", *args], env=env, capture_output=True,
                              text=True, check=check, timeout=30)

    return run


@pytest.fixture
def runa_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """Environment for a ``runa`` subprocess with every layer and directory under tmp_path.

    The stack name is unique to the test; its bus segments in /dev/shm are removed after it.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNA_")}
    env.update(
        RUNA_SYSCONFDIR=str(tmp_path / "etc"),
        HOME=str(tmp_path / "home"),
        XDG_CONFIG_HOME=str(tmp_path / "home/.config"),
        XDG_DATA_HOME=str(tmp_path / "home/.local/share"),
        XDG_STATE_HOME=str(tmp_path / "home/.local/state"),
        XDG_RUNTIME_DIR=str(tmp_path / "run"),
        RUNA_STACK=f"t{os.getpid()}x{tmp_path.name[-8:]}",
    )
    (tmp_path / "run").mkdir(mode=0o700)
    yield env
    for segment in Path("/dev/shm").glob(f"runa-{env['RUNA_STACK']}-*"):
        segment.unlink()
