"""``runa daemon gilgul``: keeps every component of the stack running, under systemd.

On start it applies the configured limits as drop-ins, subscribes to the user manager's
signals for the watched units and reconciles: every enabled component that is not running
is started. Then it reacts to what systemd pushes: a unit that enters ``failed`` goes to the
policy (``runa.gilgul.policy``), which restarts it at once, after a backoff, or escalates.
Between signals it reads the components' heartbeats from the bus and kills one that is
alive but silent, so it fails and comes back like any other. SIGHUP (``systemctl --user
reload runa-gilgul``) re-reads the registry and configuration and re-applies the limits;
a bad file is refused whole, and the old settings stay.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from runa import config as config_mod
from runa import log
from runa import stackbus as bus_mod
from runa.config import Config
from runa.errors import RunaError
from runa.gilgul import events, health, registry
from runa.gilgul.dbus import Event, JobRemoved, ManagerError, SystemdUserManager, UnitChanged
from runa.gilgul.dbus import UnitManager as UnitManagerProtocol
from runa.gilgul.dropins import DropIns
from runa.gilgul.dropins import unit_dir as dropin_unit_dir
from runa.gilgul.hook import PolicyHook
from runa.gilgul.incarnation import IncarnationFiles
from runa.gilgul.incarnation import directory as incarnation_dir
from runa.gilgul.policy import NO_HEARTBEAT, NOT_RUNNING, RECONFIGURED, Policy, PolicySettings
from runa.gilgul.registry import Component, Registry
from runa.gilgul.units import Limits
from runa.paths import Paths
from runa.service import ServiceContext
from runa.splinter import Bus

NAME = "gilgul"
TARGET = "runa.target"
_DOWN = ("inactive", "failed")


@dataclass
class _Unit:
    """What gilgul knows about one watched unit, kept current by the manager's signals."""

    component: Component
    active_state: str = "unknown"
    main_pid: int = 0
    kill_reason: str | None = None  # why gilgul itself ended it (no-heartbeat)
    restart_issued: float | None = None  # when gilgul asked for the current start


