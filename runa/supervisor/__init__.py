"""Runa's own supervisor, for machines without a systemd user manager.

It runs components as children, speaks the sd_notify protocol to them through its
own ``NOTIFY_SOCKET`` and enforces their watchdog, so a component cannot tell
whether systemd or this supervisor started it; what becomes of a failed one is decided by
gilgul's core, as under systemd. What ``runa up | down | status`` may use is exported here.
"""

from runa.supervisor.core import Supervisor
from runa.supervisor.lock import AlreadySupervised, Holder, SupervisorLock
from runa.supervisor.lock import holder as lock_holder
from runa.supervisor.rundir import RuntimeDirError, open_private
from runa.supervisor.rundir import existing as runtime_dir_exists
from runa.supervisor.rundir import prepare as prepare_runtime_dir
from runa.supervisor.stack import create
from runa.supervisor.state import read as read_state

__all__ = [
    "AlreadySupervised",
    "Holder",
    "RuntimeDirError",
    "Supervisor",
    "SupervisorLock",
    "create",
    "lock_holder",
    "open_private",
    "prepare_runtime_dir",
    "read_state",
    "runtime_dir_exists",
]
