"""The keeper's decay sweep: expire TTLs, expire idle ephemeral keys, announce hot keys,
and keep the store counters true to the slot table.

The library (``runa.splinter``) provides the scans and the lock-checked removals; this module
is the policy: what to remove and when to announce, from configuration. One ``Decayer`` per
bus; only the main bus announces ``promote`` events (coven's keys are secrets and alethia's
are encrypted memory: neither may be filed anywhere by a broadcast).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from runa.config import Config
from runa.protocol import events as event_payloads
from runa.protocol.heartbeat import is_health_key
from runa.splinter import EVENTS_CHANNEL, Bus, EnvelopeSender
from runa.splinter import envelope as envelope_mod
from runa.splinter.decay import idle_ephemeral, promote_candidates
from runa.splinter.errors import ChannelNotFound, SplinterError
from runa.splinter.kv import StoreRepair
from runa.splinter.stats import ComponentStats

NS = 1_000_000_000


@dataclass(frozen=True)
class DecayPolicy:
    """What the sweep does, from the ``splinter.*`` settings."""

    idle_ns: int = 0  # 0: idle ephemeral keys stay until the store needs room
    promote_reads: int = 100
    promote_cooldown_ns: int = 600 * NS

    @classmethod
    def from_config(cls, config: Config) -> DecayPolicy:
        return cls(
            idle_ns=int(config["splinter.idle_expiry_s"] * NS),
            promote_reads=config["splinter.promote_reads"],
            promote_cooldown_ns=int(config["splinter.promote_cooldown_s"] * NS),
        )


@dataclass
class SweepReport:
    """What one sweep of one bus did."""

    expired: int = 0
    idle_expired: int = 0
    promoted: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    repaired: StoreRepair = field(default_factory=lambda: StoreRepair({}, 0))
    duration_ns: int = 0


class EventPublisher:
    """Sends events on the bus's ``events`` broadcast channel, re-creating it if it was reaped."""

    def __init__(self, bus: Bus, component: str, stats: ComponentStats | None = None) -> None:
        self.bus = bus
        self.component = component
        self.stats = stats
        self._sender: EnvelopeSender | None = None

    def publish(self, payload: dict[str, Any]) -> None:
        envelope = envelope_mod.event(self.component, payload)
        for _ in range(2):
            if self._sender is None:
                self._sender = self.bus.broadcast(EVENTS_CHANNEL, stats=self.stats)
            try:
                self._sender.send(envelope)
                return
            except ChannelNotFound:  # freed by a reap since it was opened: make it again
                self._sender = None
        raise ChannelNotFound(EVENTS_CHANNEL, "disappeared twice while publishing")


class Decayer:
    """One bus's decay sweep; records each sweep in the bus's keeper counters."""

    def __init__(
        self,
        bus: Bus,
        policy: DecayPolicy,
        *,
        bus_name: str = "main",
        events: EventPublisher | None = None,
        clock_ns: Callable[[], int] = time.monotonic_ns,
        timer_ns: Callable[[], int] = time.perf_counter_ns,
    ) -> None:
        self.bus = bus
        self.policy = policy
        self.bus_name = bus_name
        self.events = events
        self.clock_ns = clock_ns
        self.timer_ns = timer_ns

    def sweep(self) -> SweepReport:
        """Expire, idle-expire, promote, recount; removals re-check their reason under the lock."""
        started = self.timer_ns()
        kv, policy = self.bus.kv, self.policy
        now = self.clock_ns()
        report = SweepReport()
        for slot in kv.expired(now):
            report.expired += kv.expire(slot.index, slot.keygen, now)
        if policy.idle_ns:
            for slot in idle_ephemeral(kv, now, policy.idle_ns):
                report.idle_expired += kv.expire_idle(slot.index, slot.keygen, policy.idle_ns,
                                                      now)
        if self.events is not None:
            for slot in promote_candidates(kv, policy.promote_reads,
                                           policy.promote_cooldown_ns, now):
                if is_health_key(slot.key):
                    continue  # polled by every client; nothing a person said
                if not kv.mark_promoted(slot.index, slot.keygen, slot.reads, now):
                    continue  # removed or replaced since the scan
                try:
                    self.events.publish(event_payloads.promote(slot, now, self.bus_name))
                except SplinterError as error:  # e.g. a key too long for this bus's envelopes
                    report.errors.append(f"promote {slot.key!r}: {error}")
                    continue
                report.promoted.append(slot.key)
        report.repaired = kv.repair()
        report.duration_ns = self.timer_ns() - started
        self._record(report)
        return report

    def _record(self, report: SweepReport) -> None:
        counters = self.bus.keeper_counters
        counters.incr("sweeps")
        counters.put("last_sweep_ns", report.duration_ns)
        if report.duration_ns > counters.get()["max_sweep_ns"]:
            counters.put("max_sweep_ns", report.duration_ns)
        counters.put("last_sweep_at_ns", self.clock_ns())
        if report.promoted:
            counters.incr("promotions", len(report.promoted))
        if report.repaired:
            counters.incr("repairs")
