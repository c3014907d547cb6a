"""The reincarnation policy as a plain state machine: a fake clock, no processes."""

from __future__ import annotations

import pytest

from runa.gilgul import settings as gilgul_settings
from runa.gilgul.policy import NOT_RUNNING, Decision, Policy, PolicySettings
from runa.testing import FakeClock

SETTINGS = PolicySettings(backoff_initial_s=1.0, backoff_max_s=8.0, escalate_after=6,
                          window_s=60.0)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def crash_and_restart(policy: Policy, clock: FakeClock, reason: str = "signal") -> float | None:
    """One failure; wait out its delay and issue the restart. The delay it decided."""
    decision = policy.failed("splinfer", reason)
    if decision.restart_in is not None:
        clock.advance(decision.restart_in)
        assert policy.due() == [("splinfer", reason)]
        policy.restarting("splinfer")
    return decision.restart_in


def test_the_first_failure_is_restarted_at_once(clock: FakeClock) -> None:
    policy = Policy(SETTINGS, clock)
    decision = policy.failed("splinfer", "watchdog")
    assert (decision.restart_in, decision.escalate, decision.failures) == (0.0, False, 1)
    assert decision.action == "restart" and decision.incarnation == 0
    assert policy.due() == [("splinfer", "watchdog")]
    assert policy.restarting("splinfer") == 1
    assert policy.due() == [] and policy.next_due() is None


def test_further_failures_back_off_exponentially_up_to_the_cap(clock: FakeClock) -> None:
    policy = Policy(PolicySettings(backoff_initial_s=1.0, backoff_max_s=8.0,
                                   escalate_after=100, window_s=600.0), clock)
    delays = [crash_and_restart(policy, clock) for _ in range(7)]
    assert delays == [0.0, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert policy.incarnation("splinfer") == 7


def test_a_restart_is_not_due_before_its_delay(clock: FakeClock) -> None:
    policy = Policy(SETTINGS, clock)
    crash_and_restart(policy, clock)
    decision = policy.failed("splinfer", "exit-code")
    assert decision.restart_in == 1.0
    assert policy.next_due() == clock.now() + 1.0
    clock.advance(0.999)
    assert policy.due() == []
    clock.advance(0.001)
    assert policy.due() == [("splinfer", "exit-code")]


def test_failures_older_than_the_window_are_forgotten(clock: FakeClock) -> None:
    policy = Policy(SETTINGS, clock)
    assert [crash_and_restart(policy, clock) for _ in range(3)] == [0.0, 1.0, 2.0]
    clock.advance(SETTINGS.window_s + 1)  # up and stable for a whole window
    assert crash_and_restart(policy, clock) == 0.0


def test_the_nth_failure_in_the_window_escalates_and_holds(clock: FakeClock) -> None:
    policy = Policy(SETTINGS, clock)
    delays = [crash_and_restart(policy, clock, "exit-code") for _ in range(5)]
    assert delays == [0.0, 1.0, 2.0, 4.0, 8.0]
    decision = policy.failed("splinfer", "exit-code")
    assert decision.escalate and decision.restart_in is None and decision.action == "hold"
    assert decision.failures == 6 and decision.incarnation == 5
    assert policy.held("splinfer")
    clock.advance(3600)
    assert policy.due() == [] and policy.next_due() is None


def test_a_held_component_started_by_hand_is_watched_again(clock: FakeClock) -> None:
    policy = Policy(PolicySettings(escalate_after=2, window_s=60.0), clock)
    crash_and_restart(policy, clock)
    assert policy.failed("splinfer", "exit-code").escalate
    policy.running("splinfer")  # someone fixed it and started it
    assert not policy.held("splinfer")
    # Still within the window: held again, but the episode already escalated once.
    again = policy.failed("splinfer", "exit-code")
    assert again.restart_in is None and not again.escalate
    clock.advance(61)
    assert policy.failed("splinfer", "signal").restart_in == 0.0


def test_retry_after_escalation_escalates_once_and_keeps_backing_off(clock: FakeClock) -> None:
    policy = Policy(PolicySettings(backoff_initial_s=1.0, backoff_max_s=4.0, escalate_after=3,
                                   window_s=600.0, retry_after_escalation=True), clock)
    decisions = []
    for _ in range(6):
        decision = policy.failed("splinfer", "exit-code")
        decisions.append((decision.restart_in, decision.escalate))
        clock.advance(decision.restart_in or 0)
        policy.restarting("splinfer")
    assert decisions == [(0.0, False), (1.0, False), (2.0, True), (4.0, False), (4.0, False),
                         (4.0, False)]


def test_a_request_starts_at_once_without_counting_a_failure(clock: FakeClock) -> None:
    policy = Policy(SETTINGS, clock)
    policy.request("splinter", NOT_RUNNING)
    assert policy.due() == [("splinter", NOT_RUNNING)]
    assert policy.restarting("splinter") == 1
    assert policy.failed("splinter", "signal").restart_in == 0.0  # still the first failure


def test_components_are_independent_and_incarnations_continue_from_a_seed(
        clock: FakeClock) -> None:
    policy = Policy(SETTINGS, clock, components=["splinter", "splinfer"])
    policy.seed("splinfer", 7)
    crash_and_restart(policy, clock)
    assert policy.incarnation("splinfer") == 8 and policy.incarnation("splinter") == 0
    assert policy.failed("splinter", "watchdog").restart_in == 0.0
    assert policy.failed("splinfer", "watchdog").restart_in == 1.0
    clock.advance(1.0)
    assert policy.due() == [("splinfer", "watchdog"), ("splinter", "watchdog")]


def test_settings_come_from_the_configuration() -> None:
    defaults = {s.key: s.default for s in gilgul_settings.SETTINGS}
    settings = PolicySettings.from_config(defaults)
    assert settings == PolicySettings()  # the dataclass defaults are the packaged ones
    assert [settings.delay(n) for n in range(1, 8)] == [0, 1, 2, 4, 8, 16, 30]


def test_a_decision_says_what_happens_next_in_words() -> None:
    def decided(restart_in: float | None) -> Decision:
        return Decision("splinfer", "signal", 3, 2, restart_in, escalate=False)

    assert decided(0).plan() == "restarting at once"
    assert decided(1.5).plan() == "restarting in 1.5 s"
    assert decided(None).plan("'runa up'") == \
        "held: no more restarts until it is started by hand ('runa up')"
