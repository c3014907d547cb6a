"""The supervisor loop: children, their sd_notify state, watchdogs, and gilgul's policy.

This is gilgul without systemd (DESIGN §5). What systemd does for a unit, the loop does for
a child: ``NOTIFY_SOCKET``, ``WATCHDOG_USEC`` and its enforcement (SIGABRT, then SIGKILL),
the start timeout, the memory limit, and naming why a process ended with systemd's own
``Result=`` words (``signal``, ``core-dump``, ``exit-code``, ``watchdog``, ``timeout``,
``oom-kill``). What gilgul does under systemd, it does with the same code: the failure goes
to ``runa.gilgul.policy`` (restart now, after a backoff, or escalate and hold), heartbeats are
judged by ``runa.gilgul.health``, incarnations are counted in ``runa.gilgul.incarnation``'s
files, escalation runs ``runa.gilgul.hook``, and the journal gets the same events
(``failed``, ``restart``, ``running``, ``no_heartbeat``, ``escalated``, ``reconciled``) with
the same fields, under ``SYSLOG_IDENTIFIER=runa-supervisor``.
"""

from __future__ import annotations

import contextlib
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
from runa import stackbus as bus_mod
from runa.gilgul import events, health
from runa.gilgul.hook import PolicyHook
from runa.gilgul.incarnation import IncarnationFiles
from runa.gilgul.policy import NO_HEARTBEAT, NOT_RUNNING, Policy
from runa.splinter import Bus
from runa.splinter.liveness import process_start_time
from runa.supervisor import leftovers
from runa.supervisor import state as state_file
from runa.supervisor.limits import MemoryLimiter, Preexec
from runa.supervisor.lock import SupervisorLock
from runa.supervisor.notify import NotifyListener

_PR_SET_PDEATHSIG = 1
# waitid(2) si_code values, which systemd reports as ExecMainCode=
CLD_EXITED, CLD_KILLED, CLD_DUMPED = 1, 2, 3


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


def daemon_argv(name: str) -> list[str]:
    """How a component is executed: the same interpreter, ``runa daemon NAME``."""
    return [sys.executable, "-m", "runa", "daemon", name]


@dataclass
class Child:
    spec: ComponentSpec
    process: subprocess.Popen[bytes] | None = None
    # starting, running, stopping, killing (ended by us, not yet gone), exited (cleanly),
    # failed (a restart is pending), held (the policy gave up), stopped (by runa down)
    state: str = "stopped"
    status: str = ""
    reason: str = ""
    incarnation: int = 0
    started_at: float = 0.0
    deadline: float = 0.0
    last_ping: float = 0.0
    exit_code: int | None = None
    start_ticks: int | None = None
    kill_reason: str | None = None  # why we ended it (watchdog, timeout, no-heartbeat)
    restart_issued: float | None = None
    oom_kills: int = 0
    history: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def describe(self) -> dict[str, object]:
        return {"name": self.spec.name, "pid": self.pid, "state": self.state,
                "status": self.status, "reason": self.reason, "exit_code": self.exit_code,
                "incarnation": self.incarnation, "start_ticks": self.start_ticks}


@dataclass
class Gilgul:
    """gilgul's parts the supervisor shares with gilgul under systemd."""

    policy: Policy
    heartbeats: health.HeartbeatWatch
    incarnations: IncarnationFiles
    hook: PolicyHook
    heartbeat_interval_s: float = 1.0


