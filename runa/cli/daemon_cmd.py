"""``runa daemon NAME``: run one component in the foreground on the service base.

This is what the systemd units and gilgul's own supervisor execute. NAME is a component of
the registry (packaged, overridden by ``/etc/runa/components.d``), whose entry names the
``module:function`` that builds the daemon: it takes (config, logger, stack).
"""

from __future__ import annotations

import argparse

from runa import log
from runa.cli.context import CliContext, add_model_flags, model_overrides
from runa.components import daemon_factory
from runa.service import ServiceRunner
from runa.stackbus import HealthWriter


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "daemon",
        help="run one component in the foreground (what units execute)",
        description="Run one Runa component in the foreground. It speaks sd_notify "
        "(READY, STATUS, WATCHDOG, STOPPING) to systemd or to Runa's own supervisor, "
        "logs to journald (stderr where there is none) and stops cleanly on SIGTERM.",
    )
    parser.add_argument("name", metavar="NAME",
                        help="the component to run: one the component registry declares "
                        "(packaged, or added in /etc/runa/components.d)")
    add_model_flags(parser)
    parser.set_defaults(func=run_daemon, daemon_parser=parser)


def run_daemon(ctx: CliContext, args: argparse.Namespace) -> int:
    names = ctx.registry.names
    if args.name not in names:  # argparse's own words, with the registry's choices
        choices = ", ".join(repr(name) for name in sorted(names))
        args.daemon_parser.error(f"argument name: invalid choice: {args.name!r} "
                                 f"(choose from {choices})")
    ctx.overrides.update(model_overrides(args))
    cfg = ctx.config
    logger = log.setup(args.name, cfg["log.level"], cfg["log.target"])
    factory = daemon_factory(ctx.registry.get(args.name), ctx.registry)
    daemon = factory(cfg, logger, ctx.stack)
    interval = cfg["service.heartbeat_interval_s"]
    heartbeat = HealthWriter(cfg, ctx.stack, logger, interval)
    runner = ServiceRunner(daemon, logger, heartbeat=heartbeat, heartbeat_interval=interval)
    runner.install_signal_handlers()
    try:
        return runner.run()
    finally:
        heartbeat.close()
