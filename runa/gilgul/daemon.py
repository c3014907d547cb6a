"""``runa daemon gilgul``: keeps every component of the stack running, under systemd.

gilgul's core (``runa.gilgul.core``) over the systemd backend
(``runa.gilgul.backends.systemd``), with what only the daemon does. On start it applies the
configured limits as drop-ins, subscribes to the user manager's signals for the watched units
and reconciles: every enabled component that is not running is started. Then it reacts to
what systemd pushes: a unit that enters ``failed`` goes to the policy, which restarts it at
once, after a backoff, or escalates. Between signals the core reads the components'
heartbeats from the bus and kills one that is alive but silent, so it fails and comes back
like any other. SIGHUP (``systemctl --user
reload runa-gilgul``) re-reads the registry and configuration and re-applies the limits;
a bad file is refused whole, and the old settings stay.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable, Mapping

from runa import log, registry
from runa import stackbus as bus_mod
from runa.components import load_config
from runa.config import Config
from runa.crypto.process import undumpable
from runa.errors import RunaError
from runa.gilgul.backends.systemd import SystemdUnits
from runa.gilgul.broker import BrokerThread
from runa.gilgul.broker import for_stack as secrets_broker
from runa.gilgul.core import Gilgul
from runa.gilgul.dbus import SystemdUserManager
from runa.gilgul.dbus import UnitManager as UnitManagerProtocol
from runa.gilgul.dropins import DropIns
from runa.gilgul.dropins import unit_dir as dropin_unit_dir
from runa.gilgul.hook import PolicyHook
from runa.gilgul.incarnation import IncarnationFiles
from runa.gilgul.incarnation import directory as incarnation_dir
from runa.gilgul.policy import RECONFIGURED
from runa.gilgul.requesters import systemd_identify
from runa.gilgul.units import Limits
from runa.paths import Paths
from runa.registry import Registry
from runa.service import ServiceContext
from runa.splinter import Bus

NAME = "gilgul"


class GilgulDaemon:
    """gilgul's core over systemd's user manager, plus what only the daemon does: the
    limits as drop-ins, its own watchdog, and reloading on SIGHUP."""

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
        secrets: BrokerThread | None = None,
    ) -> None:
        """``secrets``: the secrets broker, run beside the loop from ``start`` to ``stop``."""
        self.config = config
        self.registry = registry
        self.stack = stack
        self.logger = logger
        self.env = env
        self.connect = connect
        self.dropins = dropins
        self.reload_inputs = reload_inputs
        self.core = Gilgul.from_config(config, incarnations=incarnations, hook=hook,
                                       clock=clock)
        self.backend = SystemdUnits(registry.watched, self.core, logger)
        self.core.attach(self.backend, logger=logger, open_bus=open_bus, clock_ns=clock_ns)
        self.reload_requested = False
        self.secrets = secrets
        self._ctx: ServiceContext | None = None

    # -- life cycle -------------------------------------------------------------------------

    def start(self, ctx: ServiceContext) -> None:
        self._ctx = ctx
        manager = self.connect()
        self.backend.open(manager)
        manager_unit = self.registry.manager
        if manager_unit is not None:
            ctx.incarnation = manager.own_restarts(manager_unit.unit)
        signal.signal(signal.SIGHUP, self._on_sighup)
        if self.secrets is not None:
            undumpable()  # every secret value passes through the broker, and it keeps the key
            self.secrets.start()
        self.backend.reconcile(ctx.incarnation)
        self.apply_limits()
        ctx.status(f"watching {len(self.backend.units)} components")

    def _on_sighup(self, _signum: int, _frame: object) -> None:
        self.reload_requested = True

    def step(self, timeout: float) -> None:
        self.backend.poll(self.core.wait_bound(timeout))
        if self.reload_requested:
            self.reload_requested = False
            self.reload()
        self.core.turn()
        if self.secrets is not None:
            self.secrets.check()

    def stop(self) -> None:
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
        if self.secrets is not None:
            self.secrets.stop()
        self.backend.close()
        self.core.close()

    # -- limits and reload ------------------------------------------------------------------

    def desired_limits(self) -> dict[str, Limits]:
        return {c.unit: Limits.of(self.config.component(c.name)) for c in self.registry.enabled}

    def apply_limits(self) -> None:
        """Write the drop-ins that changed, reload once, and restart for a new WatchdogSec=."""
        manager = self.backend.connected()
        desired = self.desired_limits()
        changes = self.dropins.plan(desired)
        if not changes:
            return
        before = {unit: manager.unit_state(unit).get("WatchdogUSec", 0) for unit in desired}
        self.dropins.apply(changes)
        manager.reload()
        log.event(self.logger, "limits_applied",
                  f"applied limits from the configuration to "
                  f"{', '.join(sorted(p.parent.name[:-2] for p in changes))}",
                  units=",".join(sorted(p.parent.name[:-2] for p in changes)))
        for unit, limits in desired.items():
            if before[unit] == limits.watchdog_sec * 1_000_000:
                continue
            watched = self.backend.units.get(unit)
            if watched is not None and watched.active_state == "active":
                # systemd would hold the running process to the new interval at once.
                self.core.request(watched.component.name, RECONFIGURED)
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
        if {c.unit for c in new_registry.watched} != set(self.backend.units):
            self.logger.warning("the registry's components changed; restart gilgul to "
                                "watch the new set")
        self.config, self.registry = config, new_registry
        if self.secrets is not None:
            self.secrets.reconfigure(new_registry)
        self.core.reconfigure(config)
        self.apply_limits()
        log.event(self.logger, "reloaded", "reloaded the registry and configuration")
        self._ctx.notifier.notify("READY=1")


def create(config: Config, logger: logging.Logger, stack: str,
           env: Mapping[str, str] | None = None) -> GilgulDaemon:
    """Load the registry (a bad one raises here: exit 78, no restart) and wire gilgul up."""
    env = dict(os.environ if env is None else env)
    paths = Paths.for_stack(stack, env)
    reg = registry.load(paths.sysconfdir)

    def reload_inputs() -> tuple[Config, Registry]:
        new_registry = registry.load(paths.sysconfdir)
        return load_config(paths, env, registry=new_registry), new_registry

    return GilgulDaemon(
        config, reg, stack, logger, env=env,
        connect=lambda: SystemdUserManager.connect(env),
        open_bus=bus_mod.bus_opener(config, stack),
        dropins=DropIns(dropin_unit_dir(env)),
        incarnations=IncarnationFiles(incarnation_dir(env)),
        hook=PolicyHook(config["gilgul.policy_script"], logger),
        reload_inputs=reload_inputs,
        secrets=secrets_broker(config, stack, paths, reg, systemd_identify(), logger),
    )