class Gilgul:
    name = NAME

    def __init__(
        self,
        config: Config,
        registry: Registry,
        stack: str,
        logger: logging.Logger,
        *,
        env: Mapping[str, str],
        connect: Callable[[], UnitManagerProtocol],
        open_bus: Callable[[], Bus | None],
        dropins: DropIns,
        incarnations: IncarnationFiles,
        hook: PolicyHook,
        reload_inputs: Callable[[], tuple[Config, Registry]],
        clock: Callable[[], float] = time.monotonic,
        clock_ns: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        self.config = config
        self.registry = registry
        self.stack = stack
        self.logger = logger
        self.env = env
        self.connect = connect
        self.open_bus = open_bus
        self.dropins = dropins
        self.incarnations = incarnations
        self.hook = hook
        self.reload_inputs = reload_inputs
        self.clock = clock
        self.clock_ns = clock_ns
        self.policy = Policy(PolicySettings.from_config(config), clock)
        self.heartbeats = self._heartbeat_watch(config)
        self.units = {c.unit: _Unit(c) for c in registry.watched}
        self.manager: UnitManagerProtocol | None = None
        self.bus: Bus | None = None
        self.reload_requested = False
        # runa.target was active and no longer is: the stack is being stopped, and what
        # stops or fails now is not to be reincarnated (until the target is active again).
        self.target_active = False
        self.stack_stopping = False
        self._ctx: ServiceContext | None = None
        self._next_beat_check = 0.0

    @staticmethod
    def _heartbeat_watch(config: Config) -> health.HeartbeatWatch:
        return health.HeartbeatWatch(config["gilgul.heartbeat_timeout_s"],
                                     config["service.heartbeat_interval_s"])

    # -- life cycle -------------------------------------------------------------------------

    def start(self, ctx: ServiceContext) -> None:
        self._ctx = ctx
        self.manager = self.connect()
        self.manager.watch([*sorted(self.units), TARGET])
        manager_unit = self.registry.manager
        if manager_unit is not None:
            ctx.incarnation = self.manager.own_restarts(manager_unit.unit)
        signal.signal(signal.SIGHUP, self._on_sighup)
        self.target_active = self.manager.unit_state(TARGET).get("ActiveState") == "active"
        self.reconcile()
        self.apply_limits()
        ctx.status(f"watching {len(self.units)} components")

    def _on_sighup(self, _signum: int, _frame: object) -> None:
        self.reload_requested = True

    def step(self, timeout: float) -> None:
        assert self.manager is not None
        now = self.clock()
        wait = min(timeout, max(0.0, self._next_beat_check - now))
        due = self.policy.next_due()
        if due is not None:
            wait = min(wait, max(0.0, due - now))
        for event in self.manager.events(wait):
            self.handle(event)
        if self.reload_requested:
            self.reload_requested = False
            self.reload()
        for component, reason in self.policy.due():
            if self.stack_stopping:
                self.policy.running(component)  # forget it: the stack is going down
            else:
                self.restart(component, reason)
        if self.clock() >= self._next_beat_check:
            self._next_beat_check = self.clock() + self.config["service.heartbeat_interval_s"]
            self.check_heartbeats()
        self.hook.reap()

    def stop(self) -> None:
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
        if self.manager is not None:
            self.manager.close()
            self.manager = None
        if self.bus is not None:
            self.bus.close()
            self.bus = None

    # -- what systemd tells us --------------------------------------------------------------

    def handle(self, event: Event) -> None:
        if isinstance(event, JobRemoved):
            if event.result not in ("done", "canceled") and event.unit in self.units:
                self.logger.info("job %d for %s ended: %s", event.job_id, event.unit,
                                 event.result)
            return
        if isinstance(event, UnitChanged) and event.unit == TARGET:
            self._target_changed(event.changed.get("ActiveState"))
            return
        if not isinstance(event, UnitChanged) or event.unit not in self.units:
            return
        unit = self.units[event.unit]
        if "MainPID" in event.changed:
            unit.main_pid = int(event.changed["MainPID"])
        state = event.changed.get("ActiveState")
        if state is None or state == unit.active_state:
            return
        previous, unit.active_state = unit.active_state, state
        name = unit.component.name
        if state == "active":
            self._became_active(unit)
        elif state == "failed":
            self._failed(unit)
        elif state == "inactive" and previous not in _DOWN:
            self.heartbeats.stopped(name)
            log.event(self.logger, "stopped", f"{name} was stopped (not a failure: left "
                      "stopped until gilgul reconciles)", component=name)

    def _target_changed(self, state: object) -> None:
        if state == "active":
            self.target_active, self.stack_stopping = True, False
        elif state in ("deactivating", "inactive", "failed") and self.target_active:
            self.target_active, self.stack_stopping = False, True
            log.event(self.logger, "stack_stopping",
                      f"{TARGET} is stopping: no restarts until it is started again")

    def _became_active(self, unit: _Unit) -> None:
        assert self.manager is not None
        name = unit.component.name
        state = self.manager.unit_state(unit.component.unit)
        unit.main_pid = int(state.get("MainPID", 0))
        self.heartbeats.started(name, self.clock())
        events.running(self.logger, self.policy, name, self.policy.incarnation(name),
                       unit.main_pid, unit.restart_issued, self.clock())
        unit.restart_issued = None

    def _failed(self, unit: _Unit) -> None:
        assert self.manager is not None
        name = unit.component.name
        self.heartbeats.stopped(name)
        unit.restart_issued = None
        state = self.manager.unit_state(unit.component.unit)
        reason = unit.kill_reason or str(state.get("Result") or "failed")
        unit.kill_reason = None
        if self.stack_stopping:
            log.event(self.logger, "failed", f"{name} failed ({reason}) while {TARGET} "
                      "stops: left stopped", level=logging.WARNING, component=name,
                      reason=reason, incarnation=self.policy.incarnation(name),
                      decision="stack-stopping")
            return
        decision = self.policy.failed(name, reason)
        plan = decision.plan()
        log.event(self.logger, "failed",
                  f"{name} failed ({reason}), incarnation {decision.incarnation}, "
                  f"{decision.failures} failure(s) in {self.policy.settings.window_s:g} s: "
                  f"{plan}", level=logging.WARNING, component=name, reason=reason,
                  incarnation=decision.incarnation, failures=decision.failures,
                  decision=decision.action, delay_s=decision.restart_in or 0,
                  exit_code=state.get("ExecMainCode", ""),
                  exit_status=state.get("ExecMainStatus", ""))
        if decision.escalate:
            events.escalated(self.logger, self.policy, self.hook, name, reason, decision)

    # -- what gilgul does -------------------------------------------------------------------

    def restart(self, name: str, reason: str) -> None:
        """Start the next incarnation of ``name`` now."""
        assert self.manager is not None
        unit = self.units[registry.unit_name(name)]
        incarnation = self.policy.restarting(name)
        self.incarnations.write(name, incarnation, reason)
        log.event(self.logger, "restart",
                  f"starting {name} as incarnation {incarnation} ({reason})",
                  component=name, reason=reason, incarnation=incarnation)
        try:
            if unit.active_state == "failed":
                self.manager.reset_failed(unit.component.unit)
            self.manager.start(unit.component.unit)
        except ManagerError as error:
            self.logger.error("could not start %s: %s", unit.component.unit, error)
            self.policy.failed(name, "start-refused")
            return
        unit.restart_issued = self.clock()

    def reconcile(self) -> None:
        """Every enabled component that should run, runs (or has its restart scheduled)."""
        assert self.manager is not None
        found: dict[str, list[str]] = {"running": [], "queued": [], "starting": []}
        for unit in self.units.values():
            name = unit.component.name
            self.policy.seed(name, self.incarnations.read(name))
            state = self.manager.unit_state(unit.component.unit)
            unit.active_state = str(state.get("ActiveState", "unknown"))
            unit.main_pid = int(state.get("MainPID", 0))
            job = state.get("Job") or (0, "/")
            if unit.active_state == "failed":
                self._failed(unit)
                found["starting"].append(name)
            elif unit.active_state == "inactive" and not job[0]:
                self.policy.request(name, NOT_RUNNING)
                found["starting"].append(name)
            elif unit.active_state == "active":
                self.heartbeats.started(name, self.clock())
                found["running"].append(name)
            else:  # activating, or a start job systemd is about to run
                found["queued"].append(name)
        log.event(self.logger, "reconciled",
                  "reconciled: " + "; ".join(f"{what} {', '.join(names) or 'none'}"
                                              for what, names in found.items()),
                  incarnation=self._ctx.incarnation if self._ctx else 0,
                  **{what: ",".join(names) for what, names in found.items()})

    def check_heartbeats(self) -> None:
        """Kill components that are active but have not heartbeaten for the timeout."""
        if not self.heartbeats.watching():
            return
        if self.bus is None:
            self.bus = self.open_bus()
            if self.bus is None:
                return
        now, now_ns = self.clock(), self.clock_ns()
        for unit in self.units.values():
            name = unit.component.name
            if unit.active_state == "active" and name in self.heartbeats.watching():
                beat = health.parse(self.bus.get(bus_mod.health_key(name)))
                self.heartbeats.observe(name, beat, unit.main_pid, now, now_ns)
        for name in self.heartbeats.late(now):
            self._kill_silent(self.units[registry.unit_name(name)], now)

    def _kill_silent(self, unit: _Unit, now: float) -> None:
        assert self.manager is not None
        name = unit.component.name
        silent = self.heartbeats.silent_for(name, now)
        self.heartbeats.stopped(name)
        unit.kill_reason = NO_HEARTBEAT
        log.event(self.logger, "no_heartbeat",
                  f"{name} (pid {unit.main_pid}) is running but has not heartbeaten for "
                  f"{silent:.1f} s; killing it", level=logging.WARNING, component=name,
                  reason=NO_HEARTBEAT, incarnation=self.policy.incarnation(name))
        try:
            self.manager.kill(unit.component.unit, signal.SIGKILL)
        except ManagerError as error:
            self.logger.error("could not kill %s: %s", unit.component.unit, error)

    # -- limits and reload ------------------------------------------------------------------

    def desired_limits(self) -> dict[str, Limits]:
        return {c.unit: Limits.of(self.config.component(c.name)) for c in self.registry.enabled}

    def apply_limits(self) -> None:
        """Write the drop-ins that changed, reload once, and restart for a new WatchdogSec=."""
        assert self.manager is not None
        desired = self.desired_limits()
        changes = self.dropins.plan(desired)
        if not changes:
            return
        before = {unit: self.manager.unit_state(unit).get("WatchdogUSec", 0)
                  for unit in desired}
        self.dropins.apply(changes)
        self.manager.reload()
        log.event(self.logger, "limits_applied",
                  f"applied limits from the configuration to "
                  f"{', '.join(sorted(p.parent.name[:-2] for p in changes))}",
                  units=",".join(sorted(p.parent.name[:-2] for p in changes)))
        for unit, limits in desired.items():
            if before[unit] == limits.watchdog_sec * 1_000_000:
                continue
            if unit in self.units and self.units[unit].active_state == "active":
                # systemd would hold the running process to the new interval at once.
                self.policy.request(self.units[unit].component.name, RECONFIGURED)
            elif self.registry.manager and unit == self.registry.manager.unit:
                self._own_watchdog(limits.watchdog_sec)

    def _own_watchdog(self, seconds: int) -> None:
        assert self._ctx is not None
        self._ctx.watchdog_s = float(seconds)
        self._ctx.notifier.notify(f"WATCHDOG_USEC={seconds * 1_000_000}")

    def reload(self) -> None:
        """Re-read registry and configuration; apply both or, if either is bad, neither."""
        assert self._ctx is not None
        self._ctx.notifier.notify("RELOADING=1")
        try:
            config, new_registry = self.reload_inputs()
        except RunaError as error:
            log.event(self.logger, "reload_refused",
                      f"reload refused, keeping the running settings: {error}",
                      level=logging.ERROR)
            self._ctx.notifier.notify("READY=1")
            return
        if {c.unit for c in new_registry.watched} != set(self.units):
            self.logger.warning("the registry's components changed; restart gilgul to "
                                "watch the new set")
        self.config, self.registry = config, new_registry
        self.policy.settings = PolicySettings.from_config(config)
        self.heartbeats.timeout_s = config["gilgul.heartbeat_timeout_s"]
        self.hook.script = config["gilgul.policy_script"]
        self.apply_limits()
        log.event(self.logger, "reloaded", "reloaded the registry and configuration")
        self._ctx.notifier.notify("READY=1")


def create(config: Config, logger: logging.Logger, stack: str,
           env: Mapping[str, str] | None = None) -> Gilgul:
    """Load the registry (a bad one raises here: exit 78, no restart) and wire gilgul up."""
    env = dict(os.environ if env is None else env)
    paths = Paths.for_stack(stack, env)
    reg = registry.load(paths.sysconfdir)

    def reload_inputs() -> tuple[Config, Registry]:
        return config_mod.load(paths, env), registry.load(paths.sysconfdir)

    return Gilgul(
        config, reg, stack, logger, env=env,
        connect=lambda: SystemdUserManager.connect(env),
        open_bus=bus_mod.bus_opener(config, stack),
        dropins=DropIns(dropin_unit_dir(env)),
        incarnations=IncarnationFiles(incarnation_dir(env)),
        hook=PolicyHook(config["gilgul.policy_script"], logger),
        reload_inputs=reload_inputs,
    )

