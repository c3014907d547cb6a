"""A benchmark stopped by a signal leaves no process and no bus segment behind (issue 15).

Each bench runs as a person runs it (``python bench/NAME.py --quick``) and is signalled
once what it starts exists; afterwards nothing with its stack name runs and no
``/dev/shm/runa-<its stack>-*`` remains.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from support import remove_segments, wait_for

REPO = Path(__file__).resolve().parents[1]
SHM = Path("/dev/shm")


def start_time(pid: int) -> str | None:
    """The process's start time (field 22 of stat), or None when it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def processes_of(stack: str, bench: int) -> dict[int, tuple[str, str]]:
    """Every process started for ``stack`` (by its environment) or under the bench's pid,
    with its start time (so a reused pid is not mistaken for a leftover) and command."""
    found: dict[int, str] = {}
    parents: dict[int, int] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        pid = int(proc.name)
        try:
            environ = (proc / "environ").read_bytes().split(b"\0")
            parents[pid] = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if f"RUNA_STACK={stack}".encode() in environ:
            found[pid] = start_time(pid) or ""
    descendants, frontier = set(), {bench}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - descendants
        descendants |= frontier
    for pid in descendants:
        found[pid] = start_time(pid) or ""
    return {pid: (started, cmdline(pid)) for pid, started in found.items() if started}


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def still_running(seen: dict[int, tuple[str, str]]) -> list[str]:
    """The processes of ``seen`` still alive (zombies count as gone), with their command."""
    alive = []
    for pid, (started, _command) in seen.items():
        if start_time(pid) != started:
            continue
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.append(f"{pid}: {cmdline(pid)}")
    return alive


def segments(stack: str) -> list[Path]:
    return sorted(SHM.glob(f"runa-{stack}-*"))


def run_and_stop(argv: list[str], signum: signal.Signals, ready: Callable[[str], bool],
                 log: Path, env: dict[str, str] | None = None, startup_s: float = 240,
                 stack_prefix: str = "bench") -> tuple[subprocess.Popen[bytes], str,
                                                       dict[int, tuple[str, str]]]:
    """Start a bench, wait until ``ready(its stack)`` holds, send ``signum``; (the bench,
    its stderr, the processes it had started). Its stack is ``<stack_prefix><its pid>``."""
    with open(log, "wb") as stderr:
        bench = subprocess.Popen([sys.executable, *argv], cwd=REPO,
                                 env=env or dict(os.environ), stdout=subprocess.DEVNULL,
                                 stderr=stderr)
    stack = f"{stack_prefix}{bench.pid}"
    try:
        wait_for(lambda: ready(stack) or bench.poll() is not None, startup_s,
                 f"{argv[0]} to start its stack")
        assert bench.poll() is None, log.read_text()
        seen = processes_of(stack, bench.pid)
        bench.send_signal(signum)
        bench.wait(timeout=180)
    finally:
        if bench.poll() is None:
            bench.kill()
            bench.wait()
    return bench, log.read_text(), seen


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT],
                         ids=lambda signum: signum.name)
def test_the_bus_bench_stopped_by_a_signal_stops_its_daemons_and_removes_its_segments(
        signum: signal.Signals, tmp_path: Path) -> None:
    shm_before = set(SHM.iterdir())

    def idle_stack_up(stack: str) -> bool:
        return bool(segments(stack)) and len(processes_of(stack, -1)) >= 2

    bench, stderr, seen = run_and_stop(["bench/bus.py", "--quick", "--out", "/dev/null"],
                                       signum, idle_stack_up, tmp_path / "stderr",
                                       startup_s=120)
    stack = f"bench{bench.pid}"
    assert len(seen) >= 2, seen  # the keeper and the demo daemon, at least
    assert still_running(seen) == []
    assert segments(stack) == []
    assert [p for p in set(SHM.iterdir()) - shm_before if "bench" in p.name] == []
    assert f"bench/bus.py: stopped by {signum.name}; what it started is cleaned up" in stderr
    assert "Traceback" not in stderr, stderr
    assert bench.returncode == 128 + signum, stderr


@pytest.mark.slow
@pytest.mark.real_model
def test_the_inference_bench_stopped_by_sigterm_takes_its_stack_down(real_model: Path,
                                                                     tmp_path: Path) -> None:
    def stack_running(stack: str) -> bool:
        return bool(segments(stack)) and any(
            "daemon splinfer" in cmdline(pid) for pid in processes_of(stack, -1))

    env = {**os.environ, "RUNA_BENCH_CACHE": str(tmp_path / "cache")}
    bench, stderr, seen = run_and_stop(["bench/inference.py", "--quick", "--model",
                                        str(real_model)], signal.SIGTERM, stack_running,
                                       tmp_path / "stderr", env)
    stack = f"bench{bench.pid}"
    assert still_running(seen) == []
    assert segments(stack) == []
    assert "bench/inference.py: stopped by SIGTERM; what it started is cleaned up" in stderr
    assert "Traceback" not in stderr, stderr
    assert bench.returncode == 128 + signal.SIGTERM, stderr


