"""The fault tests' stack, one for both modes.

gilgul under systemd (test_gilgul_systemd.py) and gilgul's own supervisor
(test_supervisor_policy.py) are put through the same faults with the same settings,
registry and policy script, so that their decisions can be compared.
"""

from __future__ import annotations

from pathlib import Path

from support import register_demo

SURVIVOR = ("test:survivor", "still here")

CONFIG = """\
[splinfer]
ctx_size = 512
threads = 2
batch_size = 512
{splinfer_extra}
[gilgul]
backoff_initial_s = 0.5
backoff_max_s = 2.0
window_s = 120.0
escalate_after = 4
heartbeat_timeout_s = 2.0
policy_script = "{root}/policy.sh"

[components.splinfer]
watchdog_sec = 2

[components.demo]
watchdog_sec = 2
"""

def write_fault_stack(root: Path, *, splinfer_extra: str = "", components_extra: str = ""
                      ) -> None:
    """``root/etc`` (settings, the demo component) and ``root/policy.sh``, which appends
    each escalation's arguments to ``root/escalations``."""
    (root / "etc/components.d").mkdir(parents=True, exist_ok=True)
    (root / "etc/runa.toml").write_text(CONFIG.format(root=root, splinfer_extra=splinfer_extra))
    register_demo(root / "etc", components_extra)
    hook = root / "policy.sh"
    hook.write_text(f'#!/bin/sh\necho "$1 $2 $3" >> {root}/escalations\n')
    hook.chmod(0o755)