class Supervisor:
    """Runs ``specs`` as children until asked to stop; writes ``state_path`` on every change."""

    def __init__(
        self,
        specs: Sequence[ComponentSpec],
        runtime_dir: Path,
        logger: logging.Logger,
        env: Mapping[str, str],
        gilgul: Gilgul,
        *,
        limiter: MemoryLimiter,
        open_bus: Callable[[], Bus | None] = lambda: None,
        stack: str = "",
        lock: SupervisorLock | None = None,
        clock: Callable[[], float] = time.monotonic,
        clock_ns: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        """``lock``, when given, is held for this supervisor and released by stop_all."""
        self.children = [Child(spec) for spec in specs]
        self.runtime_dir = runtime_dir
        self.state_path = runtime_dir / "supervisor.json"
        self.logger = logger
        self.env = dict(env)
        self.gilgul = gilgul
        self.policy = gilgul.policy
        self.limiter = limiter
        self.open_bus = open_bus
        self.stack = stack
        self.clock = clock
        self.clock_ns = clock_ns
        self.lock = lock
        self.stopping = False
        self.starting = True  # until start_all is done; reconcile requests wait for it
        self.failure = ""  # why the start failed, in the components' own words
        self.reconcile_requested = False
        self.bus: Bus | None = None
        self._next_beat_check = 0.0
        self.listener = NotifyListener(runtime_dir / "notify.sock")

    def child(self, name: str) -> Child:
        return next(c for c in self.children if c.spec.name == name)

    # -- life cycle -------------------------------------------------------------------------

    def request_stop(self, signum: int | None = None, _frame: object = None) -> None:
        self.stopping = True

    def request_reconcile(self, signum: int | None = None, _frame: object = None) -> None:
        """SIGHUP (a second ``runa up``): start what is stopped or held, as systemctl would."""
        self.reconcile_requested = True

    def reconcile(self, previous: Mapping[str, object] | None) -> list[str]:
        """Before the first start: end what an earlier, killed supervisor left running.

        Returns the components whose processes were found (and ended).
        """
        found = leftovers.find(previous)
        grace = max((c.spec.stop_timeout_s for c in self.children), default=10.0)
        killed = leftovers.end(found, grace, self.clock)
        names = [item.name for item in found]
        for child in self.children:
            self.policy.seed(child.spec.name, self.gilgul.incarnations.read(child.spec.name))
            child.incarnation = self.policy.incarnation(child.spec.name)
        log.event(self.logger, "reconciled",
                  "reconciled: " + (f"ended the earlier supervisor's {', '.join(names)}"
                                    + (f" (killed {', '.join(killed)})" if killed else "")
                                    if names else "nothing left over")
                  + f"; starting {', '.join(c.spec.name for c in self.children)}",
                  running="", queued="", starting=",".join(c.spec.name for c in self.children),
                  cleaned=",".join(names), killed=",".join(killed), stack=self.stack)
        return names

    def start_all(self) -> bool:
        """Start the children in order, each once the one before is ready (like After=).

        False as soon as one fails to become ready (its start timeout, extended by
        ``EXTEND_TIMEOUT_USEC=``, bounds the wait) or a stop is requested.
        """
        for child in self.children:
            self._spawn(child, reason="")
            self._save()
            if not self._wait_ready(child):
                self.failure = "; ".join(_start_failure(c) for c in self.children
                                         if c.process is not None and c.state != "running")
                return False
        self.starting = False
        self._save()
        return True

    def _spawn(self, child: Child, reason: str) -> bool:
        name = child.spec.name
        env = dict(self.env, NOTIFY_SOCKET=str(self.listener.path),
                   RUNA_INCARNATION=str(child.incarnation))
        if reason:
            env["RUNA_RESTART_REASON"] = reason
        env.pop("WATCHDOG_PID", None)
        if child.spec.watchdog_s:
            env["WATCHDOG_USEC"] = str(int(child.spec.watchdog_s * 1e6))
        else:
            env.pop("WATCHDOG_USEC", None)
        steps: list[Preexec] = [_die_with_parent]
        limit = self.limiter.prepare(name, child.spec.memory_max)
        if limit is not None:
            steps.append(limit)
        child.oom_kills = self.limiter.oom_kills(name)
        try:
            child.process = subprocess.Popen(child.spec.argv, env=env,
                                             preexec_fn=lambda: [step() for step in steps])
        except OSError as error:
            log.event(self.logger, "start_refused", f"could not start {name}: {error}",
                      level=logging.ERROR, component=name, reason="start-refused")
            child.process, child.state = None, "failed"
            self.policy.failed(name, "start-refused")
            return False
        now = self.clock()
        child.state, child.status, child.reason, child.exit_code = "starting", "", "", None
        child.kill_reason = None
        child.start_ticks = process_start_time(child.process.pid)
        child.started_at = child.last_ping = now
        child.deadline = now + child.spec.start_timeout_s
        return True

    def _wait_ready(self, child: Child) -> bool:
        while not self.stopping:
            self.poll(0.05)
            if child.state == "running":
                return True
            if child.state != "starting":
                return False
        return False

    def run(self) -> int:
        """Supervise until SIGTERM/SIGINT; then stop every child. Returns the exit status."""
        while not self.stopping:
            self.poll(0.5)
        self.stop_all()
        return 0

    def stop_all(self) -> None:
        """SIGTERM (and SIGCONT) to every child, newest first; SIGKILL after its stop timeout."""
        self.stopping = True
        for child in reversed(self.children):
            if child.process and child.process.poll() is None:
                child.state = "stopping"
                _signal(child.process, signal.SIGTERM)
                _signal(child.process, signal.SIGCONT)
        now = self.clock()
        for child in reversed(self.children):
            if child.process is None:
                continue
            how, was_running = "asked to stop", child.state == "stopping"
            try:
                child.process.wait(max(0.0, now + child.spec.stop_timeout_s - self.clock()))
            except subprocess.TimeoutExpired:
                child.process.kill()
                child.process.wait()
                child.reason = how = "killed after stop timeout"
            child.exit_code = child.process.returncode
            child.state = "stopped"
            if not was_running:
                continue  # its end is logged already
            log.event(self.logger, "stopped", f"{child.spec.name} stopped with the stack "
                      f"({how})", component=child.spec.name, incarnation=child.incarnation,
                      main_pid=child.process.pid)
        self._save(running=False)
        self.listener.close()
        self.limiter.cleanup()
        if self.bus is not None:
            self.bus.close()
            self.bus = None
        if self.lock is not None:
            self.lock.release()

    # -- one turn of the loop ---------------------------------------------------------------

    def poll(self, timeout: float) -> None:
        now = self.clock()
        due = self.policy.next_due()
        wait = min(timeout, max(0.0, self._next_beat_check - now))
        if due is not None:
            wait = min(wait, max(0.0, due - now))
        changed = False
        for note in self.listener.receive(wait):
            child = next((c for c in self.children if c.pid == note.pid), None)
            if child is not None:
                changed |= self._apply(child, note.fields)
        now = self.clock()
        for child in self.children:
            changed |= self._check(child, now)
        if self.reconcile_requested and not self.starting:
            self.reconcile_requested = False
            changed |= self._start_stopped()
        for name, reason in self.policy.due():
            if self.stopping:
                self.policy.running(name)
            else:
                self.restart(name, reason)
                changed = True
        if self.clock() >= self._next_beat_check:
            self._next_beat_check = self.clock() + self.gilgul.heartbeat_interval_s
            changed |= self.check_heartbeats()
        self.gilgul.hook.reap()
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
            self._became_running(child, now)
            return True
        if fields.get("STOPPING") == "1" and child.state == "running":
            child.state = "stopping"
        return "STATUS" in fields or "STOPPING" in fields

    def _became_running(self, child: Child, now: float) -> None:
        name = child.spec.name
        self.gilgul.heartbeats.started(name, now)
        events.running(self.logger, self.policy, name, child.incarnation, child.pid or 0,
                       child.restart_issued, now)
        child.restart_issued = None

    def _check(self, child: Child, now: float) -> bool:
        process = child.process
        if process is None or child.state in ("exited", "failed", "held", "stopped"):
            return False
        ended = _ended(process)
        if ended is not None:
            self._ended(child, *ended)
            return True
        if child.state == "killing" and now > child.deadline:
            # It did not die of the first signal (TimeoutAbortSec=/TimeoutStopSec= passed).
            process.kill()
            child.deadline = float("inf")
            return False
        if child.state == "starting" and now > child.deadline:
            self._kill(child, "timeout", signal.SIGTERM, "did not report READY in time")
            return True
        watchdog = child.spec.watchdog_s
        if child.state == "running" and watchdog and now - child.last_ping > watchdog:
            self._kill(child, "watchdog", signal.SIGABRT,
                       f"no watchdog ping for {now - child.last_ping:.1f} s")
            return True
        return False

    def _ended(self, child: Child, code: int, status: int) -> None:
        """The child's process is gone: a deliberate stop, or a failure for the policy."""
        assert child.process is not None
        name = child.spec.name
        self.gilgul.heartbeats.stopped(name)
        child.exit_code = child.process.returncode
        expected = child.state == "stopping" or self.stopping
        if child.kill_reason is not None:
            reason = child.kill_reason
        elif code == CLD_EXITED:
            reason = "exit-code" if status else "success"
        elif status == signal.SIGKILL and self.limiter.oom_kills(name) > child.oom_kills:
            reason = "oom-kill"
        else:
            reason = "core-dump" if code == CLD_DUMPED else "signal"
        child.reason = reason
        if expected or reason == "success":
            # Exit 0 or asked to stop: inactive, not failed, as systemd sees it; left stopped.
            child.state = "exited"
            self.policy.running(name)
            log.event(self.logger, "stopped", f"{name} exited ({_describe(code, status)}): "
                      "not a failure, left stopped", component=name,
                      incarnation=child.incarnation)
            return
        decision = self.policy.failed(name, reason)
        child.state = "held" if decision.restart_in is None else "failed"
        plan = decision.plan("'runa up'")
        log.event(self.logger, "failed",
                  f"{name} failed ({reason}: {_describe(code, status)}), incarnation "
                  f"{decision.incarnation}, {decision.failures} failure(s) in "
                  f"{self.policy.settings.window_s:g} s: {plan}",
                  level=logging.WARNING, component=name, reason=reason,
                  incarnation=decision.incarnation, failures=decision.failures,
                  decision=decision.action, delay_s=decision.restart_in or 0,
                  exit_code=code, exit_status=status, main_pid=child.pid)
        if decision.escalate:
            events.escalated(self.logger, self.policy, self.gilgul.hook, name, reason, decision)

    def _kill(self, child: Child, reason: str, signum: signal.Signals, why: str) -> None:
        """End a child the way systemd would: ``signum`` plus SIGCONT, SIGKILL if it lingers."""
        assert child.process is not None
        name = child.spec.name
        event = NO_HEARTBEAT.replace("-", "_") if reason == NO_HEARTBEAT else reason
        log.event(self.logger, event, f"{name} (pid {child.pid}): {why}; sending {signum.name}",
                  level=logging.WARNING, component=name, reason=reason,
                  incarnation=child.incarnation, main_pid=child.pid)
        child.kill_reason = reason
        child.state = "killing"
        child.deadline = (float("inf") if signum == signal.SIGKILL
                          else self.clock() + child.spec.stop_timeout_s)
        _signal(child.process, signum)
        if signum != signal.SIGKILL:
            _signal(child.process, signal.SIGCONT)  # a stopped process must hear it

    # -- what gilgul does -------------------------------------------------------------------

    def restart(self, name: str, reason: str) -> None:
        """Start the next incarnation of ``name`` now."""
        child = self.child(name)
        if child.process is not None and child.process.poll() is None:
            self.policy.running(name)  # already back (started by a reconcile request)
            return
        child.incarnation = self.policy.restarting(name)
        self.gilgul.incarnations.write(name, child.incarnation, reason)
        log.event(self.logger, "restart",
                  f"starting {name} as incarnation {child.incarnation} ({reason})",
                  component=name, reason=reason, incarnation=child.incarnation)
        if self._spawn(child, reason):
            child.restart_issued = self.clock()

    def _start_stopped(self) -> bool:
        """Start every child that is not running (held, exited, failed), in order."""
        started = False
        for child in self.children:
            if child.state in ("held", "exited", "failed", "stopped"):
                self.policy.request(child.spec.name, NOT_RUNNING)
                started = True
        return started

    def check_heartbeats(self) -> bool:
        """Kill children that run but have not heartbeaten for the timeout (SIGKILL)."""
        watch = self.gilgul.heartbeats
        if not watch.watching():
            return False
        if self.bus is None:
            self.bus = self.open_bus()
            if self.bus is None:
                return False
        now, now_ns = self.clock(), self.clock_ns()
        for child in self.children:
            name = child.spec.name
            if child.state == "running" and name in watch.watching() and child.pid:
                beat = health.parse(self.bus.get(bus_mod.health_key(name)))
                watch.observe(name, beat, child.pid, now, now_ns)
        late = watch.late(now)
        for name in late:
            child = self.child(name)
            silent = watch.silent_for(name, now)
            watch.stopped(name)
            if child.state == "running":
                self._kill(child, NO_HEARTBEAT, signal.SIGKILL,
                           f"running but no heartbeat for {silent:.1f} s")
        return bool(late)

    def _save(self, running: bool = True) -> None:
        state_file.write_atomically(self.state_path, {
            "supervisor_pid": os.getpid() if running else None,
            "stack": self.stack,
            "starting": self.starting and running,
            "failure": self.failure,
            "memory_limits": self.limiter.mode,
            "updated": time.time(),
            "components": [child.describe() for child in self.children],
        })


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


def _start_failure(child: Child) -> str:
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
        how = f"was {_describe(CLD_KILLED, -process.returncode)} before it was ready"
    said = child.status
    if said.startswith("failed: "):
        return f"{name} {how}: {said.removeprefix('failed: ')}"
    return f"{name} {how}" + (f" (its last status: {said})" if said else "")


def _describe(code: int, status: int) -> str:
    if code == CLD_EXITED:
        return f"exit status {status}"
    name = signal.Signals(status).name if status in signal.Signals._value2member_map_ else status
    return f"{'dumped core on' if code == CLD_DUMPED else 'killed by'} {name}"


def _signal(process: subprocess.Popen[bytes], signum: signal.Signals) -> None:
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signum)
