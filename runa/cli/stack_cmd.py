"""``runa up | down | status``: run the stack without systemd, under Runa's own supervisor."""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from runa import log
from runa import stackbus as bus_mod
from runa.chat import conversations
from runa.cli.context import (
    MODEL_FLAGS,
    CliContext,
    add_model_flags,
    as_environment,
    model_overrides,
)
from runa.cli.numbers import in_range
from runa.cli.secret_cmd import describe as describe_vault
from runa.cli.secret_cmd import vault_state
from runa.cli.voice import print_json, say
from runa.client import ServiceClient, ServiceUnavailable
from runa.errors import RunaError, error_line
from runa.gilgul import ChildState
from runa.splinter.liveness import is_alive, process_start_time
from runa.stackbus import BusNotRunning
from runa.supervisor import lock, rundir
from runa.supervisor import stack as supervisor_stack
from runa.supervisor import state as state_file

EX_UNAVAILABLE = 69
#: The command whose errors a detached start reads back from its supervisor's log.
UP = "runa up"


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
        "stack already up, it starts what is stopped or held (model flags are then ignored, "
        "saying so); of two 'up' at once, one starts the stack and the other waits for it. "
        "With a systemd user manager, "
        "prefer 'systemctl --user start runa.target'.",
    )
    up.add_argument("--detach", "-d", action="store_true",
                    help="return once the stack is ready, leaving it running")
    add_model_flags(up)
    up.set_defaults(func=cmd_up_then_next_step)
    down = commands.add_parser("down", help="stop a stack started with 'runa up'",
                               description="Stop the supervisor and every component it runs.")
    down.add_argument("--timeout", type=float, default=20.0, metavar="SECONDS",
                      help="how long to wait for a clean stop (0.1 to 3600; default: "
                      "%(default)s)")
    down.set_defaults(func=cmd_down)
    status = commands.add_parser(
        "status", help="is Runa running? its components, and the conversation state kept",
        description="Show each component's state, pid and last status. Exit status 0 when "
        "every component is running, 3 when the stack is not running or degraded.")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(func=cmd_status)


def _holder(ctx: CliContext) -> lock.Holder | None:
    """This user's live supervisor (the holder of the runtime directory's lock), or None.

    Its runtime directory is per user, not per stack, so one supervised stack runs at a
    time; a command for another stack must not signal this one. The pid comes from the
    kernel, never from the state file, which a killed supervisor leaves naming a pid that
    may since belong to anything. An unsafe runtime directory is refused (exit 77).
    """
    if not rundir.existing(ctx.paths):
        return None
    holder = lock.holder(ctx.paths.runtime)
    deadline = time.monotonic() + 2.0  # it writes its stack just after taking the lock
    while holder is not None and holder.stack is None and time.monotonic() < deadline:
        time.sleep(0.02)
        holder = lock.holder(ctx.paths.runtime)
    return holder


def _running_supervisor(ctx: CliContext) -> int | None:
    """The pid of the supervisor running ``ctx.stack``, if it runs."""
    holder = _holder(ctx)
    return holder.pid if holder and holder.stack == ctx.stack else None


def _other_stack(ctx: CliContext) -> str:
    """" (this user's supervisor runs the stack X, pid N)" when X is not ``ctx.stack``, else ""."""
    holder = _holder(ctx)
    if holder is None or holder.stack == ctx.stack:
        return ""
    return f" (this user's supervisor runs the stack {holder.stack or '?'}, pid {holder.pid})"


def _state(ctx: CliContext, pid: int | None) -> dict[str, Any]:
    """The state file as written by the supervisor ``pid``; {} when it is another's."""
    current = state_file.read(ctx.paths.runtime / "supervisor.json") or {}
    return current if pid and current.get("supervisor_pid") == pid else {}


def cmd_up(ctx: CliContext, args: argparse.Namespace) -> int:
    overrides = model_overrides(args)
    ctx.overrides.update(overrides)
    ctx.env = {**ctx.env, **as_environment(overrides)}  # the components read them too
    rundir.prepare(ctx.paths)
    holder = _holder(ctx)
    if holder:
        return _join(ctx, holder, overrides)
    if args.detach:
        return _up_detached(ctx, overrides)
    cfg = ctx.config
    logger = log.setup("supervisor", cfg["log.level"], cfg["log.target"])
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # a second 'runa up' may signal already
    try:
        supervisor = supervisor_stack.create(cfg, ctx.paths, ctx.stack, ctx.env, logger)
    except lock.AlreadySupervised as raced:  # another 'runa up' took the lock first
        if raced.holder is None:
            raise
        return _join(ctx, raced.holder, overrides)
    previous = state_file.read(ctx.paths.runtime / "supervisor.json")
    signal.signal(signal.SIGTERM, supervisor.request_stop)
    signal.signal(signal.SIGINT, supervisor.request_stop)
    signal.signal(signal.SIGHUP, supervisor.request_reconcile)
    supervisor.reconcile(previous)
    if not supervisor.start_all():
        supervisor.stop_all()
        raise StackError(f"the stack {ctx.stack} did not become ready: "
                         f"{supervisor.failure or 'stopped while starting'}")
    names = ", ".join(c.spec.name for c in supervisor.children)
    print(f"runa: stack {ctx.stack} is up ({names}); Ctrl-C stops it. Next, in another "
          "terminal: 'runa chat' to talk with the model", flush=True)
    return supervisor.run()


