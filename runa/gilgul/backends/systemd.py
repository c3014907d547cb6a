"""Components as systemd user units, watched over D-Bus: a backend for gilgul's core.

systemd starts, stops and watchdogs the units itself; this backend turns what the user manager
pushes (``PropertiesChanged`` of the units and of ``runa.target``) into what the core needs to
hear (up, failed, stopped) and carries out the core's starts and kills as D-Bus calls.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Iterable
from dataclasses import dataclass

from runa import log
from runa.gilgul.core import Failure, Gilgul
from runa.gilgul.dbus import Event, JobRemoved, ManagerError, UnitChanged, UnitManager
from runa.gilgul.policy import NOT_RUNNING
from runa.registry import Component, unit_name

TARGET = "runa.target"
_DOWN = ("inactive", "failed")


@dataclass
class _Unit:
    """What gilgul knows about one watched unit, kept current by the manager's signals."""

    component: Component
    active_state: str = "unknown"
    main_pid: int = 0
    kill_reason: str | None = None  # why gilgul itself ended it (no-heartbeat)


class SystemdUnits:
    """The watched components' units under the user manager ``manager`` (once opened)."""

    stack_name = TARGET
    start_by_hand = ""  # systemd's own words say it: systemctl --user start

    def __init__(self, components: Iterable[Component], core: Gilgul,
                 logger: logging.Logger) -> None:
        self.units = {c.unit: _Unit(c) for c in components}
        self.core = core
        self.logger = logger
        self.manager: UnitManager | None = None
        # runa.target was active and no longer is: the stack is being stopped, and what
        # stops or fails now is not to be reincarnated (until the target is active again).
        self.target_active = False
        self.stack_stopping = False

    def open(self, manager: UnitManager) -> None:
        """Subscribe to the units' and the target's signals and learn the target's state."""
        self.manager = manager
        manager.watch([*sorted(self.units), TARGET])
        self.target_active = manager.unit_state(TARGET).get("ActiveState") == "active"

    def close(self) -> None:
        if self.manager is not None:
            self.manager.close()
            self.manager = None

    def connected(self) -> UnitManager:
        """The user manager, once ``open`` connected it."""
        assert self.manager is not None, "the user manager is not connected"
        return self.manager

    # -- the backend the core drives --------------------------------------------------------

    @property
    def stopping(self) -> bool:
        return self.stack_stopping

    def main_pid(self, component: str) -> int | None:
        unit = self.units[unit_name(component)]
        return unit.main_pid if unit.active_state == "active" else None

    def start(self, component: str, incarnation: int, reason: str) -> bool:
        """A start job for the unit (after reset-failed); its incarnation is in its env file."""
        unit = self.units[unit_name(component)]
        manager = self.connected()
        try:
            if unit.active_state == "failed":
                manager.reset_failed(unit.component.unit)
            manager.start(unit.component.unit)
        except ManagerError as error:
            self.logger.error("could not start %s: %s", unit.component.unit, error)
            return False
        return True

    def kill(self, component: str, reason: str) -> None:
        unit = self.units[unit_name(component)]
        unit.kill_reason = reason
        try:
            self.connected().kill(unit.component.unit, signal.SIGKILL)
        except ManagerError as error:
            self.logger.error("could not kill %s: %s", unit.component.unit, error)

    # -- what systemd tells us --------------------------------------------------------------

    def poll(self, timeout: float) -> None:
        """Handle what the user manager signals within ``timeout`` seconds."""
        for event in self.connected().events(timeout):
            self.handle(event)

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
        if state == "active":
            unit.main_pid = int(self.connected().unit_state(unit.component.unit).get("MainPID", 0))
            self.core.running(unit.component.name, unit.main_pid)
        elif state == "failed":
            self._failed(unit)
        elif state == "inactive" and previous not in _DOWN:
            self.core.stopped(unit.component.name, "was stopped (not a failure: left stopped "
                              "until gilgul reconciles)")

    def _target_changed(self, state: object) -> None:
        if state == "active":
            self.target_active, self.stack_stopping = True, False
        elif state in ("deactivating", "inactive", "failed") and self.target_active:
            self.target_active, self.stack_stopping = False, True
            log.event(self.logger, "stack_stopping",
                      f"{TARGET} is stopping: no restarts until it is started again")

    def _failed(self, unit: _Unit) -> None:
        state = self.connected().unit_state(unit.component.unit)
        reason = unit.kill_reason or str(state.get("Result") or "failed")
        unit.kill_reason = None
        self.core.failed(unit.component.name, Failure(
            reason, exit_code=state.get("ExecMainCode", ""),
            exit_status=state.get("ExecMainStatus", "")))

    def reconcile(self, incarnation: int) -> None:
        """Every enabled component that should run, runs (or has its restart scheduled)."""
        manager = self.connected()
        found: dict[str, list[str]] = {"running": [], "queued": [], "starting": []}
        for unit in self.units.values():
            name = unit.component.name
            self.core.seed(name)
            state = manager.unit_state(unit.component.unit)
            unit.active_state = str(state.get("ActiveState", "unknown"))
            unit.main_pid = int(state.get("MainPID", 0))
            job = state.get("Job") or (0, "/")
            if unit.active_state == "failed":
                self._failed(unit)
                found["starting"].append(name)
            elif unit.active_state == "inactive" and not job[0]:
                self.core.request(name, NOT_RUNNING)
                found["starting"].append(name)
            elif unit.active_state == "active":
                self.core.found_running(name)
                found["running"].append(name)
            else:  # activating, or a start job systemd is about to run
                found["queued"].append(name)
        self.core.reconciled("; ".join(f"{what} {', '.join(names) or 'none'}"
                                       for what, names in found.items()),
                             incarnation=incarnation,
                             **{what: ",".join(names) for what, names in found.items()})
