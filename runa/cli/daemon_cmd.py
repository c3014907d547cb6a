"""``runa daemon NAME``: run one component in the foreground on the service base.

This is what the systemd units and gilgul's own supervisor execute.
"""

from __future__ import annotations

import argparse
import importlib

from runa import log
from runa.cli.context import CliContext, add_model_flags, model_overrides
from runa.service import ServiceRunner
from runa.stackbus import HealthWriter

# name -> "module:factory"; a factory takes (config, logger, stack) and returns a Daemon.
DAEMONS = {
    "demo": "runa.demo.daemon:create",
    "splinter": "runa.keeper.daemon:create",
    "splinfer": "runa.splinfer.daemon:create",
    "gilgul": "runa.gilgul.daemon:create",
    "tieto": "runa.tieto.daemon:create",
}


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "daemon",
        help="run one component in the foreground (what units execute)",
        description="Run one Runa component in the foreground. It speaks sd_notify "
        "(READY, STATUS, WATCHDOG, STOPPING) to systemd or to Runa's own supervisor, "
        "logs to journald (stderr where there is none) and stops cleanly on SIGTERM.",
    )
    parser.add_argument("name", choices=sorted(DAEMONS), help="the component to run")
    add_model_flags(parser)
    parser.set_defaults(func=run_daemon)


def run_daemon(ctx: CliContext, args: argparse.Namespace) -> int:
    ctx.overrides.update(model_overrides(args))
    cfg = ctx.config
    logger = log.setup(args.name, cfg["log.level"], cfg["log.target"])
    module_name, factory_name = DAEMONS[args.name].split(":")
    factory = getattr(importlib.import_module(module_name), factory_name)
    daemon = factory(cfg, logger, ctx.stack)
    interval = cfg["service.heartbeat_interval_s"]
    heartbeat = HealthWriter(cfg, ctx.stack, logger, interval)
    runner = ServiceRunner(daemon, logger, heartbeat=heartbeat, heartbeat_interval=interval)
    runner.install_signal_handlers()
    try:
        return runner.run()
    finally:
        heartbeat.close()