def _join(ctx: CliContext, holder: lock.Holder, overrides: dict[str, Any]) -> int:
    """'runa up' with a supervisor already there: refuse another stack; wait for one that
    is still starting; ask a running one to start whatever is stopped or held (SIGHUP)."""
    if holder.stack != ctx.stack:
        raise StackError(f"cannot start the stack {ctx.stack}{_other_stack(ctx)}: 'runa up' "
                         "runs one stack per user at a time; stop that one first with "
                         f"'runa --stack {holder.stack} down'")
    _say_ignored(ctx, holder.pid, overrides)
    if _state(ctx, holder.pid).get("starting", True):
        print(f"runa: another 'runa up' is starting the stack {ctx.stack} (supervisor pid "
              f"{holder.pid}); waiting for it", flush=True)
        _wait_started(ctx, holder.pid, time.monotonic() + _start_budget(ctx))
        print(f"runa: stack {ctx.stack} is up (supervisor pid {holder.pid})")
        return 0
    try:
        os.kill(holder.pid, signal.SIGHUP)  # start whatever is stopped or held
    except PermissionError as error:
        raise StackError(f"cannot signal the supervisor (pid {holder.pid}): "
                         f"{error.strerror}") from error
    print(f"runa: the stack {ctx.stack} is already running (supervisor pid {holder.pid}); "
          "asked it to start any stopped or held component")
    return 0


def _say_ignored(ctx: CliContext, pid: int, overrides: dict[str, Any]) -> None:
    """Model flags cannot change a running stack: say so, and how to apply them."""
    if not overrides:
        return
    given = [(flags, overrides[key]) for flags, _, key, _, _ in MODEL_FLAGS if key in overrides]
    names = ", ".join("/".join(flags) for flags, _ in given)
    again = " ".join(f"{flags[0]} {shlex.quote(str(value))}" for flags, value in given)
    stack = f" --stack {ctx.stack}" if ctx.stack_flag else ""
    say(UP, f"ignored {names}: the stack {ctx.stack} already runs (supervisor pid {pid}) "
        f"with the settings it started with; to apply them, restart it: "
        f"'runa{stack} down' then 'runa{stack} up {again}'")


def _wait_started(ctx: CliContext, pid: int, deadline: float) -> None:
    """Until the supervisor ``pid`` has started every component; its failure if it gives up."""
    while time.monotonic() < deadline:
        current = _state(ctx, pid)
        if current and not current.get("starting", True):
            return
        if _running_supervisor(ctx) != pid:
            failure = (state_file.read(ctx.paths.runtime / "supervisor.json") or {}).get(
                "failure")
            raise StackError(f"the stack {ctx.stack} did not become ready: "
                             f"{failure or f'its supervisor (pid {pid}) exited'}")
        time.sleep(0.05)
    raise StackError(f"the stack {ctx.stack} did not become ready in time "
                     f"(supervisor pid {pid})")


def _start_budget(ctx: CliContext) -> float:
    """How long a detached start may take: every component's start timeout, plus slack."""
    return sum(c.timeout_start_sec + 5 for c in ctx.registry.watched) + 5


def _up_detached(ctx: CliContext, overrides: dict[str, Any]) -> int:
    """Start the supervisor in the background; return once a supervisor has the stack up.

    Usually that is the one started here; when another 'runa up' took the lock first, it
    is that one, and this one says so.
    """
    runtime = ctx.paths.runtime
    log_path = runtime / "supervisor.log"
    argv = [sys.executable, "-m", "runa", "--stack", ctx.stack, "up"]
    begun = time.time()
    log_fd = rundir.open_private(log_path)
    offset = os.fstat(log_fd).st_size
    try:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log_fd,
                                   stderr=subprocess.STDOUT, start_new_session=True,
                                   env=dict(ctx.env))
    finally:
        os.close(log_fd)
    deadline = time.monotonic() + _start_budget(ctx)
    while time.monotonic() < deadline:
        holder = lock.holder(runtime)
        pid = holder.pid if holder else None
        current = _state(ctx, pid)
        comps = current.get("components", [])
        if current and not current.get("starting") and comps and all(
                c["state"] == ChildState.RUNNING for c in comps):
            if pid == process.pid:
                print(f"runa: stack {ctx.stack} is up (supervisor pid {pid})")
            else:
                _say_ignored(ctx, pid or 0, overrides)
                print(f"runa: another 'runa up' started the stack {ctx.stack} at the same "
                      f"time (supervisor pid {pid}); it is up")
            return 0
        if holder is None and process.poll() is not None:
            raise StackError(_why_not_started(ctx, process, begun, log_path, offset))
        time.sleep(0.05)
    process.terminate()
    raise StackError(f"the stack {ctx.stack} did not become ready in time; see {log_path}")


