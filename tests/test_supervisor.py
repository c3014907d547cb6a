"""``runa up | status | down`` under Runa's own supervisor (no systemd involved)."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
from support import runa, wait_for

from runa.supervisor import state as state_file
from runa.testing.tiny_gguf import write_tiny_gguf


@pytest.fixture
def stack_env(runa_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """The isolated environment, serving the tiny synthetic model."""
    model = write_tiny_gguf(tmp_path / "tiny.gguf")
    return {**runa_env, "RUNA_SPLINFER_MODEL": str(model), "RUNA_SPLINFER_CTX_SIZE": "512"}


def status(env: dict[str, str]) -> dict:
    result = runa("status", "--json", env=env)
    return json.loads(result.stdout) | {"rc": result.returncode}


def test_up_detach_status_down(stack_env: dict[str, str]) -> None:
    env = stack_env
    assert status(env)["rc"] == 3

    up = runa("up", "--detach", env=env)
    assert up.returncode == 0, up.stderr
    try:
        current = status(env)
        assert current["rc"] == 0 and current["healthy"]
        assert [c["name"] for c in current["components"]] == ["splinter", "splinfer"]
        assert all(c["state"] == "running" for c in current["components"])
        pids = [c["pid"] for c in current["components"]]
        assert all(state_file.pid_alive(pid) for pid in pids)
        assert runa("up", "--detach", env=env).stdout.startswith("runa: the stack")
    finally:
        down = runa("down", env=env)
    assert down.returncode == 0, down.stderr
    assert not any(state_file.pid_alive(pid) for pid in pids)
    assert status(env)["rc"] == 3


def test_supervisor_kills_a_frozen_component_for_its_watchdog(
        stack_env: dict[str, str]) -> None:
    env = {**stack_env, "RUNA_COMPONENTS_SPLINFER_WATCHDOG_SEC": "1"}
    assert runa("up", "--detach", env=env).returncode == 0
    try:
        pid = status(env)["components"][1]["pid"]
        os.kill(pid, signal.SIGSTOP)
        demo = wait_for(lambda: next((c for c in status(env)["components"]
                                      if c["state"] == "failed"), None), 10,
                        "the supervisor to kill the frozen component")
        assert demo["name"] == "splinfer" and demo["reason"] == "watchdog"
        assert not state_file.pid_alive(pid)
    finally:
        runa("down", env=env)


def test_a_killed_supervisor_leaves_no_orphans(stack_env: dict[str, str]) -> None:
    assert runa("up", "--detach", env=stack_env).returncode == 0
    state = json.loads((Path(stack_env["XDG_RUNTIME_DIR"]) / "runa/supervisor.json").read_text())
    children = [c["pid"] for c in state["components"]]
    os.kill(state["supervisor_pid"], signal.SIGKILL)
    wait_for(lambda: not any(state_file.pid_alive(pid) for pid in children), 10,
             "the orphaned components to exit")
