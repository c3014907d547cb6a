"""``runa up | down | status``: run the stack without systemd, under Runa's own supervisor."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time

from runa import log
from runa.cli.context import CliContext, add_model_flags, as_environment, model_overrides
from runa.errors import RunaError
from runa.gilgul import registry
from runa.supervisor import stack as supervisor_stack
from runa.supervisor import state as state_file

EX_UNAVAILABLE = 69


class StackError(RunaError):
    exit_code = EX_UNAVAILABLE


def register(commands: argparse._SubParsersAction) -> None:
    up = commands.add_parser(
        "up",
        help="start Runa under its own supervisor (no systemd needed); -d: in the background",
        description="Start every enabled component of the registry under Runa's own "
        "supervisor (gilgul without systemd) and wait until each has reported READY. It "
        "restarts failed components with gilgul's policy and logs the same journal events "
        "('runa audit'). In the foreground Ctrl-C stops the stack; with --detach the "
        "supervisor keeps running in the background and 'runa down' stops it. With the "
        "stack already up, it starts what is stopped or held. With a systemd user manager, "
        "prefer 'systemctl --user start runa.target'.",
    )
    up.add_argument("--detach", "-d", action="store_true",
                    help="return once the stack is ready, leaving it running")
    add_model_flags(up)
    up.set_defaults(func=cmd_up_then_next_step)
    down = commands.add_parser("down", help="stop a stack started with 'runa up'",
                               description="Stop the supervisor and every component it runs.")
    down.add_argument("--timeout", type=float, default=20.0, metavar="SECONDS",
                      help="how long to wait for a clean stop (default: %(default)s)")
    down.set_defaults(func=cmd_down)
    status = commands.add_parser(
        "status", help="is Runa running? its components, and the conversation state kept",
        description="Show each component's state, pid and last status. Exit status 0 when "
        "every component is running, 3 when the stack is not running or degraded.")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(func=cmd_status)


def _live_supervisor(ctx: CliContext) -> tuple[int, str] | None:
    """This user's running supervisor: (pid, the stack it runs), or None.

    Its state file and notify socket are per user, not per stack, so one supervised
    stack runs at a time; a command for another stack must not signal this one.
    """
    current = state_file.read(ctx.paths.runtime / "supervisor.json")
    pid = current.get("supervisor_pid") if current else None
    if not pid or not state_file.pid_alive(pid):
        return None
    return pid, str(current.get("stack") or ctx.stack)


def _running_supervisor(ctx: CliContext) -> int | None:
    """The pid of the supervisor running ``ctx.stack``, if it runs."""
    live = _live_supervisor(ctx)
    return live[0] if live and live[1] == ctx.stack else None


def _other_stack(ctx: CliContext) -> str:
    """" (this user's supervisor runs the stack X, pid N)" when X is not ``ctx.stack``, else ""."""
    live = _live_supervisor(ctx)
    if live is None or live[1] == ctx.stack:
        return ""
    return f" (this user's supervisor runs the stack {live[1]}, pid {live[0]})"


def cmd_up(ctx: CliContext, args: argparse.Namespace) -> int:
    overrides = model_overrides(args)
    ctx.overrides.update(overrides)
    ctx.env = {**ctx.env, **as_environment(overrides)}  # the components read them too
    live = _live_supervisor(ctx)
    if live and live[1] != ctx.stack:
        raise StackError(f"cannot start the stack {ctx.stack}{_other_stack(ctx)}: 'runa up' "
                         "runs one stack per user at a time; stop that one first with "
                         f"'runa --stack {live[1]} down'")
    pid = live[0] if live else None
    if pid:
        os.kill(pid, signal.SIGHUP)  # start whatever is stopped or held
        print(f"runa: the stack {ctx.stack} is already running (supervisor pid {pid}); "
              "asked it to start any stopped or held component")
        return 0
    if args.detach:
        return _up_detached(ctx)
    cfg = ctx.config
    logger = log.setup("supervisor", cfg["log.level"], cfg["log.target"])
    previous = state_file.read(ctx.paths.runtime / "supervisor.json")
    supervisor = supervisor_stack.create(cfg, ctx.paths, ctx.stack, ctx.env, logger)
    signal.signal(signal.SIGTERM, supervisor.request_stop)
    signal.signal(signal.SIGINT, supervisor.request_stop)
    signal.signal(signal.SIGHUP, supervisor.request_reconcile)
    supervisor.reconcile(previous)
    if not supervisor.start_all():
        failed = [c.describe() for c in supervisor.children if c.state != "running"]
        supervisor.stop_all()
        raise StackError(f"the stack did not become ready: {failed}")
    names = ", ".join(c.spec.name for c in supervisor.children)
    print(f"runa: stack {ctx.stack} is up ({names}); Ctrl-C stops it. Next, in another "
          "terminal: 'runa chat' to talk with the model", flush=True)
    return supervisor.run()


def _start_budget(ctx: CliContext) -> float:
    """How long a detached start may take: every component's start timeout, plus slack."""
    reg = registry.load(ctx.paths.sysconfdir)
    return sum(c.timeout_start_sec + 5 for c in reg.watched) + 5


