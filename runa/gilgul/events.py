"""Journal events that gilgul writes alike under systemd and under its own supervisor.

``runa audit`` folds both modes' events into incarnations, so the wording and the
fields must not drift apart: each event both modes share is written here once.
"""

from __future__ import annotations

import logging
from typing import Any

from runa import log
from runa.gilgul.hook import PolicyHook
from runa.gilgul.policy import Decision, Policy


def running(logger: logging.Logger, policy: Policy, name: str, incarnation: int, pid: int,
            restart_issued: float | None, now: float) -> None:
    """``name`` is up as ``pid``: back from our restart (with its latency) or started by
    someone else, in which case the policy learns it runs and nothing of ours is pending."""
    fields: dict[str, Any] = {"component": name, "incarnation": incarnation,
                              "main_pid": pid}
    if restart_issued is not None:
        fields["latency_ms"] = round((now - restart_issued) * 1000, 1)
        message = (f"{name} is back as incarnation {incarnation} (pid {pid}, "
                   f"{fields['latency_ms']} ms after the restart)")
    else:
        policy.running(name)
        message = f"{name} is running (pid {pid})"
    log.event(logger, "running", message, **fields)


def escalated(logger: logging.Logger, policy: Policy, hook: PolicyHook, name: str,
              reason: str, decision: Decision) -> None:
    """Too many failures in the window: run the policy script (if any) and say so."""
    ran = hook.run(name, reason, decision.incarnation)
    log.event(logger, "escalated",
              f"{name} escalated after {decision.failures} failures in "
              f"{policy.settings.window_s:g} s ({reason})"
              + (f"; ran {hook.script}" if ran else "; no policy script"),
              level=logging.ERROR, component=name, reason=reason,
              incarnation=decision.incarnation, failures=decision.failures,
              decision=decision.action, script=hook.script)
