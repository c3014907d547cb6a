"""Wiring the supervisor from the registry and the configuration, as gilgul is wired.

The components are the registry's (``runa/data/components.toml`` plus
``<sysconfdir>/components.d``): every enabled one but the manager, in registry order, so a
component added there (tieto, a local one) runs under ``runa up`` as under ``runa.target``.
Their limits are the ``[components.<name>]`` settings that become the units' drop-ins.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping

from runa import registry
from runa import stackbus as bus_mod
from runa.config import Config, parse_size
from runa.gilgul import (
    ComponentSpec,
    Gilgul,
    HeartbeatWatch,
    IncarnationFiles,
    Policy,
    PolicyHook,
    PolicySettings,
    children_identify,
    daemon_argv,
    secrets_broker,
)
from runa.paths import Paths
from runa.supervisor import rundir
from runa.supervisor.core import Supervisor
from runa.supervisor.limits import MemoryLimiter, find_layout
from runa.supervisor.lock import SupervisorLock


def specs(config: Config, reg: registry.Registry) -> list[ComponentSpec]:
    out = []
    for component in reg.watched:
        values = config.component(component.name)
        out.append(ComponentSpec(
            name=component.name,
            argv=daemon_argv(component.name),
            watchdog_s=float(values["watchdog_sec"]),
            start_timeout_s=float(component.timeout_start_sec),
            stop_timeout_s=float(component.timeout_stop_sec),
            memory_max=parse_size(str(values["memory_max"])),
            listen_port=config[component.listen] if component.listen else None,
        ))
    return out


def create(config: Config, paths: Paths, stack: str, env: Mapping[str, str],
           logger: logging.Logger, clock: Callable[[], float] = time.monotonic) -> Supervisor:
    """The supervisor for ``stack``, holding the runtime directory's lock.

    A bad registry raises RegistryError (exit 78), an unsafe runtime directory
    RuntimeDirError (77), a supervisor already there AlreadySupervised (75): each before
    anything in the runtime directory is touched.
    """
    reg = registry.load(paths.sysconfdir)
    gilgul = Gilgul(
        policy=Policy(PolicySettings.from_config(config), clock),
        heartbeats=HeartbeatWatch(config["gilgul.heartbeat_timeout_s"],
                                  config["service.heartbeat_interval_s"]),
        incarnations=IncarnationFiles(paths.runtime / "gilgul"),
        hook=PolicyHook(config["gilgul.policy_script"], logger),
        heartbeat_interval_s=config["service.heartbeat_interval_s"],
    )
    lock = SupervisorLock.acquire(rundir.prepare(paths), stack)
    try:
        supervisor = Supervisor(specs(config, reg), paths.runtime, logger, env, gilgul,
                                limiter=MemoryLimiter(find_layout(stack), logger),
                                open_bus=bus_mod.bus_opener(config, stack), stack=stack,
                                lock=lock, clock=clock)
        supervisor.secrets = secrets_broker(config, stack, paths, reg,
                                            children_identify(supervisor.running_children,
                                                              supervisor=os.getpid()), logger)
        return supervisor
    except BaseException:
        lock.release()
        raise
