"""Helpers the tests share (importable because conftest.py puts tests/ on sys.path)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from runa.splinter import segment_paths


def runa(*args: str, env: dict[str, str], timeout: float = 60,
         check: bool = False) -> subprocess.CompletedProcess[str]:
    """Run the ``runa`` command of this checkout as a person would."""
    return subprocess.run([sys.executable, "-m", "runa", *args], env=env, capture_output=True,
                          text=True, timeout=timeout, check=check)


def wait_for(predicate: Callable[[], object], timeout: float, what: str,
             interval: float = 0.05) -> object:
    """Poll ``predicate`` until it is truthy; fail naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


#: What keeps the semantic tier out of a test's stack (see ``isolated_env``).
WHISPER_OFF = "[components.whisper]\nenabled = false\n"
#: What keeps the memory out of a test's stack (see ``isolated_env``).
ALETHIA_OFF = "[components.alethia]\nenabled = false\n"
#: What keeps the API out of a test's stack (see ``isolated_env``).
THREADWELL_OFF = "[components.threadwell]\nenabled = false\n"


def isolated_env(root: Path, *, whisper: bool = False, alethia: bool = False,
                 threadwell: bool = False) -> dict[str, str]:
    """Environment for ``runa`` processes with every layer and directory under ``root``.

    The stack name is unique, so its bus segments in /dev/shm never meet another test's.
    Its registry disables whisper unless ``whisper``: these stacks have no embedding model,
    so every answer would carry the fail rule's flag and notice; the tests of tier 2 ask for
    it (tests/whisper) and give it a model. alethia is disabled unless ``alethia``: it would
    ask coven for its keys in every stack; the memory's own tests ask for it. threadwell is
    disabled unless ``threadwell``: every stack would listen on the one configured port.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNA_")}
    env.update(
        RUNA_SYSCONFDIR=str(root / "etc"),
        HOME=str(root / "home"),
        XDG_CONFIG_HOME=str(root / "home/.config"),
        XDG_DATA_HOME=str(root / "home/.local/share"),
        XDG_STATE_HOME=str(root / "home/.local/state"),
        XDG_RUNTIME_DIR=str(root / "run"),
        RUNA_STACK=f"t{os.getpid()}x{root.name[-10:]}",
    )
    (root / "run").mkdir(mode=0o700, exist_ok=True)
    off = root / "etc/components.d/10-whisper-off.toml"
    if whisper:
        off.unlink(missing_ok=True)
    else:
        off.parent.mkdir(parents=True, exist_ok=True)
        off.write_text(WHISPER_OFF)
    memory_off = root / "etc/components.d/10-alethia-off.toml"
    if alethia:
        memory_off.unlink(missing_ok=True)
    else:
        memory_off.parent.mkdir(parents=True, exist_ok=True)
        memory_off.write_text(ALETHIA_OFF)
    api_off = root / "etc/components.d/10-threadwell-off.toml"
    if threadwell:
        api_off.unlink(missing_ok=True)
    else:
        api_off.write_text(THREADWELL_OFF)
    return env


def register_component(sysconfdir: Path, name: str, entry: str) -> Path:
    """Add a component as a person would: its entry in ``<sysconfdir>/components.d``."""
    path = sysconfdir / f"components.d/50-{name}.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(entry)
    return path


def register_demo(sysconfdir: Path, extra: str = "") -> Path:
    """The demo daemon, which no shipped file names, registered like any new component."""
    from runa.demo import REGISTRY_ENTRY

    return register_component(sysconfdir, "demo", REGISTRY_ENTRY + extra)


def remove_segments(env: dict[str, str]) -> None:
    for segment in segment_paths(env["RUNA_STACK"]):
        Path(segment).unlink(missing_ok=True)


@contextmanager
def small_filesystem(mount: Path, size: str) -> Iterator[Path]:
    """A real tmpfs of ``size`` on ``mount`` (root only; the test is skipped elsewhere).

    A disk that really fills up; ``mount -o remount,size=…`` frees space again.
    """
    mount.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs",
                           str(mount)], capture_output=True, text=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@contextmanager
def tiny_model_stack(root: Path, settings: dict[str, str], context_length: int = 512
                     ) -> Iterator[tuple[dict[str, str], subprocess.CompletedProcess[str]]]:
    """A stack of its own under ``root`` on a tiny synthetic model, started with ``runa up
    --detach`` (its environment and what ``up`` said), stopped and its segments removed after."""
    from runa.testing.tiny_gguf import write_tiny_gguf

    model = write_tiny_gguf(root / "tiny.gguf", context_length=context_length)
    env = {**isolated_env(root), **settings, "RUNA_SPLINFER_MODEL": str(model)}
    up = runa("up", "--detach", env=env)
    assert up.returncode == 0, up.stderr
    try:
        yield env, up
    finally:
        runa("down", env=env)
        remove_segments(env)


class FakeBus:
    """The part of a bus gilgul reads heartbeats from: keys a test sets by hand."""

    def __init__(self) -> None:
        self.values: dict[str, bytes] = {}

    def get(self, key: str) -> bytes | None:
        return self.values.get(key)

    def close(self) -> None:
        pass
