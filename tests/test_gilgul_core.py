"""gilgul's one core over a backend written for the test: what a new backend has to provide.

The systemd and children backends are exercised by tests/test_gilgul_daemon.py,
tests/test_gilgul_systemd.py and tests/test_supervisor_policy.py; here the core meets the
``Backend`` protocol alone, with a fake clock and a fake bus.
"""

from __future__ import annotations

import ast
import logging
from pathlib import Path

import pytest
from support import FakeBus

import runa.gilgul
import runa.supervisor
from runa.gilgul import (
    NO_HEARTBEAT,
    Failure,
    Gilgul,
    HeartbeatWatch,
    IncarnationFiles,
    Policy,
    PolicyHook,
    PolicySettings,
)
from runa.protocol.heartbeat import Heartbeat, health_key
from runa.stackbus import HealthWriter
from runa.testing import FakeClock


class ToyBackend:
    """The smallest backend: components are names with a pid while they are up."""

    stack_name = "the toy stack"
    start_by_hand = "'toy start'"

    def __init__(self) -> None:
        self.stopping = False
        self.up: dict[str, int] = {}
        self.calls: list[tuple[str, str, object]] = []

    def main_pid(self, component: str) -> int | None:
        return self.up.get(component)

    def start(self, component: str, incarnation: int, reason: str) -> bool:
        self.calls.append(("start", component, incarnation))
        return component != "broken"

    def kill(self, component: str, reason: str) -> None:
        self.calls.append(("kill", component, reason))
        self.up.pop(component, None)


@pytest.fixture
def world(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.INFO, "runa")
    clock, bus, backend = FakeClock(100.0), FakeBus(), ToyBackend()
    logger = logging.getLogger("runa.gilgul.test")
    core = Gilgul(policy=Policy(PolicySettings(escalate_after=3), clock),
                  heartbeats=HeartbeatWatch(timeout_s=3.0, interval_s=1.0),
                  incarnations=IncarnationFiles(tmp_path / "gilgul"),
                  hook=PolicyHook("", logger), heartbeat_interval_s=1.0)
    core.attach(backend, logger=logger, open_bus=lambda: bus,  # type: ignore[arg-type,return-value]
                clock_ns=clock.ns)

    def events(component: str) -> list[tuple[str, str, object]]:
        return [(r.RUNA_EVENT, getattr(r, "RUNA_REASON", ""), getattr(r, "RUNA_INCARNATION", ""))
                for r in caplog.records if getattr(r, "RUNA_COMPONENT", "") == component]

    return {"core": core, "backend": backend, "clock": clock, "bus": bus, "events": events,
            "tmp": tmp_path, "caplog": caplog}


def test_a_failure_is_restarted_as_the_next_incarnation_then_backs_off(world) -> None:
    core, backend, clock = world["core"], world["backend"], world["clock"]
    core.failed("toy", Failure("signal", "killed by SIGKILL"))
    core.turn()
    assert backend.calls == [("start", "toy", 1)]
    assert (world["tmp"] / "gilgul/toy.env").read_text() == \
        "RUNA_INCARNATION=1\nRUNA_RESTART_REASON=signal\n"
    backend.up["toy"] = 41
    core.running("toy", 41)
    decision = core.failed("toy", Failure("exit-code", "exit status 1", 1, 1, 41))
    assert decision is not None and decision.restart_in == 1.0
    core.turn()
    assert backend.calls == [("start", "toy", 1)]  # not before the backoff
    clock.advance(1.0)
    core.turn()
    assert backend.calls[-1] == ("start", "toy", 2)
    assert world["events"]("toy") == [("failed", "signal", 0), ("restart", "signal", 1),
                                      ("running", "", 1), ("failed", "exit-code", 1),
                                      ("restart", "exit-code", 2)]
    failed = [r for r in world["caplog"].records if getattr(r, "RUNA_EVENT", "") == "failed"]
    assert failed[1].getMessage() == ("toy failed (exit-code: exit status 1), incarnation 1, "
                                      "2 failure(s) in 60 s: restarting in 1 s")
    assert failed[1].RUNA_MAIN_PID == 41


