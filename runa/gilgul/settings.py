"""gilgul's settings, the [gilgul] section: the reincarnation policy (docs/gilgul.md)."""

from __future__ import annotations

from runa.config import Setting, in_range

SETTINGS: tuple[Setting, ...] = (
    Setting("gilgul.backoff_initial_s", float, 1.0,
            "Delay before the second restart in a row; each further one doubles it "
            "(the first restart is immediate).", in_range(0, 3600)),
    Setting("gilgul.backoff_max_s", float, 30.0, "The longest delay between restarts.",
            in_range(0, 86400)),
    Setting("gilgul.window_s", float, 60.0,
            "Failures older than this are forgotten: a component up this long starts over "
            "with an immediate restart.", in_range(1, 86400)),
    Setting("gilgul.escalate_after", int, 5,
            "Failures within the window that escalate: the policy script runs and the "
            "component is held.", in_range(1, 1000)),
    Setting("gilgul.retry_after_escalation", bool, False,
            "Keep restarting an escalated component (at the backoff) instead of holding it."),
    Setting("gilgul.policy_script", str, "",
            "Run as '<script> <component> <reason> <incarnation>' on escalation (empty: none)."),
    Setting("gilgul.heartbeat_timeout_s", float, 10.0,
            "Restart a running component whose <component>:health key has been missing or "
            "stale this long (0: never).", in_range(0, 3600)),
)
