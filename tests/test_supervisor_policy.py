"""gilgul's policy without systemd: the supervisor makes the decisions gilgul makes under systemd.

The same faults as tests/test_gilgul_systemd.py (SIGKILL, SIGSTOP for the watchdog, the
keeper killed, a component alive but silent, a crash loop), the same configuration, and the
same expected events, reasons, delays and decisions; here the supervisor runs in this process
(driven turn by turn, no threads) over real child processes: keeper, splinfer on the tiny
model, and the demo daemon as the test subject. Events are read from the supervisor's logger
(the journal may not run on this machine; tests/test_audit.py covers reading it back).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from faults import SURVIVOR, write_fault_stack
from support import isolated_env, remove_segments, runa

from runa import log, registry
from runa.components import load_config
from runa.gilgul import Running
from runa.paths import Paths
from runa.splinter.liveness import process_start_time
from runa.supervisor import stack as supervisor_stack
from runa.supervisor.core import Supervisor
from runa.testing.tiny_gguf import write_tiny_gguf


class Capture(logging.Handler):
    """Every structured event the supervisor logs, as a dict of its RUNA_* fields."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[dict[str, object]] = []

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "RUNA_EVENT", None):
            fields = {k: v for k, v in record.__dict__.items() if k.startswith("RUNA_")}
            self.events.append(fields | {"at": time.monotonic()})