def test_escalation_holds_and_names_how_to_start_it_by_hand(world) -> None:
    core, backend, clock = world["core"], world["backend"], world["clock"]
    for _ in range(3):
        core.failed("toy", Failure("exit-code"))
        clock.advance(10)
        core.turn()
    assert [e[0] for e in world["events"]("toy")][-2:] == ["failed", "escalated"]
    assert "held: no more restarts until it is started by hand ('toy start')" in \
        world["caplog"].text
    starts = [c for c in backend.calls if c[0] == "start"]
    clock.advance(100)
    core.turn()
    assert [c for c in backend.calls if c[0] == "start"] == starts


def test_a_component_up_but_silent_is_killed_for_no_heartbeat(world) -> None:
    core, backend, clock, bus = world["core"], world["backend"], world["clock"], world["bus"]
    for name, pid in (("loud", 10), ("quiet", 20)):
        backend.up[name] = pid
        core.running(name, pid)
    for _ in range(5):
        bus.values[health_key("loud")] = Heartbeat("loud", 10, 0, clock.ns(), "ready").to_json()
        core.turn()
        clock.advance(1.0)
    assert backend.calls == [("kill", "quiet", NO_HEARTBEAT)]
    silent = [r for r in world["caplog"].records if getattr(r, "RUNA_EVENT", "") == "no_heartbeat"]
    assert silent[0].RUNA_MAIN_PID == 20 and silent[0].RUNA_COMPONENT == "quiet"


def test_nothing_is_restarted_while_the_stack_stops(world) -> None:
    core, backend = world["core"], world["backend"]
    core.failed("toy", Failure("signal"))
    backend.stopping = True
    core.turn()
    assert backend.calls == []
    assert core.failed("toy", Failure("signal")) is None
    assert "toy failed (signal) while the toy stack stops: left stopped" in world["caplog"].text


def test_a_refused_start_is_a_failure_tried_again_after_the_backoff(world) -> None:
    core, backend, clock = world["core"], world["backend"], world["clock"]
    core.request("broken", "not-running")
    core.turn()
    assert backend.calls == [("start", "broken", 1)]
    core.turn()  # a first failure is tried again at once, a second after the backoff
    assert backend.calls == [("start", "broken", 1), ("start", "broken", 2)]
    core.turn()
    assert len(backend.calls) == 2
    clock.advance(1.0)
    core.turn()
    assert backend.calls[-1] == ("start", "broken", 3)


def test_the_heartbeat_the_writer_sets_is_the_record_gilgul_and_clients_read(tmp_path) -> None:
    """One record: what HealthWriter puts on the bus reads back as the same Heartbeat."""
    written: dict[str, str] = {}

    class Recorder:
        def set(self, key: str, value: str, ttl_ms: int) -> None:
            written[key] = value

    writer = HealthWriter(None, "t", logging.getLogger("runa.test"), 1.0)  # type: ignore[arg-type]
    writer._bus = Recorder()  # type: ignore[assignment]  # the bus it would open
    beat = Heartbeat("splinfer", 7, 3, 123, "ready")
    writer(beat)
    assert Heartbeat.from_json("splinfer", written["splinfer:health"]) == beat


def test_gilgul_exports_what_the_supervisor_uses_and_the_supervisor_imports_nothing_else() -> None:
    assert all(hasattr(runa.gilgul, name) for name in runa.gilgul.__all__)
    assert all(hasattr(runa.supervisor, name) for name in runa.supervisor.__all__)
    root = Path(runa.gilgul.__file__).parent.parent / "supervisor"
    for module in sorted(root.glob("*.py")):
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("runa.gilgul"):
                assert node.module == "runa.gilgul", f"{module.name} imports {node.module}"
                assert {a.name for a in node.names} <= set(runa.gilgul.__all__), module.name
