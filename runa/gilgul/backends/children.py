"""Components as plain child processes: a backend for gilgul's core without systemd (DESIGN §5).

What systemd does for a unit, this does for a child: ``NOTIFY_SOCKET`` (the supervisor's
socket), ``WATCHDOG_USEC`` and its enforcement (SIGABRT, then SIGKILL), the start timeout, the
memory limit, and naming why a process ended with systemd's own ``Result=`` words
(``signal``, ``core-dump``, ``exit-code``, ``watchdog``, ``timeout``, ``oom-kill``). What
gilgul decides about it is the core's (``runa.gilgul.core``), as under systemd.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Protocol

from runa import activation, log
from runa.gilgul.core import Failure, Gilgul
from runa.gilgul.policy import NOT_RUNNING
from runa.splinter.liveness import process_start_time

_PR_SET_PDEATHSIG = 1
# waitid(2) si_code values, which systemd reports as ExecMainCode=
CLD_EXITED, CLD_KILLED, CLD_DUMPED = 1, 2, 3

Preexec = Callable[[], None]


class ChildState(StrEnum):
    """Where a child is in its life; the state file and ``runa status`` show the value."""

    STARTING = "starting"  # spawned, no READY=1 yet
    RUNNING = "running"
    STOPPING = "stopping"  # asked to stop (or said STOPPING=1)
    KILLING = "killing"  # ended by us, not yet gone
    EXITED = "exited"  # exit 0, or stopped on purpose: not a failure, left stopped
    FAILED = "failed"  # a restart is pending
    HELD = "held"  # the policy gave up: started again only by hand
    STOPPED = "stopped"  # not started yet, or stopped with the stack


#: A child in one of these has no process to watch; ``runa up`` starts it again.
DOWN = frozenset({ChildState.EXITED, ChildState.FAILED, ChildState.HELD, ChildState.STOPPED})


class Notice(Protocol):
    """One sd_notify datagram and the pid that sent it."""

    @property
    def pid(self) -> int: ...

    @property
    def fields(self) -> Mapping[str, str]: ...


class Notices(Protocol):
    """The socket children report to (``NOTIFY_SOCKET``)."""

    @property
    def path(self) -> Path: ...

    def receive(self, timeout: float) -> Sequence[Notice]: ...


class MemoryLimits(Protocol):
    """Where a child's memory limit comes from and what it counts (cgroup or rlimit)."""

    def prepare(self, component: str, limit: int | None) -> Preexec | None: ...

    def oom_kills(self, component: str) -> int: ...


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Children get SIGTERM when the supervisor dies, so a killed supervisor leaves no orphans."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


@dataclass(frozen=True)
class ComponentSpec:
    name: str
    argv: Sequence[str]
    watchdog_s: float | None
    start_timeout_s: float
    stop_timeout_s: float = 15.0
    memory_max: int | None = None  # bytes
    listen_port: int | None = None  # bound on loopback here, handed over (socket activation)


def daemon_argv(name: str) -> list[str]:
    """How a component is executed: the same interpreter, ``runa daemon NAME``."""
    return [sys.executable, "-m", "runa", "daemon", name]


@dataclass
class Child:
    spec: ComponentSpec
    process: subprocess.Popen[bytes] | None = None
    state: ChildState = ChildState.STOPPED
    status: str = ""
    reason: str = ""
    incarnation: int = 0
    started_at: float = 0.0
    deadline: float = 0.0
    last_ping: float = 0.0
    exit_code: int | None = None
    start_ticks: int | None = None
    kill_reason: str | None = None  # why we ended it (watchdog, timeout, no-heartbeat)
    oom_kills: int = 0
    history: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def describe(self) -> dict[str, object]:
        return {"name": self.spec.name, "pid": self.pid, "state": str(self.state),
                "status": self.status, "reason": self.reason, "exit_code": self.exit_code,
                "incarnation": self.incarnation, "start_ticks": self.start_ticks}


