"""The reincarnation policy: when a failed component comes back, and when to stop trying.

Modelled on the Minix3 reincarnation server (shared notes, anchors §2): the first failure is
restarted at once; each further failure within ``window_s`` doubles the delay, from
``backoff_initial_s`` up to ``backoff_max_s``; the ``escalate_after``-th failure within the
window escalates (gilgul runs the policy script and logs ``RUNA_EVENT=escalated``) and the
component is then held (not restarted) until someone starts it, or, with
``retry_after_escalation``, retried at the capped delay.

A plain state machine: no processes, no I/O, time from an injected clock. gilgul's core
(``runa.gilgul.core``) drives it from what its backend reports (D-Bus signals under systemd,
ended children and missed watchdogs under Runa's own supervisor), so both modes make the same
decisions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

# Why a component needed a new incarnation. systemd's Result= names where systemd saw it
# (watchdog, signal, core-dump, exit-code, timeout, oom-kill, ...), and gilgul's own:
NO_HEARTBEAT = "no-heartbeat"  # alive, but its <component>:health key went missing or stale
NOT_RUNNING = "not-running"  # found stopped when gilgul reconciled
RECONFIGURED = "reconfigured"  # restarted so a changed WatchdogSec= takes effect


@dataclass(frozen=True)
class PolicySettings:
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 30.0
    escalate_after: int = 5
    window_s: float = 60.0
    retry_after_escalation: bool = False

    @classmethod
    def from_config(cls, config: Any) -> PolicySettings:
        return cls(
            backoff_initial_s=config["gilgul.backoff_initial_s"],
            backoff_max_s=config["gilgul.backoff_max_s"],
            escalate_after=config["gilgul.escalate_after"],
            window_s=config["gilgul.window_s"],
            retry_after_escalation=config["gilgul.retry_after_escalation"],
        )

    def delay(self, failures: int) -> float:
        """Seconds before restarting after the ``failures``-th failure in the window."""
        if failures <= 1:
            return 0.0
        return min(self.backoff_max_s, self.backoff_initial_s * 2 ** (failures - 2))


@dataclass(frozen=True)
class Decision:
    """What the policy decided about one failure."""

    component: str
    reason: str
    incarnation: int  # of the process that failed
    failures: int  # failures within the window, this one included
    restart_in: float | None  # seconds until the restart; None: held, no restart
    escalate: bool

    @property
    def action(self) -> str:
        if self.restart_in is None:
            return "hold"
        return "restart"

    def plan(self, start_by_hand: str = "") -> str:
        """The decision in words, for the journal; ``start_by_hand`` says how, if held."""
        if self.restart_in is None:
            how = f" ({start_by_hand})" if start_by_hand else ""
            return f"held: no more restarts until it is started by hand{how}"
        if self.restart_in == 0:
            return "restarting at once"
        return f"restarting in {self.restart_in:g} s"


@dataclass
class _Record:
    incarnation: int = 0
    failures: list[float] = field(default_factory=list)
    due: float | None = None  # when the pending restart is due
    reason: str = ""  # of the pending restart
    held: bool = False
    escalated: bool = False  # in the current episode (until the window empties)


class Policy:
    """Per-component failure history, pending restarts and incarnation numbers."""

    def __init__(self, settings: PolicySettings, clock: Callable[[], float],
                 components: Iterable[str] = ()) -> None:
        self.settings = settings
        self.clock = clock
        self._records: dict[str, _Record] = {name: _Record() for name in components}

    def _record(self, component: str) -> _Record:
        return self._records.setdefault(component, _Record())

    # -- what happened ----------------------------------------------------------------------

    def failed(self, component: str, reason: str) -> Decision:
        """A component died or was found hung; decide whether and when it comes back."""
        record = self._record(component)
        now = self.clock()
        horizon = now - self.settings.window_s
        record.failures = [t for t in record.failures if t > horizon] + [now]
        count = len(record.failures)
        if count == 1:
            record.escalated = False  # a new episode
        escalate = count >= self.settings.escalate_after and not record.escalated
        record.escalated = record.escalated or escalate
        if count >= self.settings.escalate_after and not self.settings.retry_after_escalation:
            record.held, record.due, record.reason = True, None, reason
            return Decision(component, reason, record.incarnation, count, None, escalate)
        delay = self.settings.delay(count)
        record.held, record.due, record.reason = False, now + delay, reason
        return Decision(component, reason, record.incarnation, count, delay, escalate)

    def request(self, component: str, reason: str) -> None:
        """Start ``component`` at once without counting a failure (e.g. found stopped)."""
        record = self._record(component)
        record.held, record.due, record.reason = False, self.clock(), reason

    def running(self, component: str) -> None:
        """The component is up by other means (started by hand): cancel and release."""
        record = self._record(component)
        record.due, record.held = None, False

    # -- what to do -------------------------------------------------------------------------

    def due(self) -> list[tuple[str, str]]:
        """Components whose restart is due now, with the reason, in name order."""
        now = self.clock()
        return sorted((name, r.reason) for name, r in self._records.items()
                      if r.due is not None and r.due <= now)

    def next_due(self) -> float | None:
        """The clock time of the next pending restart, if any."""
        times = [r.due for r in self._records.values() if r.due is not None]
        return min(times) if times else None

    def restarting(self, component: str) -> int:
        """A restart is being issued now: clear it and return the new incarnation number."""
        record = self._record(component)
        record.due = None
        record.incarnation += 1
        return record.incarnation

    # -- state ------------------------------------------------------------------------------

    def incarnation(self, component: str) -> int:
        return self._record(component).incarnation

    def seed(self, component: str, incarnation: int) -> None:
        """Continue counting from ``incarnation`` (gilgul restarted and read it back)."""
        self._record(component).incarnation = incarnation

    def held(self, component: str) -> bool:
        return self._record(component).held

    def pending(self, component: str) -> float | None:
        """When ``component``'s restart is due, if one is pending."""
        return self._record(component).due
