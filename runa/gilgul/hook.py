"""The policy script: what an administrator runs when gilgul escalates.

Run as ``<script> <component> <reason> <incarnation>`` (the Minix reincarnation server's
``<label> <reason> <incarnation>``), in its own session, without waiting: gilgul's loop must
keep pinging its watchdog. Its exit status is logged when it ends. It runs inside gilgul's
sandbox (docs/gilgul.md): Unix sockets only, a private /tmp.
"""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Callable, Sequence

from runa import log

Spawn = Callable[..., subprocess.Popen[bytes]]


class PolicyHook:
    def __init__(self, script: str, logger: logging.Logger,
                 spawn: Spawn = subprocess.Popen) -> None:
        self.script = script
        self.logger = logger
        self.spawn = spawn
        self._running: list[tuple[str, subprocess.Popen[bytes]]] = []

    def run(self, component: str, reason: str, incarnation: int) -> bool:
        """Start the script; False when none is configured or it could not be started."""
        if not self.script:
            return False
        argv: Sequence[str] = [self.script, component, reason, str(incarnation)]
        try:
            process = self.spawn(argv, stdin=subprocess.DEVNULL, start_new_session=True)
        except OSError as error:
            log.event(self.logger, "policy_script_failed",
                      f"policy script {self.script} could not run: {error}",
                      level=logging.ERROR, component=component, script=self.script)
            return False
        self._running.append((component, process))
        return True

    def pids(self) -> set[int]:
        """The scripts still running (not yet reaped by ``reap``)."""
        return {process.pid for _, process in self._running}

    def reap(self) -> None:
        """Log the scripts that have finished."""
        still = []
        for component, process in self._running:
            code = process.poll()
            if code is None:
                still.append((component, process))
                continue
            log.event(self.logger, "policy_script_exited",
                      f"policy script for {component} exited with status {code}",
                      level=logging.INFO if code == 0 else logging.WARNING,
                      component=component, script=self.script, status=code)
        self._running = still