class ChildProcesses:
    """Runs ``specs`` as children of this process, reporting their lives to ``core``."""

    stack_name = "the stack"
    start_by_hand = "'runa up'"

    def __init__(self, specs: Sequence[ComponentSpec], core: Gilgul, notices: Notices,
                 limits: MemoryLimits, env: Mapping[str, str], logger: logging.Logger,
                 clock: Callable[[], float]) -> None:
        self.children = [Child(spec) for spec in specs]
        self.core = core
        self.notices = notices
        self.limits = limits
        self.env = dict(env)
        self.logger = logger
        self.clock = clock
        self.stopping = False  # the stack is being stopped: what ends now is left stopped
        # Each listening component's sockets, bound at its first start and kept across its
        # restarts (as systemd keeps a .socket unit's), so no connection is refused meanwhile.
        self.listening: dict[str, list[socket.socket]] = {}

    def child(self, name: str) -> Child:
        return next(c for c in self.children if c.spec.name == name)

    # -- the backend the core drives --------------------------------------------------------

    def main_pid(self, component: str) -> int | None:
        child = self.child(component)
        return child.pid if child.state == ChildState.RUNNING else None

    def start(self, component: str, incarnation: int, reason: str) -> bool:
        child = self.child(component)
        if child.process is not None and child.process.poll() is None:
            return True  # already back
        child.incarnation = incarnation
        return self.spawn(child, reason)

    def kill(self, component: str, reason: str) -> None:
        self._end(self.child(component), reason, signal.SIGKILL)

    # -- starting and stopping --------------------------------------------------------------

    def spawn(self, child: Child, reason: str) -> bool:
        """Start ``child``'s process, told its incarnation and why it (re)starts."""
        name = child.spec.name
        env = dict(self.env, NOTIFY_SOCKET=str(self.notices.path),
                   RUNA_INCARNATION=str(child.incarnation))
        if reason:
            env["RUNA_RESTART_REASON"] = reason
        env.pop("WATCHDOG_PID", None)
        if child.spec.watchdog_s:
            env["WATCHDOG_USEC"] = str(int(child.spec.watchdog_s * 1e6))
        else:
            env.pop("WATCHDOG_USEC", None)
        steps: list[Preexec] = [_die_with_parent]
        limit = self.limits.prepare(name, child.spec.memory_max)
        if limit is not None:
            steps.append(limit)
        child.oom_kills = self.limits.oom_kills(name)
        argv = list(child.spec.argv)
        try:
            if child.spec.listen_port is not None:
                # The sockets go over as fds 3, 4, …: moved there before exec, and kept open
                # because only they are inheritable (PEP 446), so nothing else is closed for it.
                argv, env, move = activation.handing_over(self._sockets(child), argv, env)
                steps.append(move)
            child.process = subprocess.Popen(
                argv, env=env, close_fds=child.spec.listen_port is None,
                preexec_fn=lambda: [step() for step in steps])
        except OSError as error:
            log.event(self.logger, "start_refused", f"could not start {name}: {error}",
                      level=logging.ERROR, component=name, reason="start-refused")
            child.process, child.state = None, ChildState.FAILED
            return False
        now = self.clock()
        child.state, child.status, child.reason, child.exit_code = \
            ChildState.STARTING, "", "", None
        child.kill_reason = None
        child.start_ticks = process_start_time(child.process.pid)
        child.started_at = child.last_ping = now
        child.deadline = now + child.spec.start_timeout_s
        return True

    def _sockets(self, child: Child) -> list[socket.socket]:
        name, port = child.spec.name, child.spec.listen_port
        assert port is not None
        if name not in self.listening:
            self.listening[name] = activation.bind_loopback(port)
        return self.listening[name]

    def close_sockets(self) -> None:
        """Stop listening for every component (the stack is down)."""
        for sockets in self.listening.values():
            for sock in sockets:
                sock.close()
        self.listening.clear()

    def start_stopped(self) -> bool:
        """Ask the core to start every child that is down (held, exited, failed), in order."""
        started = False
        for child in self.children:
            if child.state in DOWN:
                self.core.request(child.spec.name, NOT_RUNNING)
                started = True
        return started

    def stop_all(self) -> None:
        """SIGTERM (and SIGCONT) to every child, newest first; SIGKILL after its stop timeout."""
        self.stopping = True
        for child in reversed(self.children):
            if child.process and child.process.poll() is None:
                child.state = ChildState.STOPPING
                _signal(child.process, signal.SIGTERM)
                _signal(child.process, signal.SIGCONT)
        now = self.clock()
        for child in reversed(self.children):
            if child.process is None:
                continue
            how, was_running = "asked to stop", child.state == ChildState.STOPPING
            try:
                child.process.wait(max(0.0, now + child.spec.stop_timeout_s - self.clock()))
            except subprocess.TimeoutExpired:
                child.process.kill()
                child.process.wait()
                child.reason = how = "killed after stop timeout"
            child.exit_code = child.process.returncode
            child.state = ChildState.STOPPED
            if not was_running:
                continue  # its end is logged already
            self.core.stopped(child.spec.name, f"stopped with the stack ({how})",
                              incarnation=child.incarnation, main_pid=child.process.pid)
        self.close_sockets()

    # -- what the children tell us ----------------------------------------------------------

    def poll(self, timeout: float) -> bool:
        """Take the notifications of ``timeout`` seconds, then look at every child.

        True when a child's state changed.
        """
        changed = False
        for note in self.notices.receive(timeout):
            child = next((c for c in self.children if c.pid == note.pid), None)
            if child is not None:
                changed |= self._apply(child, note.fields)
        now = self.clock()
        for child in self.children:
            changed |= self._check(child, now)
        return changed

    def _apply(self, child: Child, fields: Mapping[str, str]) -> bool:
        now = self.clock()
        child.last_ping = now if "WATCHDOG" in fields else child.last_ping
        if "STATUS" in fields:
            child.status = fields["STATUS"]
        if "EXTEND_TIMEOUT_USEC" in fields and child.state == ChildState.STARTING:
            extend = int(fields["EXTEND_TIMEOUT_USEC"]) / 1e6
            child.deadline = max(child.deadline, now + extend)
        if fields.get("READY") == "1" and child.state == ChildState.STARTING:
            child.state, child.last_ping = ChildState.RUNNING, now
            self.core.running(child.spec.name, child.pid or 0)
            return True
        if fields.get("STOPPING") == "1" and child.state == ChildState.RUNNING:
            child.state = ChildState.STOPPING
        return "STATUS" in fields or "STOPPING" in fields

    def _check(self, child: Child, now: float) -> bool:
        process = child.process
        if process is None or child.state in DOWN:
            return False
        ended = _ended(process)
        if ended is not None:
            self._ended(child, *ended)
            return True
        if child.state == ChildState.KILLING and now > child.deadline:
            # It did not die of the first signal (TimeoutAbortSec=/TimeoutStopSec= passed).
            process.kill()
            child.deadline = float("inf")
            return False
        if child.state == ChildState.STARTING and now > child.deadline:
            self._kill(child, "timeout", signal.SIGTERM, "did not report READY in time")
            return True
        watchdog = child.spec.watchdog_s
        if child.state == ChildState.RUNNING and watchdog and now - child.last_ping > watchdog:
            self._kill(child, "watchdog", signal.SIGABRT,
                       f"no watchdog ping for {now - child.last_ping:.1f} s")
            return True
        return False

    def _ended(self, child: Child, code: int, status: int) -> None:
        """The child's process is gone: a deliberate stop, or a failure for the core."""
        assert child.process is not None
        name = child.spec.name
        child.exit_code = child.process.returncode
        expected = child.state == ChildState.STOPPING or self.stopping
        if child.kill_reason is not None:
            reason = child.kill_reason
        elif code == CLD_EXITED:
            reason = "exit-code" if status else "success"
        elif status == signal.SIGKILL and self.limits.oom_kills(name) > child.oom_kills:
            reason = "oom-kill"
        else:
            reason = "core-dump" if code == CLD_DUMPED else "signal"
        child.reason = reason
        if expected or reason == "success":
            # Exit 0 or asked to stop: inactive, not failed, as systemd sees it; left stopped.
            child.state = ChildState.EXITED
            self.core.stopped(name, f"exited ({describe(code, status)}): not a failure, left "
                              "stopped", incarnation=child.incarnation)
            return
        decision = self.core.failed(name, Failure(reason, describe(code, status), code, status,
                                                  child.pid))
        held = decision is not None and decision.restart_in is None
        child.state = ChildState.HELD if held else ChildState.FAILED

    def _kill(self, child: Child, reason: str, signum: signal.Signals, why: str) -> None:
        """What systemd would log and do when a unit misses its watchdog or start timeout."""
        name = child.spec.name
        log.event(self.logger, reason, f"{name} (pid {child.pid}): {why}; sending {signum.name}",
                  level=logging.WARNING, component=name, reason=reason,
                  incarnation=child.incarnation, main_pid=child.pid)
        self._end(child, reason, signum)

    def _end(self, child: Child, reason: str, signum: signal.Signals) -> None:
        """End a child the way systemd would: ``signum`` plus SIGCONT, SIGKILL if it lingers."""
        assert child.process is not None
        child.kill_reason = reason
        child.state = ChildState.KILLING
        child.deadline = (float("inf") if signum == signal.SIGKILL
                          else self.clock() + child.spec.stop_timeout_s)
        _signal(child.process, signum)
        if signum != signal.SIGKILL:
            _signal(child.process, signal.SIGCONT)  # a stopped process must hear it