class Harness:
    def __init__(self, root: Path, env: dict[str, str], sup: Supervisor,
                 capture: Capture) -> None:
        self.root, self.env, self.sup, self.capture = root, env, sup, capture

    def until(self, predicate: Callable[[], object], timeout: float, what: str) -> object:
        """Run the supervisor's loop until ``predicate`` holds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sup.poll(0.05)
            value = predicate()
            if value:
                return value
        raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")

    def pid(self, name: str) -> int:
        pid = self.sup.child(name).pid
        assert pid
        return pid

    def events(self, component: str, since: float) -> list[dict[str, object]]:
        return [e for e in self.capture.events
                if e["RUNA_COMPONENT"] == component and e["at"] >= since]  # type: ignore[operator]

    def names(self, component: str, since: float) -> list[tuple[str, str]]:
        return [(str(e["RUNA_EVENT"]), str(e.get("RUNA_REASON", "")))
                for e in self.events(component, since)]

    def of(self, component: str, event: str, since: float) -> list[dict[str, object]]:
        return [e for e in self.events(component, since) if e["RUNA_EVENT"] == event]

    def wait_running(self, name: str, since: float, count: int = 1) -> None:
        self.until(lambda: len(self.of(name, "running", since)) >= count, 30,
                   f"{name} to be running again")

    def ask(self) -> int:
        # `runa ask` blocks; the supervisor's loop must keep turning meanwhile.
        import subprocess
        import sys
        process = subprocess.Popen([sys.executable, "-m", "runa", "ask", "--temp", "0", "-n",
                                    "4", "--timeout", "20", "hello"], env=self.env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.until(lambda: process.poll() is not None, 60, "runa ask to finish")
        return process.returncode

    def survivor(self) -> str:
        return runa("bus", "get", SURVIVOR[0], env=self.env).stdout.strip()


@contextlib.contextmanager
def _stack(root: Path) -> Iterator[Harness]:
    write_fault_stack(root)
    env = isolated_env(root) | {"RUNA_SPLINFER_MODEL": str(write_tiny_gguf(root / "tiny.gguf")),
                                "RUNA_LOG_TARGET": "stderr"}
    paths = Paths.for_stack(env["RUNA_STACK"], env)
    config = load_config(paths, env)
    logger = log.setup("supervisor", "info", "stderr")
    capture = Capture()
    logging.getLogger("runa").addHandler(capture)
    sup = supervisor_stack.create(config, paths, env["RUNA_STACK"], env, logger)
    # The supervisor runs in the test process here: keep that process an ordinary one for
    # the rest of the session (a subreaper would keep later tests' orphans as zombies).
    sup.adopt = sup.harden = lambda: None
    try:
        sup.reconcile(None)
        assert sup.start_all(), [c.describe() for c in sup.children]
        yield Harness(root, env, sup, capture)
    finally:
        sup.stop_all()
        logging.getLogger("runa").removeHandler(capture)
        remove_segments(env)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    with _stack(tmp_path_factory.mktemp("sup")) as harness:
        yield harness


def test_the_registry_decides_what_runs_and_runa_ask_answers(stack: Harness) -> None:
    # Every enabled component of the registry but gilgul, in its order; the demo joined
    # through components.d as it would under runa.target.
    expected = [c.name for c in registry.load(stack.root / "etc").watched]
    assert [c.spec.name for c in stack.sup.children] == expected
    assert expected[:2] == ["splinter", "splinfer"] and expected[-1] == "demo"
    assert stack.ask() == 0
    assert runa("bus", "set", *SURVIVOR, env=stack.env).returncode == 0


def test_sigkill_is_restarted_at_once_with_the_next_incarnation(stack: Harness) -> None:
    since = time.monotonic()
    pid = stack.pid("splinfer")
    # The secrets broker's table: the child by pid and start time, the start time its own.
    assert stack.sup.running_children()[pid] == Running("splinfer", process_start_time(pid))
    os.kill(pid, signal.SIGKILL)
    stack.wait_running("splinfer", since)
    assert pid not in stack.sup.running_children()
    assert stack.pid("splinfer") in stack.sup.running_children()
    assert stack.names("splinfer", since)[:3] == [("failed", "signal"), ("restart", "signal"),
                                                  ("running", "")]
    failed, restart = (stack.of("splinfer", e, since)[0] for e in ("failed", "restart"))
    assert failed["RUNA_DELAY_S"] == 0 and failed["RUNA_DECISION"] == "restart"
    assert failed["RUNA_EXIT_STATUS"] == int(signal.SIGKILL)
    assert restart["RUNA_INCARNATION"] == failed["RUNA_INCARNATION"] + 1  # type: ignore[operator]
    # The new process was told its incarnation, as systemd's EnvironmentFile= tells it.
    environ = Path(f"/proc/{stack.pid('splinfer')}/environ").read_bytes().split(b"\0")
    assert f"RUNA_INCARNATION={restart['RUNA_INCARNATION']}".encode() in environ
    assert b"RUNA_RESTART_REASON=signal" in environ
    assert stack.ask() == 0
    assert stack.survivor() == SURVIVOR[1]


def test_sigstop_is_a_watchdog_kill_then_a_backed_off_restart(stack: Harness) -> None:
    since = time.monotonic()
    pid = stack.pid("splinfer")
    os.kill(pid, signal.SIGSTOP)
    stack.wait_running("splinfer", since)
    # The supervisor logs what systemd would log itself (the watchdog), then gilgul's events.
    assert stack.names("splinfer", since)[:4] == [
        ("watchdog", "watchdog"), ("failed", "watchdog"), ("restart", "watchdog"),
        ("running", "")]
    failed = stack.of("splinfer", "failed", since)[0]
    assert failed["RUNA_FAILURES"] == 2 and failed["RUNA_DELAY_S"] == 0.5
    assert stack.ask() == 0
    assert stack.survivor() == SURVIVOR[1]


def test_the_keeper_killed_comes_back_and_the_bus_keeps_its_contents(stack: Harness) -> None:
    since = time.monotonic()
    os.kill(stack.pid("splinter"), signal.SIGKILL)
    stack.wait_running("splinter", since)
    assert stack.names("splinter", since)[:2] == [("failed", "signal"), ("restart", "signal")]
    assert stack.survivor() == SURVIVOR[1]
    assert stack.ask() == 0


def test_a_component_alive_but_silent_is_restarted_for_no_heartbeat(stack: Harness) -> None:
    # A stop by SIGTERM is not a failure (exit 0); `runa up` (SIGHUP) starts it again, and
    # this incarnation stops heartbeating a second after READY while its watchdog carries on.
    mute = stack.root / "etc/conf.d/50-mute.toml"
    mute.parent.mkdir(exist_ok=True)
    mute.write_text("[demo]\nheartbeat_stop_after_s = 1.0\n")
    since = time.monotonic()
    os.kill(stack.pid("demo"), signal.SIGTERM)
    stack.until(lambda: stack.of("demo", "stopped", since), 20, "the demo to stop")
    assert stack.sup.child("demo").state == "exited"
    stack.sup.request_reconcile()
    stack.wait_running("demo", since)
    mute.unlink()
    stack.wait_running("demo", since, count=2)
    assert stack.names("demo", since)[:6] == [
        ("stopped", ""), ("restart", "not-running"), ("running", ""),
        ("no_heartbeat", "no-heartbeat"), ("failed", "no-heartbeat"),
        ("restart", "no-heartbeat")]
    failed = stack.of("demo", "failed", since)[0]
    assert failed["RUNA_DELAY_S"] == 0 and failed["RUNA_DECISION"] == "restart"
    assert stack.survivor() == SURVIVOR[1]


def test_a_crash_loop_backs_off_then_escalates_and_holds(tmp_path: Path) -> None:
    with _stack(tmp_path) as stack:  # a fresh supervisor: a window without earlier failures
        bad = stack.root / "etc/conf.d/50-bad.toml"
        bad.parent.mkdir(exist_ok=True)
        bad.write_text("[demo]\ntick_s = 0\n")  # every new incarnation exits 78 at start
        since = time.monotonic()
        os.kill(stack.pid("demo"), signal.SIGKILL)
        stack.until(lambda: stack.of("demo", "escalated", since), 30, "the escalation")
        failed = stack.of("demo", "failed", since)
        assert [f["RUNA_REASON"] for f in failed] == ["signal", "exit-code", "exit-code",
                                                      "exit-code"]
        assert [f["RUNA_DELAY_S"] for f in failed] == [0, 0.5, 1, 0]
        assert [f["RUNA_DECISION"] for f in failed] == ["restart"] * 3 + ["hold"]
        assert failed[1]["RUNA_EXIT_STATUS"] == 78
        gaps = [b["at"] - a["at"] for a, b in itertools.pairwise(failed)]  # type: ignore[operator]
        assert gaps[1] >= 0.5 and gaps[2] >= 1.0
        escalated = stack.of("demo", "escalated", since)[0]
        assert escalated["RUNA_FAILURES"] == 4 and escalated["RUNA_REASON"] == "exit-code"
        stack.until(lambda: (stack.root / "escalations").exists(), 10, "the policy script")
        assert (stack.root / "escalations").read_text() == \
            f"demo exit-code {escalated['RUNA_INCARNATION']}\n"
        held_at = time.monotonic()
        stack.until(lambda: time.monotonic() - held_at > 1.0, 5, "a second")
        assert stack.sup.child("demo").state == "held"
        # A held child keeps its last, dead process: the broker no longer takes its pid.
        assert stack.pid("demo") not in stack.sup.running_children()
        assert not stack.of("demo", "restart", held_at)
        # A person fixes it and runs `runa up` (SIGHUP): gilgul watches it again.
        bad.unlink()
        stack.sup.request_reconcile()
        stack.until(lambda: stack.sup.child("demo").state == "running", 20, "the demo back")
        assert stack.names("demo", held_at)[-2:] == [("restart", "not-running"), ("running", "")]