@pytest.mark.slow
@pytest.mark.real_model
def test_the_contention_bench_stopped_while_generating_ends_and_starts_nothing_more(
        real_model: Path, tmp_path: Path) -> None:
    """SIGTERM while llama.cpp generates: the exception raised in its abort callback (where
    Python would drop it) still ends the bench, before it starts its busy processes."""
    loaded: list[float] = []

    def generating(_stack: str) -> bool:
        """Both engines have mapped the model, and the first condition has run a while."""
        benches = [pid for pid in processes_of("-", os.getpid())
                   if "bench/contention.py" in cmdline(pid)]
        maps = [Path(f"/proc/{pid}/maps") for pid in benches]
        if not loaded and any(str(real_model) in m.read_text() for m in maps if m.exists()):
            loaded.append(time.monotonic())
        return bool(loaded) and time.monotonic() - loaded[0] > 10

    bench, stderr, seen = run_and_stop(["bench/contention.py", "--quick", "--model",
                                        str(real_model)], signal.SIGTERM, generating,
                                       tmp_path / "stderr")
    assert bench.returncode == 128 + signal.SIGTERM, stderr
    assert "bench/contention.py: stopped by SIGTERM; what it started is cleaned up" in stderr
    assert "Traceback" not in stderr, stderr
    assert still_running(seen) == []


def harness_held_by_this_session() -> bool:
    """Whether this process holds the user-manager harness's machine lock (a session fixture
    started one): a bench starting its own would wait for it until the session ends."""
    from runa.testing.usermanager import LOCK_FILE

    try:
        inode = LOCK_FILE.stat().st_ino
    except FileNotFoundError:
        return False
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if "->" not in fields and len(fields) > 5 and fields[1] == "FLOCK" \
                and fields[4] == str(os.getpid()) and fields[5].endswith(f":{inode}"):
            return True
    return False


@pytest.mark.slow
@pytest.mark.real_systemd
def test_the_recovery_bench_stopped_by_sigterm_stops_its_user_manager_and_stack(
        tmp_path: Path) -> None:
    if harness_held_by_this_session():
        pytest.skip("this session's user manager holds the harness the bench needs; run "
                    "this test in a session of its own")
    def stack_running(stack: str) -> bool:
        return bool(segments(stack)) and any(
            "daemon splinfer" in cmdline(pid) for pid in processes_of(stack, -1))

    bench, stderr, seen = run_and_stop(["bench/recovery.py", "--quick"], signal.SIGTERM,
                                       stack_running, tmp_path / "stderr", startup_s=900,
                                       stack_prefix="b")
    stack = f"b{bench.pid}"
    assert any("systemd --user" in command for _, command in seen.values()), seen
    assert still_running(seen) == []
    assert segments(stack) == []
    assert "bench/recovery.py: stopped by SIGTERM; what it started is cleaned up" in stderr
    assert bench.returncode == 128 + signal.SIGTERM, stderr


def test_removing_a_stacks_segments_leaves_another_stack_whose_name_starts_the_same() -> None:
    stack = f"t{os.getpid()}seg"
    other = [SHM / f"runa-{stack}-other-main", SHM / f"runa-{stack}-other-coven"]
    try:
        for remover in ("bench", "tests"):
            mine = [SHM / f"runa-{stack}-{bus}" for bus in ("main", "coven", "alethia")]
            for path in mine + other:
                path.write_bytes(b"")
            if remover == "bench":
                done = subprocess.run([sys.executable, "-c", "import sys, cleanup; "
                                       "cleanup.remove_segments(sys.argv[1])", stack],
                                      cwd=REPO / "bench", capture_output=True, text=True)
                assert done.returncode == 0, done.stderr
            else:
                remove_segments({"RUNA_STACK": stack})
            assert [p.exists() for p in mine + other] == [False] * 3 + [True] * 2, remover
    finally:
        for path in other:
            path.unlink(missing_ok=True)


def test_a_signal_inside_llamas_abort_callback_is_raised_after_it_returns() -> None:
    """Raised inside the ctypes callback, the bench's Terminated would be dropped and the
    callback's garbage result read as "abort": an empty answer the bench then divided by."""
    script = """
import signal, sys, types
import cleanup
from runa.splinfer.engine import Engine, _Watch

frames = []
watch = _Watch(lambda: frames.append(sys._getframe(1)) or False, lambda: None)
assert Engine._on_abort_check(types.SimpleNamespace(_watch=watch), None) is False
stopper = cleanup._Stopper()
signal.signal(signal.SIGALRM, lambda *_: None)
stopper.handle(signal.SIGTERM, frames[0])
print("deferred", signal.getitimer(signal.ITIMER_REAL)[0] > 0)
try:
    stopper.handle_retry(signal.SIGALRM, sys._getframe())
except cleanup.Terminated as stop:
    print("raised", stop.code)
signal.setitimer(signal.ITIMER_REAL, 0)  # as guarded() does on its way out
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO / "bench",
                          env={**os.environ, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["deferred True", f"raised {128 + signal.SIGTERM}"]


@pytest.mark.slow
@pytest.mark.real_model
def test_the_safety_bench_stopped_by_sigterm_mid_generation_removes_its_files(
        real_model: Path, tmp_path: Path) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    log = tmp_path / "stderr"
    out = tmp_path / "safety.json"

    def generating(_stack: str) -> bool:
        return "safety: tier 1: generating" in log.read_text()

    env = {**os.environ, "TMPDIR": str(scratch)}
    bench, stderr, _ = run_and_stop(["bench/safety.py", "--quick", "--model", str(real_model),
                                     "--out", str(out)], signal.SIGTERM, generating, log, env)
    assert "bench/safety.py: stopped by SIGTERM; what it started is cleaned up" in stderr
    assert "Traceback" not in stderr, stderr
    assert bench.returncode == 128 + signal.SIGTERM, stderr
    assert list(scratch.iterdir()) == []  # its policy directories are gone
    assert not out.exists()  # no results from a run cut short
