"""The supervisor: gilgul's core over child processes, with what only a supervisor needs.

This is gilgul without systemd (DESIGN §5). The children are run by gilgul's children backend
and judged by gilgul's core, the same core that ``runa daemon gilgul`` drives under systemd,
so both modes make the same decisions and write the same journal events (under
``SYSLOG_IDENTIFIER=runa-supervisor`` here). What is the supervisor's own: the sd_notify
socket in the runtime directory, the lock that makes it the stack's only one, the state file
``runa status`` reads, ending what an earlier, killed supervisor left running, and starting
the components in order (each once the one before is ready, like ``After=``).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from runa.crypto.process import undumpable
from runa.gilgul import (
    BrokerThread,
    Child,
    ChildProcesses,
    ChildState,
    ComponentSpec,
    Gilgul,
    Running,
    start_failure,
)
from runa.splinter import Bus
from runa.supervisor import leftovers, orphans
from runa.supervisor import state as state_file
from runa.supervisor.limits import MemoryLimiter
from runa.supervisor.lock import SupervisorLock
from runa.supervisor.notify import NotifyListener
from runa.supervisor.orphans import become_subreaper


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
        harden: Callable[[], None] = undumpable,
        adopt: Callable[[], None] = become_subreaper,
    ) -> None:
        """``lock``, when given, is held for this supervisor and released by stop_all;
        ``harden`` keeps this process out of core dumps before the secrets broker starts;
        ``adopt`` makes it the subreaper of its children's orphans (runa.supervisor.orphans)."""
        self.runtime_dir = runtime_dir
        self.state_path = runtime_dir / "supervisor.json"
        self.logger = logger
        self.gilgul = gilgul
        self.limiter = limiter
        self.stack = stack
        self.clock = clock
        self.harden = harden
        self.adopt = adopt
        self.lock = lock
        self.starting = True  # until start_all is done; reconcile requests wait for it
        self.failure = ""  # why the start failed, in the components' own words
        self.reconcile_requested = False
        self.listener = NotifyListener(runtime_dir / "notify.sock")
        self.processes = ChildProcesses(specs, gilgul, self.listener, limiter, env, logger,
                                        clock)
        self.children = self.processes.children
        self.secrets: BrokerThread | None = None  # gilgul's secrets broker, from start_all
        gilgul.attach(self.processes, logger=logger, open_bus=open_bus, clock_ns=clock_ns)

    def child(self, name: str) -> Child:
        return self.processes.child(name)

    def running_children(self) -> dict[int, Running]:
        """Each running child's pid, component and start time: who asks gilgul's secrets
        broker. Called from the broker's thread, so each child's process is read once."""
        table = {}
        for child in self.children:
            process, start = child.process, child.start_ticks
            if process is not None and start is not None and process.returncode is None:
                table[process.pid] = Running(child.spec.name, start)
        return table

    def _own_pids(self) -> set[int]:
        """The processes this supervisor started itself: its children and policy scripts."""
        return ({process.pid for process in (c.process for c in self.children) if process}
                | self.gilgul.hook.pids())

    @property
    def stopping(self) -> bool:
        return self.processes.stopping

    # -- life cycle -------------------------------------------------------------------------

    def request_stop(self, signum: int | None = None, _frame: object = None) -> None:
        self.processes.stopping = True

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
            child.incarnation = self.gilgul.seed(child.spec.name)
        self.gilgul.reconciled(
            (f"ended the earlier supervisor's {', '.join(names)}"
             + (f" (killed {', '.join(killed)})" if killed else "")
             if names else "nothing left over")
            + f"; starting {', '.join(c.spec.name for c in self.children)}",
            running="", queued="", starting=",".join(c.spec.name for c in self.children),
            cleaned=",".join(names), killed=",".join(killed), stack=self.stack)
        return names

    def start_all(self) -> bool:
        """Start the children in order, each once the one before is ready (like After=).

        False as soon as one fails to become ready (its start timeout, extended by
        ``EXTEND_TIMEOUT_USEC=``, bounds the wait) or a stop is requested. The secrets
        broker starts first: a component may need a secret before it is ready.
        """
        self.adopt()  # before any child runs: nothing it leaves behind escapes the tree
        if self.secrets is not None:
            self.harden()  # every secret value passes through the broker, and it keeps the key
            self.secrets.start()
        for child in self.children:
            if not self.processes.spawn(child, reason=""):
                self.gilgul.start_refused(child.spec.name)
            self._save()
            if not self._wait_ready(child):
                self.failure = "; ".join(start_failure(c) for c in self.children
                                         if c.process is not None
                                         and c.state != ChildState.RUNNING)
                return False
        self.starting = False
        self._save()
        return True

    def _wait_ready(self, child: Child) -> bool:
        while not self.stopping:
            self.poll(0.05)
            if child.state == ChildState.RUNNING:
                return True
            if child.state != ChildState.STARTING:
                return False
        return False

    def run(self) -> int:
        """Supervise until SIGTERM/SIGINT; then stop every child. Returns the exit status."""
        while not self.stopping:
            self.poll(0.5)
        self.stop_all()
        return 0

    def stop_all(self) -> None:
        """Stop every child (newest first), then let go of the socket, limits, bus and lock."""
        self.processes.stop_all()
        if self.secrets is not None:
            self.secrets.stop()
        self._save(running=False)
        self.listener.close()
        self.limiter.cleanup()
        self.gilgul.close()
        if self.lock is not None:
            self.lock.release()

    # -- one turn of the loop ---------------------------------------------------------------

    def poll(self, timeout: float) -> None:
        changed = self.processes.poll(self.gilgul.wait_bound(timeout))
        if self.reconcile_requested and not self.starting:
            self.reconcile_requested = False
            changed |= self.processes.start_stopped()
        changed |= self.gilgul.turn()
        orphans.reap_adopted(self._own_pids)
        if self.secrets is not None:
            self.secrets.check()
        if changed:
            self._save()

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