def _ended(process: subprocess.Popen[bytes]) -> tuple[int, int] | None:
    """(si_code, status) once the process has ended, reaping it; None while it runs.

    ``waitid(WNOWAIT)`` first, because only it tells a core dump from a plain kill; then
    ``Popen`` reaps as usual and keeps its ``returncode``.
    """
    if process.returncode is not None:
        code = process.returncode
        return (CLD_EXITED, code) if code >= 0 else (CLD_KILLED, -code)
    try:
        info = os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        info = None
    if info is None:
        return None
    process.wait()
    return info.si_code, info.si_status


def start_failure(child: Child) -> str:
    """Why ``child`` did not become ready: how it ended, and what it said (``STATUS=failed:``).

    The service base reports a refused start as ``STATUS=failed: <the error>``, so the
    person sees the component's own reason (a missing model and how to get one), not only
    an exit status.
    """
    name, process = child.spec.name, child.process
    reason = child.kill_reason or child.reason
    if reason == "timeout":
        how = f"did not report READY within {child.spec.start_timeout_s:g} s"
    elif process is None or process.returncode is None:
        how = "did not become ready"
    elif process.returncode >= 0:
        how = f"exited with status {process.returncode} before it was ready"
    else:
        how = f"was {describe(CLD_KILLED, -process.returncode)} before it was ready"
    said = child.status
    if said.startswith("failed: "):
        return f"{name} {how}: {said.removeprefix('failed: ')}"
    return f"{name} {how}" + (f" (its last status: {said})" if said else "")


def describe(code: int, status: int) -> str:
    """How a process ended, in words: ``exit status 78``, ``killed by SIGKILL``."""
    if code == CLD_EXITED:
        return f"exit status {status}"
    name = signal.Signals(status).name if status in signal.Signals._value2member_map_ else status
    return f"{'dumped core on' if code == CLD_DUMPED else 'killed by'} {name}"


def _signal(process: subprocess.Popen[bytes], signum: signal.Signals) -> None:
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signum)
