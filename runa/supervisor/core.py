"""The supervisor loop: start children, track their sd_notify state, enforce watchdogs.

Restart policy belongs to gilgul (DESIGN §5); until it lands here, a component that
fails is reported in the state file and the journal and left stopped.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from runa import log
from runa.supervisor import state as state_file
from runa.supervisor.notify import NotifyListener

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Children get SIGTERM when the supervisor dies, so a killed supervisor leaves no orphans."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


@dataclass(frozen=True)
class ComponentSpec:
    name: str
    argv: Sequence[str]
    watchdog_s: float | None
    start_timeout_s: float


def daemon_argv(name: str) -> list[str]:
    """How a component is executed: the same interpreter, ``runa daemon NAME``."""
    return [sys.executable, "-m", "runa", "daemon", name]


@dataclass
class Child:
    spec: ComponentSpec
    process: subprocess.Popen[bytes] | None = None
    state: str = "stopped"  # starting, running, stopping, exited, failed
    status: str = ""
    reason: str = ""
    started_at: float = 0.0
    deadline: float = 0.0
    last_ping: float = 0.0
    exit_code: int | None = None
    history: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def describe(self) -> dict[str, object]:
        return {"name": self.spec.name, "pid": self.pid, "state": self.state,
                "status": self.status, "reason": self.reason, "exit_code": self.exit_code}


class Supervisor:
    """Runs ``specs`` as children until asked to stop; writes ``state_path`` on every change."""

    def __init__(
        self,
        specs: Sequence[ComponentSpec],
        runtime_dir: Path,
        logger: logging.Logger,
        env: Mapping[str, str],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.children = [Child(spec) for spec in specs]
        self.runtime_dir = runtime_dir
        self.state_path = runtime_dir / "supervisor.json"
        self.logger = logger
        self.env = dict(env)
        self.clock = clock
        self.stopping = False
        self.listener = NotifyListener(runtime_dir / "notify.sock")

    # -- life cycle -------------------------------------------------------------------------

    def request_stop(self, signum: int | None = None, _frame: object = None) -> None:
        self.stopping = True

    def start_all(self, timeout: float) -> bool:
        """Start the children in order, each once the one before is ready (like After=).

        False as soon as one fails to become ready within ``timeout`` seconds.
        """
        for child in self.children:
            self._spawn(child)
            self._save()
            if not self._wait_ready([child], timeout):
                return False
        return True

    def _spawn(self, child: Child) -> None:
        env = dict(self.env, NOTIFY_SOCKET=str(self.listener.path))
        env.pop("WATCHDOG_PID", None)
        if child.spec.watchdog_s:
            env["WATCHDOG_USEC"] = str(int(child.spec.watchdog_s * 1e6))
        else:
            env.pop("WATCHDOG_USEC", None)
        child.process = subprocess.Popen(child.spec.argv, env=env, preexec_fn=_die_with_parent)
        now = self.clock()
        child.state, child.status, child.reason, child.exit_code = "starting", "", "", None
        child.started_at = child.last_ping = now
        child.deadline = now + child.spec.start_timeout_s
        log.event(self.logger, "spawned", f"{child.spec.name} started as pid {child.pid}",
                  unit=child.spec.name, main_pid=child.pid)

    def _wait_ready(self, children: Sequence[Child], timeout: float) -> bool:
        end = self.clock() + timeout
        while self.clock() < end and not self.stopping:
            self.poll(0.05)
            if any(c.state in ("failed", "exited") for c in children):
                return False
            if all(c.state == "running" for c in children):
                return True
        return False

    def run(self) -> int:
        """Supervise until SIGTERM/SIGINT; then stop every child. Returns the exit status."""
        while not self.stopping:
            self.poll(0.5)
        self.stop_all()
        return 0

    def stop_all(self, grace: float = 10.0) -> None:
        for child in self.children:
            if child.process and child.process.poll() is None:
                child.state = "stopping"
                child.process.send_signal(signal.SIGTERM)
        end = self.clock() + grace
        for child in self.children:
            if child.process is None:
                continue
            try:
                child.process.wait(max(0.0, end - self.clock()))
            except subprocess.TimeoutExpired:
                child.process.kill()
                child.process.wait()
                child.reason = "killed after stop timeout"
            child.exit_code = child.process.returncode
            child.state = "stopped"
        self._save(running=False)
        self.listener.close()

    # -- one turn of the loop ---------------------------------------------------------------

    def poll(self, timeout: float) -> None:
        changed = False
        for note in self.listener.receive(timeout):
            child = next((c for c in self.children if c.pid == note.pid), None)
            if child is not None:
                changed |= self._apply(child, note.fields)
        now = self.clock()
        for child in self.children:
            changed |= self._check(child, now)
        if changed:
            self._save()

    def _apply(self, child: Child, fields: Mapping[str, str]) -> bool:
        now = self.clock()
        child.last_ping = now if "WATCHDOG" in fields else child.last_ping
        if "STATUS" in fields:
            child.status = fields["STATUS"]
        if "EXTEND_TIMEOUT_USEC" in fields and child.state == "starting":
            extend = int(fields["EXTEND_TIMEOUT_USEC"]) / 1e6
            child.deadline = max(child.deadline, now + extend)
        if fields.get("READY") == "1" and child.state == "starting":
            child.state, child.last_ping = "running", now
            log.event(self.logger, "ready", f"{child.spec.name} is ready",
                      unit=child.spec.name, main_pid=child.pid)
            return True
        if fields.get("STOPPING") == "1":
            child.state = "stopping"
        return "STATUS" in fields or "STOPPING" in fields

    def _check(self, child: Child, now: float) -> bool:
        process = child.process
        if process is None or child.state in ("exited", "failed", "stopped"):
            return False
        code = process.poll()
        if code is not None:
            child.exit_code = code
            expected = child.state == "stopping" or self.stopping
            child.state = "exited" if expected or code == 0 else "failed"
            child.reason = child.reason or _exit_reason(code)
            log.event(self.logger, "exited", f"{child.spec.name} exited: {child.reason}",
                      level=logging.INFO if expected else logging.WARNING,
                      unit=child.spec.name, reason=child.reason)
            return True
        if child.state == "starting" and now > child.deadline:
            self._kill(child, "start timeout", signal.SIGTERM)
            return True
        watchdog = child.spec.watchdog_s
        if child.state == "running" and watchdog and now - child.last_ping > watchdog:
            self._kill(child, "watchdog", signal.SIGABRT)
            return True
        return False

    def _kill(self, child: Child, reason: str, signum: signal.Signals) -> None:
        assert child.process is not None
        log.event(self.logger, reason.replace(" ", "_"),
                  f"{child.spec.name}: {reason}, sending {signum.name}",
                  level=logging.WARNING, unit=child.spec.name, reason=reason)
        child.reason = reason
        child.process.send_signal(signum)
        if signum != signal.SIGKILL:
            # SIGSTOPped processes never handle SIGABRT/SIGTERM; SIGKILL always lands.
            try:
                child.process.wait(1.0)
            except subprocess.TimeoutExpired:
                child.process.kill()
        child.state = "failed"
        child.exit_code = child.process.wait()

    def _save(self, running: bool = True) -> None:
        state_file.write_atomically(self.state_path, {
            "supervisor_pid": os.getpid() if running else None,
            "updated": time.time(),
            "components": [child.describe() for child in self.children],
        })


def _exit_reason(code: int) -> str:
    if code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exit status {code}"