def _up_detached(ctx: CliContext) -> int:
    runtime = ctx.paths.runtime
    runtime.mkdir(parents=True, exist_ok=True)
    log_path = runtime / "supervisor.log"
    argv = [sys.executable, "-m", "runa", "--stack", ctx.stack, "up"]
    with open(log_path, "ab") as log_file:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log_file,
                                   stderr=subprocess.STDOUT, start_new_session=True,
                                   env=dict(ctx.env))
    deadline = time.monotonic() + _start_budget(ctx)
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise StackError(f"the supervisor exited with status {process.returncode}; "
                             f"see {log_path}")
        current = state_file.read(runtime / "supervisor.json")
        comps = current.get("components", []) if current else []
        if current and current.get("supervisor_pid") == process.pid and comps and all(
                c["state"] == "running" for c in comps):
            print(f"runa: stack {ctx.stack} is up (supervisor pid {process.pid})")
            return 0
        time.sleep(0.05)
    process.terminate()
    raise StackError(f"the stack did not become ready in time; see {log_path}")


def cmd_down(ctx: CliContext, args: argparse.Namespace) -> int:
    pid = _running_supervisor(ctx)
    if pid is None:
        print(f"runa: the stack {ctx.stack} is not running{_other_stack(ctx)}")
        return 0
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        if not state_file.pid_alive(pid):
            print(f"runa: stack {ctx.stack} stopped")
            return 0
        time.sleep(0.05)
    raise StackError(f"the supervisor (pid {pid}) did not stop within {args.timeout:g} s")


def cmd_status(ctx: CliContext, args: argparse.Namespace) -> int:
    from runa.chat.conversations import kept_on_disk, size_text  # only status needs them

    pid = _running_supervisor(ctx)
    current = state_file.read(ctx.paths.runtime / "supervisor.json") or {}
    comps = current.get("components", []) if pid else []
    healthy = bool(pid) and bool(comps) and all(c["state"] == "running" for c in comps)
    kept = kept_on_disk(ctx.paths.state / "conversations")
    if args.json:
        print(json.dumps({"stack": ctx.stack, "supervisor_pid": pid, "healthy": healthy,
                          "memory_limits": current.get("memory_limits") if pid else None,
                          "components": comps,
                          "kept": kept.__dict__ if kept else None}, indent=2))
    elif not pid:
        print(f"stack {ctx.stack}: not running{_other_stack(ctx)}; start it with "
              "'runa up -d', then talk with 'runa chat'")
    else:
        print(f"stack {ctx.stack}: supervisor pid {pid}, {'healthy' if healthy else 'degraded'}")
        for c in comps:
            print(f"  {c['name']:<10} {c['state']:<9} pid {c['pid']!s:<8} "
                  f"incarnation {c.get('incarnation', 0)!s:<3} {c['status']}"
                  + (f" ({c['reason']})" if c["reason"] else ""))
    if kept is not None and not args.json:
        days = ctx.config["splinfer.state_max_age_days"]
        print(f"kept: {kept.conversations} conversations, saved model state "
              f"{size_text(kept.state_bytes)} in {kept.state_files} files (up to "
              f"{ctx.config['splinfer.state_max_mib']} MiB"
              + (f", each dropped after {days:g} days unused)" if days else ")"))
    return 0 if healthy else 3


def cmd_up_then_next_step(ctx: CliContext, args: argparse.Namespace) -> int:
    """``runa up -d`` ends with what a person does next (the foreground start says it first)."""
    status = cmd_up(ctx, args)
    if args.detach and status == 0:
        print("runa: next: 'runa chat' to talk with the model, 'runa down' to stop it")
    return status
