"""gilgul, Runa's service manager: renders the units, watches the components, reincarnates them.

One core (``Gilgul``: the restart policy, incarnation numbers, heartbeat watch and journal
events) runs over a backend: systemd's user manager over D-Bus (``runa daemon gilgul``) or
plain child processes (Runa's own supervisor, ``runa up``), so both modes decide alike.
What other packages may use is exported here; the modules behind it are gilgul's own.
See docs/gilgul.md.
"""

from runa.gilgul.backends.children import (
    Child,
    ChildProcesses,
    ChildState,
    ComponentSpec,
    daemon_argv,
    start_failure,
)
from runa.gilgul.backends.systemd import TARGET, SystemdUnits
from runa.gilgul.broker import BrokerThread, SecretsBroker
from runa.gilgul.broker import for_stack as secrets_broker
from runa.gilgul.core import Backend, Failure, Gilgul
from runa.gilgul.health import HeartbeatWatch
from runa.gilgul.hook import PolicyHook
from runa.gilgul.incarnation import IncarnationFiles
from runa.gilgul.policy import (
    NO_HEARTBEAT,
    NOT_RUNNING,
    RECONFIGURED,
    Decision,
    Policy,
    PolicySettings,
)
from runa.gilgul.requesters import Running, children_identify, systemd_identify
from runa.gilgul.units import write_atomically

__all__ = [
    "NOT_RUNNING",
    "NO_HEARTBEAT",
    "RECONFIGURED",
    "TARGET",
    "Backend",
    "BrokerThread",
    "Child",
    "ChildProcesses",
    "ChildState",
    "ComponentSpec",
    "Decision",
    "Failure",
    "Gilgul",
    "HeartbeatWatch",
    "IncarnationFiles",
    "Policy",
    "PolicyHook",
    "PolicySettings",
    "Running",
    "SecretsBroker",
    "SystemdUnits",
    "children_identify",
    "daemon_argv",
    "secrets_broker",
    "start_failure",
    "systemd_identify",
    "write_atomically",
]