def _why_not_started(ctx: CliContext, process: subprocess.Popen[bytes], begun: float,
                     log_path: Path, offset: int) -> str:
    """The cause of a failed detached start, as the supervisor recorded it, and the log.

    Without a recorded failure (it stopped before starting anything: a bad configuration,
    say), the error line it printed into the log is the cause.
    """
    current = state_file.read(ctx.paths.runtime / "supervisor.json") or {}
    failure = current.get("failure") if current.get("updated", 0) >= begun else None
    if failure:
        return f"the stack {ctx.stack} did not become ready: {failure} (log: {log_path})"
    with open(log_path, "rb") as log_file:
        log_file.seek(offset)
        printed = log_file.read().decode("utf-8", "replace").splitlines()
    voice = error_line(UP, "")  # how the supervisor's 'runa up' says its error
    said = next((line.removeprefix(voice) for line in reversed(printed)
                 if line.startswith(voice)), "")
    return (f"the supervisor exited with status {process.returncode}"
            + (f": {said}" if said else "") + f"; see {log_path}")


def cmd_down(ctx: CliContext, args: argparse.Namespace) -> int:
    in_range("--timeout", args.timeout, 0.1, 3600, "seconds")
    pid = _running_supervisor(ctx)
    if pid is None:
        print(f"runa: the stack {ctx.stack} is not running{_other_stack(ctx)}")
        return 0
    ticks = process_start_time(pid)  # to know it gone without trusting the pid alone
    try:
        os.kill(pid, signal.SIGTERM)
    except PermissionError as error:
        raise StackError(f"cannot signal the supervisor (pid {pid}): {error.strerror}") \
            from error
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        gone = ticks is None or not is_alive(pid, ticks)
        if gone and lock.holder(ctx.paths.runtime) is None:
            print(f"runa: stack {ctx.stack} stopped")
            return 0
        time.sleep(0.05)
    raise StackError(f"the supervisor (pid {pid}) did not stop within {args.timeout:g} s")


def cmd_status(ctx: CliContext, args: argparse.Namespace) -> int:
    pid = _running_supervisor(ctx)
    current = _state(ctx, pid)
    comps = current.get("components", [])
    healthy = bool(pid) and bool(comps) and all(c["state"] == ChildState.RUNNING for c in comps)
    kept, unknown = _kept(ctx)
    vault, no_vault = vault_state(ctx)
    if args.json:
        print_json({"stack": ctx.stack, "supervisor_pid": pid, "healthy": healthy,
                    "memory_limits": current.get("memory_limits") if pid else None,
                    "components": comps,
                    "kept": None if kept is None else {
                        "conversations": kept.total, "state_bytes": kept.state_bytes,
                        "state_max_bytes": kept.state_max_bytes,
                        "state_max_age_s": kept.state_max_age_s},
                    "vault": vault if vault is not None else {"state": "unknown",
                                                              "why": no_vault}})
        return 0 if healthy else 3
    if not pid:
        print(f"stack {ctx.stack}: not running{_other_stack(ctx)}; start it with "
              "'runa up -d', then talk with 'runa chat'")
    else:
        condition = ("starting" if current.get("starting", True)
                     else "healthy" if healthy else "degraded")
        print(f"stack {ctx.stack}: supervisor pid {pid}, {condition}")
        for c in comps:
            print(f"  {c['name']:<10} {c['state']:<9} pid {c['pid']!s:<8} "
                  f"incarnation {c.get('incarnation', 0)!s:<3} {c['status']}"
                  + (f" ({c['reason']})" if c["reason"] else ""))
    print(conversations.kept_line(kept) if kept is not None else f"kept: unknown ({unknown})")
    print(f"vault: {describe_vault(vault)}" if vault is not None
          else f"vault: unknown ({no_vault})")
    return 0 if healthy else 3


def _kept(ctx: CliContext) -> tuple[conversations.Listing | None, str]:
    """What splinfer keeps, asked of it (on the shared stack its files are the service's),
    or None and why not."""
    try:
        with bus_mod.connect(ctx.config, ctx.stack) as bus, \
                ServiceClient(bus, "splinfer", "status") as client:
            client.check_running(grace=0.0)
            return conversations.listing(
                lambda payload: client.call(payload, idle_timeout=10.0)), ""
    except (BusNotRunning, ServiceUnavailable):
        return None, "the inference service is not running"
    except RunaError as error:
        return None, f"the inference service did not say: {error}"


def cmd_up_then_next_step(ctx: CliContext, args: argparse.Namespace) -> int:
    """``runa up -d`` ends with what a person does next (the foreground start says it first)."""
    status = cmd_up(ctx, args)
    if args.detach and status == 0:
        print("runa: next: 'runa chat' to talk with the model, 'runa down' to stop it")
    return status
