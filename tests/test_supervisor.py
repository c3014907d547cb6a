"""``runa up | status | down`` under Runa's own supervisor (no systemd involved)."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
from pathlib import Path

import pytest
from support import runa, wait_for

from runa import registry
from runa.splinter.liveness import process_start_time
from runa.supervisor.limits import CgroupLayout, MemoryLimiter, find_layout
from runa.testing.tiny_gguf import write_tiny_gguf


@pytest.fixture
def stack_env(runa_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """The isolated environment, serving the tiny synthetic model."""
    model = write_tiny_gguf(tmp_path / "tiny.gguf")
    return {**runa_env, "RUNA_SPLINFER_MODEL": str(model), "RUNA_SPLINFER_CTX_SIZE": "512",
            "RUNA_LOG_TARGET": "stderr"}


def running(pid: int) -> bool:
    """Whether ``pid`` is a process that has not exited (a zombie has)."""
    return process_start_time(pid) is not None


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
        assert [c["name"] for c in current["components"]] == [
            c.name for c in registry.load(Path(env["RUNA_SYSCONFDIR"])).watched]
        assert all(c["state"] == "running" for c in current["components"])
        pids = [c["pid"] for c in current["components"]]
        assert all(running(pid) for pid in pids)
        assert runa("up", "--detach", env=env).stdout.startswith("runa: the stack")
        # Another stack's commands leave this one alone and say why.
        other = {**env, "RUNA_STACK": "other"}
        refused = runa("up", "--detach", env=other)
        assert refused.returncode == 69 and f"runs the stack {env['RUNA_STACK']}" in \
            refused.stderr and "one stack per user" in refused.stderr
        assert "is not running (this user's supervisor runs" in runa("down", env=other).stdout
        assert status(other)["rc"] == 3
        assert status(env)["healthy"] and all(running(pid) for pid in pids)
    finally:
        down = runa("down", env=env)
    assert down.returncode == 0, down.stderr
    assert not any(running(pid) for pid in pids)
    assert status(env)["rc"] == 3


def test_a_frozen_component_is_killed_for_its_watchdog_and_comes_back(
        stack_env: dict[str, str]) -> None:
    env = {**stack_env, "RUNA_COMPONENTS_SPLINFER_WATCHDOG_SEC": "1"}
    assert runa("up", "--detach", env=env).returncode == 0
    try:
        pid = component(env, "splinfer")["pid"]
        os.kill(pid, signal.SIGSTOP)
        back = wait_for(lambda: (c := component(env, "splinfer"))["pid"] != pid
                        and c["state"] == "running" and c, 15,
                        "the supervisor to replace the frozen component")
        assert back["incarnation"] == 1 and not running(pid)  # type: ignore[index]
        assert runa("ask", "--temp", "0", "-n", "2", "hi", env=env).returncode == 0
    finally:
        runa("down", env=env)


def component(env: dict[str, str], name: str) -> dict:
    return next(c for c in status(env)["components"] if c["name"] == name)


def test_a_killed_supervisor_leaves_no_orphans_and_the_next_up_reconciles(
        stack_env: dict[str, str]) -> None:
    env = stack_env
    assert runa("up", "--detach", env=env).returncode == 0
    state_path = Path(env["XDG_RUNTIME_DIR"]) / "runa/supervisor.json"
    state = json.loads(state_path.read_text())
    assert runa("bus", "set", "test:survivor", "still here", env=env).returncode == 0
    children = {c["name"]: c["pid"] for c in state["components"]}
    # A stopped child cannot act on the SIGTERM its supervisor's death sends: it lingers.
    os.kill(children["splinfer"], signal.SIGSTOP)
    os.kill(state["supervisor_pid"], signal.SIGKILL)
    wait_for(lambda: not any(running(pid) for name, pid in children.items()
                             if name != "splinfer"), 10, "the orphaned components to exit")
    assert running(children["splinfer"])
    assert status(env)["rc"] == 3
    up = runa("up", "--detach", env=env)
    assert up.returncode == 0, up.stderr
    try:
        assert not running(children["splinfer"])  # ended, not adopted
        current = status(env)
        assert current["healthy"]
        assert all(c["pid"] not in children.values() for c in current["components"])
        assert runa("bus", "get", "test:survivor", env=env).stdout.strip() == "still here"
        log_text = (state_path.parent / "supervisor.log").read_text()
        assert "RUNA_CLEANED=" in log_text and "splinfer" in log_text.split("RUNA_CLEANED=")[1]
    finally:
        runa("down", env=env)


def test_memory_limits_use_a_cgroup_where_one_is_writable(stack_env: dict[str, str]) -> None:
    env = {**stack_env, "RUNA_COMPONENTS_SPLINFER_MEMORY_MAX": "300M"}
    if not isinstance(find_layout(env["RUNA_STACK"]), CgroupLayout):
        pytest.skip("no writable memory cgroup here (the RLIMIT_DATA test covers this)")
    assert runa("up", "--detach", env=env).returncode == 0
    try:
        assert status(env)["memory_limits"] == "cgroup"
        pid = component(env, "splinfer")["pid"]
        line = next(x for x in Path(f"/proc/{pid}/cgroup").read_text().splitlines()
                    if ":memory:" in x or x.startswith("0::"))
        group = line.split(":", 2)[2]
        assert group.endswith(f"/runa-{env['RUNA_STACK']}/splinfer")
        root = Path("/sys/fs/cgroup/memory") if ":memory:" in line else Path("/sys/fs/cgroup")
        limit_file = "memory.limit_in_bytes" if ":memory:" in line else "memory.max"
        assert int((root / group.lstrip("/") / limit_file).read_text()) == 300 << 20
    finally:
        runa("down", env=env)
    assert not (root / group.lstrip("/")).exists()  # removed with the stack


def test_without_a_writable_cgroup_rlimit_data_applies_with_a_warning(tmp_path: Path) -> None:
    proc_cgroup = tmp_path / "cgroup"
    proc_cgroup.write_text("0::/some/where\n")
    layout = find_layout("x", proc_cgroup, cgroup_root=tmp_path / "nothing-mounted")
    assert isinstance(layout, str) and "no memory cgroup" in layout
    records: list[logging.LogRecord] = []
    logger = logging.getLogger("test.limits")
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger.addHandler(handler)
    limiter = MemoryLimiter(layout, logger)
    step = limiter.prepare("splinfer", 300 << 20)
    assert step is not None and limiter.mode == "rlimit"
    assert records[0].levelno == logging.WARNING and "RLIMIT_DATA" in records[0].getMessage()
    limiter.prepare("splinter", 100 << 20)
    assert len(records) == 1  # warned once
    child = subprocess.Popen(["sleep", "5"], preexec_fn=step)
    try:
        limits = Path(f"/proc/{child.pid}/limits").read_text()
        data = next(x for x in limits.splitlines() if x.startswith("Max data size"))
        assert data.split()[3:5] == [str(300 << 20)] * 2
    finally:
        child.kill()
        child.wait()
