"""Reincarnation, written once: what gilgul does, whoever runs the components.

Under systemd (``runa daemon gilgul`` over ``backends.systemd``) and under Runa's own
supervisor (``runa up`` over ``backends.children``) this one core decides and reports: a
failure goes to the policy (``runa.gilgul.policy``: restart now, after a backoff, or escalate
and hold), a restart gets the next incarnation number, written where the new process reads
it, a component that is up but silent on the bus is killed for ``no-heartbeat``, and the
journal gets the same events (``failed``, ``restart``, ``running``, ``stopped``,
``no_heartbeat``, ``escalated``, ``reconciled``) with the same fields, which ``runa audit``
folds into incarnations whichever mode wrote them. A backend tells the core what happened to
a component and does what the core asks of it: start one, kill one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from runa import log
from runa.config import Config
from runa.gilgul.health import HeartbeatWatch
from runa.gilgul.hook import PolicyHook
from runa.gilgul.incarnation import IncarnationFiles
from runa.gilgul.policy import NO_HEARTBEAT, Decision, Policy, PolicySettings
from runa.protocol.heartbeat import Heartbeat, health_key
from runa.splinter import Bus


class Backend(Protocol):
    """What runs the components: systemd's user manager, or the supervisor's children."""

    @property
    def stopping(self) -> bool:
        """The whole stack is being stopped: a failure is not restarted, a due restart dropped."""
        ...

    @property
    def stack_name(self) -> str:
        """What a person stops to stop the stack, for the journal (``runa.target``)."""
        ...

    @property
    def start_by_hand(self) -> str:
        """How a person starts a held component, for the journal; empty if it goes unsaid."""
        ...

    def main_pid(self, component: str) -> int | None:
        """The main process of ``component`` while it is up (ready); None otherwise."""
        ...

    def start(self, component: str, incarnation: int, reason: str) -> bool:
        """Start ``component`` as ``incarnation``; False, having said why, if it could not."""
        ...

    def kill(self, component: str, reason: str) -> None:
        """End ``component`` with SIGKILL; its end is then a failure named ``reason``."""
        ...


@dataclass(frozen=True)
class Failure:
    """How a component ended, as its backend saw it."""

    reason: str  # systemd's Result= words (signal, watchdog, ...) or gilgul's (no-heartbeat)
    detail: str = ""  # how it ended, in words ("exit status 78"), when the backend knows
    exit_code: object = ""  # ExecMainCode=, or the waitid(2) si_code
    exit_status: object = ""  # ExecMainStatus=: the exit status or the signal
    main_pid: int | None = None


def _no_bus() -> Bus | None:
    return None


class Gilgul:
    """The policy, the incarnation numbers, the heartbeat watch and the events, over a backend.

    Built from its parts (``from_config`` reads them from the configuration), then given the
    backend with ``attach`` before the first turn: the backend reports to the core and the
    core acts through the backend, so one of them has to exist first.
    """

    def __init__(self, *, policy: Policy, heartbeats: HeartbeatWatch,
                 incarnations: IncarnationFiles, hook: PolicyHook,
                 heartbeat_interval_s: float = 1.0) -> None:
        self.policy = policy
        self.heartbeats = heartbeats
        self.incarnations = incarnations
        self.hook = hook
        self.heartbeat_interval_s = heartbeat_interval_s
        self.clock = policy.clock
        self.logger = hook.logger
        self.open_bus: Callable[[], Bus | None] = _no_bus
        self.clock_ns: Callable[[], int] = time.monotonic_ns
        self.bus: Bus | None = None
        self._backend: Backend | None = None
        self._issued: dict[str, float] = {}  # when the pending start of a restart was issued
        self._next_beat_check = 0.0

    @classmethod
    def from_config(cls, config: Config, *, incarnations: IncarnationFiles, hook: PolicyHook,
                    clock: Callable[[], float] = time.monotonic) -> Gilgul:
        """The core with the ``[gilgul]`` settings and the heartbeat interval of ``config``."""
        return cls(policy=Policy(PolicySettings.from_config(config), clock),
                   heartbeats=HeartbeatWatch(config["gilgul.heartbeat_timeout_s"],
                                             config["service.heartbeat_interval_s"]),
                   incarnations=incarnations, hook=hook,
                   heartbeat_interval_s=config["service.heartbeat_interval_s"])

    def reconfigure(self, config: Config) -> None:
        """Take the ``[gilgul]`` settings of a reloaded ``config``."""
        self.policy.settings = PolicySettings.from_config(config)
        self.heartbeats.timeout_s = config["gilgul.heartbeat_timeout_s"]
        self.heartbeat_interval_s = config["service.heartbeat_interval_s"]
        self.hook.script = config["gilgul.policy_script"]

    def attach(self, backend: Backend, *, logger: logging.Logger | None = None,
               open_bus: Callable[[], Bus | None] = _no_bus,
               clock_ns: Callable[[], int] = time.monotonic_ns) -> None:
        """Drive ``backend``; heartbeats are read from the bus ``open_bus`` opens."""
        self._backend = backend
        self.logger = logger or self.logger
        self.open_bus = open_bus
        self.clock_ns = clock_ns

    @property
    def backend(self) -> Backend:
        assert self._backend is not None, "no backend attached"
        return self._backend

    def close(self) -> None:
        if self.bus is not None:
            self.bus.close()
            self.bus = None

    # -- what a backend tells the core ------------------------------------------------------

    def seed(self, component: str) -> int:
        """Continue counting ``component``'s incarnations from its file (gilgul restarted)."""
        self.policy.seed(component, self.incarnations.read(component))
        return self.policy.incarnation(component)

    def found_running(self, component: str) -> None:
        """``component`` was found up when gilgul (re)started: its heartbeat grace starts now."""
        self.heartbeats.started(component, self.clock())

    def request(self, component: str, reason: str) -> None:
        """Start ``component`` at the next turn without counting a failure (found stopped)."""
        self.policy.request(component, reason)

    def running(self, component: str, pid: int) -> None:
        """``component`` is up as ``pid``: back from our restart (with its latency) or started
        by someone else, in which case the policy learns it runs and nothing of ours is
        pending."""
        now = self.clock()
        self.heartbeats.started(component, now)
        incarnation = self.policy.incarnation(component)
        fields: dict[str, Any] = {"component": component, "incarnation": incarnation,
                                     "main_pid": pid}
        issued = self._issued.pop(component, None)
        if issued is not None:
            fields["latency_ms"] = round((now - issued) * 1000, 1)
            message = (f"{component} is back as incarnation {incarnation} (pid {pid}, "
                       f"{fields['latency_ms']} ms after the restart)")
        else:
            self.policy.running(component)
            message = f"{component} is running (pid {pid})"
        log.event(self.logger, "running", message, **fields)

    def failed(self, component: str, failure: Failure) -> Decision | None:
        """``component`` ended on its own or was ended by gilgul: decide what comes next.

        None while the stack stops (it is left stopped, as the stack is).
        """
        self.heartbeats.stopped(component)
        self._issued.pop(component, None)
        reason = failure.reason
        if self.backend.stopping:
            log.event(self.logger, "failed", f"{component} failed ({reason}) while "
                      f"{self.backend.stack_name} stops: left stopped", level=logging.WARNING,
                      component=component, reason=reason,
                      incarnation=self.policy.incarnation(component), decision="stack-stopping")
            return None
        decision = self.policy.failed(component, reason)
        how = f"{reason}: {failure.detail}" if failure.detail else reason
        extra = {} if failure.main_pid is None else {"main_pid": failure.main_pid}
        log.event(self.logger, "failed",
                  f"{component} failed ({how}), incarnation {decision.incarnation}, "
                  f"{decision.failures} failure(s) in {self.policy.settings.window_s:g} s: "
                  f"{decision.plan(self.backend.start_by_hand)}", level=logging.WARNING,
                  component=component, reason=reason, incarnation=decision.incarnation,
                  failures=decision.failures, decision=decision.action,
                  delay_s=decision.restart_in or 0, exit_code=failure.exit_code,
                  exit_status=failure.exit_status, **extra)
        if decision.escalate:
            self._escalate(component, reason, decision)
        return decision

    def stopped(self, component: str, how: str, **fields: Any) -> None:
        """``component`` stopped on purpose (not a failure): it is left stopped."""
        self.heartbeats.stopped(component)
        self.policy.running(component)  # nothing pending: it stays stopped until started
        log.event(self.logger, "stopped", f"{component} {how}", component=component, **fields)

    def reconciled(self, summary: str, **fields: Any) -> None:
        """What gilgul found when it (re)started, and what it does about it."""
        log.event(self.logger, "reconciled", f"reconciled: {summary}", **fields)

    # -- one turn of the backend's loop -----------------------------------------------------

    def wait_bound(self, timeout: float) -> float:
        """How long the backend may wait for news before the next restart or heartbeat check."""
        now = self.clock()
        wait = min(timeout, max(0.0, self._next_beat_check - now))
        due = self.policy.next_due()
        if due is not None:
            wait = min(wait, max(0.0, due - now))
        return wait

    def turn(self) -> bool:
        """Issue the restarts that are due, check heartbeats when due, reap policy scripts.

        True when a component was restarted or found late.
        """
        changed = False
        for component, reason in self.policy.due():
            if self.backend.stopping:
                self.policy.running(component)  # forget it: the stack is going down
            else:
                self.restart(component, reason)
                changed = True
        if self.clock() >= self._next_beat_check:
            self._next_beat_check = self.clock() + self.heartbeat_interval_s
            changed |= self.check_heartbeats()
        self.hook.reap()
        return changed

    # -- what the core does -----------------------------------------------------------------

    def restart(self, component: str, reason: str) -> None:
        """Start the next incarnation of ``component`` now."""
        incarnation = self.policy.restarting(component)
        self.incarnations.write(component, incarnation, reason)
        log.event(self.logger, "restart",
                  f"starting {component} as incarnation {incarnation} ({reason})",
                  component=component, reason=reason, incarnation=incarnation)
        if self.backend.start(component, incarnation, reason):
            self._issued[component] = self.clock()
        else:
            self.start_refused(component)

    def start_refused(self, component: str) -> None:
        """``component`` could not even be started: a failure, tried again after a backoff."""
        self.policy.failed(component, "start-refused")

    def check_heartbeats(self) -> bool:
        """Kill components that are up but have not heartbeaten for the timeout (SIGKILL).

        True when one was late.
        """
        if not self.heartbeats.watching():
            return False
        if self.bus is None:
            self.bus = self.open_bus()
            if self.bus is None:
                return False
        now, now_ns = self.clock(), self.clock_ns()
        for component in self.heartbeats.watching():
            pid = self.backend.main_pid(component)
            if pid is not None:
                beat = Heartbeat.from_json(component, self.bus.get(health_key(component)))
                self.heartbeats.observe(component, beat, pid, now, now_ns)
        late = self.heartbeats.late(now)
        for component in late:
            silent = self.heartbeats.silent_for(component, now)
            self.heartbeats.stopped(component)
            pid = self.backend.main_pid(component)
            if pid is None:
                continue
            log.event(self.logger, "no_heartbeat",
                      f"{component} (pid {pid}) is running but has not heartbeaten for "
                      f"{silent:.1f} s; killing it", level=logging.WARNING, component=component,
                      reason=NO_HEARTBEAT, incarnation=self.policy.incarnation(component),
                      main_pid=pid)
            self.backend.kill(component, NO_HEARTBEAT)
        return bool(late)

    def _escalate(self, component: str, reason: str, decision: Decision) -> None:
        """Too many failures in the window: run the policy script (if any) and say so."""
        ran = self.hook.run(component, reason, decision.incarnation)
        log.event(self.logger, "escalated",
                  f"{component} escalated after {decision.failures} failures in "
                  f"{self.policy.settings.window_s:g} s ({reason})"
                  + (f"; ran {self.hook.script}" if ran else "; no policy script"),
                  level=logging.ERROR, component=component, reason=reason,
                  incarnation=decision.incarnation, failures=decision.failures,
                  decision=decision.action, script=self.hook.script)
