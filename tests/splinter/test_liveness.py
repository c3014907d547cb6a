"""Is a pid still the process that was recorded: the one rule the bus, the supervisor and
``runa down`` share (pid *and* start time; a zombie or a dying process is not alive)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from runa.splinter.liveness import is_alive, process_start_time
from runa.supervisor import leftovers


def _sleeper() -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])


def test_a_running_process_is_alive_only_with_its_own_start_time() -> None:
    child = _sleeper()
    try:
        start = process_start_time(child.pid)
        assert start is not None and is_alive(child.pid, start)
        assert not is_alive(child.pid, start + 1)  # the pid, reused by another process
    finally:
        child.kill()
        child.wait()
    assert process_start_time(child.pid) is None and not is_alive(child.pid, start)


def test_a_zombie_is_dead_though_its_pid_still_answers_signals() -> None:
    child = _sleeper()
    start = process_start_time(child.pid)
    assert start is not None
    child.kill()
    os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # exited, not yet reaped
    try:
        os.kill(child.pid, 0)  # the pid alone says "exists"
        assert process_start_time(child.pid) is None and not is_alive(child.pid, start)
    finally:
        child.wait()


def _proc_with(tmp_path: Path, pid: int, state: str, start: int) -> Path:
    """A procfs of one process in ``state``: X (dying) lasts too short to catch for real."""
    fields = [state, *["0"] * 18, str(start)]
    (tmp_path / str(pid)).mkdir()
    (tmp_path / str(pid) / "stat").write_text(f"{pid} (a (b) c) {' '.join(fields)} 0 0\n")
    return tmp_path


def test_a_dying_process_is_dead_and_a_sleeping_one_alive(tmp_path: Path) -> None:
    proc = _proc_with(tmp_path, 4242, "X", 777)
    _proc_with(tmp_path, 4343, "S", 888)
    assert process_start_time(4242, proc) is None
    assert process_start_time(4343, proc) == 888


def test_the_supervisor_does_not_take_a_dying_process_for_a_leftover(tmp_path: Path) -> None:
    previous = {"components": [{"name": "splinfer", "pid": 4242, "start_ticks": 777},
                               {"name": "tieto", "pid": 4343, "start_ticks": 888}]}
    proc = _proc_with(tmp_path, 4242, "X", 777)
    _proc_with(tmp_path, 4343, "S", 888)
    assert leftovers.find(previous, proc) == [leftovers.Leftover("tieto", 4343)]
