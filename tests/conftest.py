"""Shared fixtures: the real systemd user manager (harness) and an isolated Runa environment."""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support import isolated_env, register_demo, remove_segments, small_filesystem

from runa.models.catalog import MINILM_L6_V2, SMOLLM2_135M
from runa.models.embedding_install import is_installed as embedding_installed
from runa.models.errors import ModelSetupError
from runa.models.install import is_installed, setup_model
from runa.paths import Paths, personal_stack
from runa.testing.usermanager import UserManager


@pytest.fixture(scope="module", autouse=True)
def runa_logging_restored() -> Iterator[None]:
    """Give every module the ``runa`` logger tree as it found it.

    A test that runs a daemon or the supervisor in-process calls ``runa.log.setup``, which
    replaces the tree's handlers and stops propagation; left so, later modules' ``caplog``
    sees nothing, depending on the order pytest happens to collect them in.
    """
    root = logging.getLogger("runa")
    saved = (list(root.handlers), root.level, root.propagate)
    yield
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
    root.propagate = saved[2]


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
    env = isolated_env(tmp_path)
    yield env
    remove_segments(env)


@pytest.fixture
def demo_env(runa_env: dict[str, str]) -> dict[str, str]:
    """``runa_env`` with the demo daemon registered in its components.d, as a new component
    is."""
    register_demo(Path(runa_env["RUNA_SYSCONFDIR"]))
    return runa_env


@pytest.fixture(scope="session")
def real_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SmolLM2-135M-Instruct: $RUNA_TEST_MODEL, an installed copy, or set up for this session.

    Skips (saying why) only when none is installed and ``runa models setup`` cannot
    fetch it, e.g. offline.
    """
    override = os.environ.get("RUNA_TEST_MODEL")
    if override:
        return Path(override)
    for directory in Paths.for_stack(personal_stack()).models:
        candidate = directory / SMOLLM2_135M.filename
        if candidate.is_file() and candidate.stat().st_size == SMOLLM2_135M.size:
            return candidate
    target = tmp_path_factory.mktemp("models")
    try:
        result = setup_model(SMOLLM2_135M, target)
    except ModelSetupError as e:
        pytest.skip(f"default model not installed and setup failed: {e}")
    assert is_installed(SMOLLM2_135M, result.path)
    return result.path


@pytest.fixture(scope="session")
def minilm_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedding GGUF: $RUNA_TEST_EMBEDDING_MODEL, the installed copy, or set up now."""
    override = os.environ.get("RUNA_TEST_EMBEDDING_MODEL")
    if override:
        return Path(override)
    for directory in Paths.for_stack(personal_stack()).models:
        candidate = directory / MINILM_L6_V2.filename
        if candidate.is_file() and embedding_installed(MINILM_L6_V2, candidate):
            return candidate
    from runa.models.embedding_install import setup_embedding_model

    try:
        return setup_embedding_model(MINILM_L6_V2, tmp_path_factory.mktemp("models")).path
    except ModelSetupError as e:
        pytest.skip(f"embedding model not installed and setup failed: {e}")


@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A real 1 MiB filesystem (root only): a disk that really fills up."""
    with small_filesystem(tmp_path / "small", "1m") as mount:
        yield mount
