"""gilgul's reactions, driven through a fake user manager, a fake bus and a fake clock."""

from __future__ import annotations

import logging
import signal
import tempfile
from pathlib import Path
from typing import Any

import pytest
from support import FakeBus

from runa import registry
from runa.components import packaged_schema
from runa.config import Config, Layer
from runa.errors import ConfigError
from runa.gilgul import TARGET
from runa.gilgul.daemon import GilgulDaemon
from runa.gilgul.dbus import UnitChanged
from runa.gilgul.dropins import DropIns
from runa.gilgul.hook import PolicyHook
from runa.gilgul.incarnation import IncarnationFiles
from runa.service import ServiceContext
from runa.testing import FakeClock

SPLINFER, SPLINTER, GILGUL = (registry.unit_name(n) for n in ("splinfer", "splinter", "gilgul"))


def core_registry() -> registry.Registry:
    """The packaged registry without tieto, whisper, coven, alethia and threadwell: these
    tests script splinter and splinfer only."""
    with tempfile.TemporaryDirectory() as etc:
        (Path(etc) / "components.d").mkdir()
        (Path(etc) / "components.d/50-no-tieto.toml").write_text(
            "[components.tieto]\nenabled = false\n[components.whisper]\nenabled = false\n"
            "[components.coven]\nenabled = false\n[components.alethia]\nenabled = false\n"
            "[components.threadwell]\nenabled = false\n")
        return registry.load(Path(etc))


class FakeManager:
    """Records calls; ``changed()`` queues the signal systemd would send."""

    def __init__(self) -> None:
        self.states: dict[str, dict[str, Any]] = {
            unit: {"ActiveState": "active", "MainPID": pid, "Result": "success",
                   "Job": (0, "/"), "WatchdogUSec": 10_000_000}
            for unit, pid in ((SPLINTER, 11), (SPLINFER, 12), (GILGUL, 13))}
        self.states[TARGET] = {"ActiveState": "active", "Job": (0, "/")}
        self.calls: list[tuple[Any, ...]] = []
        self.queue: list[Any] = []

    def watch(self, units: list[str]) -> None:
        self.calls.append(("watch", tuple(units)))

    def unit_state(self, unit: str) -> dict[str, Any]:
        return dict(self.states[unit])

    def start(self, unit: str) -> None:
        self.calls.append(("start", unit))

    def reset_failed(self, unit: str) -> None:
        self.calls.append(("reset_failed", unit))

    def kill(self, unit: str, signum: int) -> None:
        self.calls.append(("kill", unit, signum))

    def reload(self) -> None:
        self.calls.append(("reload",))

    def own_restarts(self, unit: str) -> int:
        return 2

    def events(self, timeout: float) -> list[Any]:
        out, self.queue = self.queue, []
        return out

    def close(self) -> None:
        pass

    def changed(self, unit: str, **props: Any) -> None:
        self.states[unit].update(props)
        self.queue.append(UnitChanged(unit, "org.freedesktop.systemd1.Unit", props))

    def actions(self) -> list[tuple[Any, ...]]:
        return [c for c in self.calls if c[0] != "watch"]


class Notes:
    def __init__(self) -> None:
        self.sent: list[str] = []

    def notify(self, state: str) -> None:
        self.sent.append(state)


def make_config(**values: Any) -> Config:
    base = {"gilgul.backoff_initial_s": 1.0, "gilgul.heartbeat_timeout_s": 3.0}
    return Config([Layer("test", {**base, **values})], packaged_schema())


@pytest.fixture
def world(tmp_path: Path):
    clock, manager, bus = FakeClock(100.0), FakeManager(), FakeBus()
    spawned: list[list[str]] = []

    class Spawned:
        def __init__(self, argv: list[str], **_kw: Any) -> None:
            spawned.append(list(argv))

        def poll(self) -> int:
            return 0

    inputs: dict[str, Any] = {"config": make_config()}

    def reload_inputs() -> tuple[Config, registry.Registry]:
        if isinstance(inputs["config"], Exception):
            raise inputs["config"]
        return inputs["config"], core_registry()

    def build(config: Config | None = None) -> tuple[GilgulDaemon, ServiceContext]:
        config = config or inputs["config"]
        logger = logging.getLogger("runa.gilgul.test")
        gilgul = GilgulDaemon(config, core_registry(), "t1", logger, env={},
                        connect=lambda: manager, open_bus=lambda: bus,  # type: ignore[arg-type,return-value]
                        dropins=DropIns(tmp_path / "units"),
                        incarnations=IncarnationFiles(tmp_path / "gilgul"),
                        hook=PolicyHook("/bin/policy", logger, spawn=Spawned),  # type: ignore[arg-type]
                        reload_inputs=reload_inputs, clock=clock, clock_ns=clock.ns)
        ctx = ServiceContext(notifier=Notes(), clock=clock,
                             logger=logger, watchdog_s=10.0)
        return gilgul, ctx

    return {"clock": clock, "manager": manager, "bus": bus, "build": build,
            "spawned": spawned, "inputs": inputs, "tmp": tmp_path}


def beat(bus: FakeBus, name: str, pid: int, clock: FakeClock) -> None:
    bus.values[f"{name}:health"] = (
        f'{{"pid": {pid}, "incarnation": 0, "ts_mono_ns": {clock.ns()}, "status": "ready"}}'
    ).encode()


def test_start_applies_limits_once_and_reconciles(world) -> None:
    manager, tmp = world["manager"], world["tmp"]
    manager.states[SPLINFER].update(ActiveState="failed", Result="watchdog", MainPID=0)
    manager.states[SPLINTER].update(ActiveState="inactive")
    (tmp / "gilgul").mkdir()
    (tmp / "gilgul/splinfer.env").write_text("RUNA_INCARNATION=4\n")
    gilgul, ctx = world["build"]()
    gilgul.start(ctx)
    assert ctx.incarnation == 2  # systemd's NRestarts of runa-gilgul.service
    assert ("watch", (SPLINFER, SPLINTER, TARGET)) in manager.calls
    assert manager.actions() == [("reload",)]  # three drop-ins, one daemon-reload
    for unit in (SPLINTER, SPLINFER, GILGUL):
        text = (tmp / f"units/{unit}.d/50-runa-limits.conf").read_text()
        assert "CPUQuota=100%\nMemoryMax=512M\nWatchdogSec=10\n" in text
    gilgul.step(0)
    assert manager.actions()[1:] == [("reset_failed", SPLINFER), ("start", SPLINFER),
                                     ("start", SPLINTER)]
    assert (tmp / "gilgul/splinfer.env").read_text() == \
        "RUNA_INCARNATION=5\nRUNA_RESTART_REASON=watchdog\n"
    assert "RUNA_RESTART_REASON=not-running" in (tmp / "gilgul/splinter.env").read_text()
    # A second start finds the drop-ins current: no reload.
    manager.calls.clear()
    world["build"]()[0].start(ctx)
    assert ("reload",) not in manager.calls


def test_a_failure_signal_restarts_at_once_then_backs_off(world, caplog) -> None:
    manager, clock = world["manager"], world["clock"]
    gilgul, ctx = world["build"]()
    gilgul.start(ctx)
    manager.calls.clear()
    caplog.set_level(logging.INFO, "runa")
    manager.changed(SPLINFER, ActiveState="failed", Result="signal", MainPID=0)
    gilgul.step(0)
    assert manager.actions() == [("reset_failed", SPLINFER), ("start", SPLINFER)]
    manager.changed(SPLINFER, ActiveState="active", MainPID=40)
    manager.changed(SPLINFER, ActiveState="failed", Result="exit-code", MainPID=0)
    gilgul.step(0)
    assert manager.actions()[2:] == []  # the second failure waits 1 s
    clock.advance(1.0)
    gilgul.step(0)
    assert manager.actions()[2:] == [("reset_failed", SPLINFER), ("start", SPLINFER)]
    events = [(r.RUNA_EVENT, getattr(r, "RUNA_REASON", ""), getattr(r, "RUNA_INCARNATION", ""))
              for r in caplog.records if getattr(r, "RUNA_COMPONENT", "") == "splinfer"]
    assert events == [("failed", "signal", 0), ("restart", "signal", 1), ("running", "", 1),
                      ("failed", "exit-code", 1), ("restart", "exit-code", 2)]


def test_escalation_runs_the_policy_script_and_holds(world) -> None:
    manager, clock = world["manager"], world["clock"]
    gilgul, ctx = world["build"](make_config(**{"gilgul.escalate_after": 2}))
    gilgul.start(ctx)
    manager.changed(SPLINFER, ActiveState="failed", Result="exit-code")
    gilgul.step(0)
    manager.changed(SPLINFER, ActiveState="activating")
    manager.changed(SPLINFER, ActiveState="failed", Result="exit-code")
    gilgul.step(0)
    clock.advance(60)
    gilgul.step(0)
    assert world["spawned"] == [["/bin/policy", "splinfer", "exit-code", "1"]]
    assert [c for c in manager.actions() if c[0] == "start"] == [("start", SPLINFER)]


def test_a_silent_component_is_killed_and_restarted_for_no_heartbeat(world) -> None:
    manager, clock, bus = world["manager"], world["clock"], world["bus"]
    gilgul, ctx = world["build"]()
    gilgul.start(ctx)
    for _ in range(5):  # splinter beats, splinfer has gone quiet (3 s timeout)
        beat(bus, "splinter", 11, clock)
        gilgul.step(0)
        clock.advance(1.0)
    assert manager.actions()[1:] == [("kill", SPLINFER, signal.SIGKILL)]
    manager.changed(SPLINFER, ActiveState="failed", Result="signal", MainPID=0)
    gilgul.step(0)
    assert manager.actions()[-1] == ("start", SPLINFER)
    assert "RUNA_RESTART_REASON=no-heartbeat" in \
        (world["tmp"] / "gilgul/splinfer.env").read_text()


def test_a_stale_heartbeat_of_an_earlier_process_does_not_count(world) -> None:
    manager, clock, bus = world["manager"], world["clock"], world["bus"]
    gilgul, ctx = world["build"]()
    gilgul.start(ctx)
    for _ in range(5):
        beat(bus, "splinter", 11, clock)
        beat(bus, "splinfer", 99, clock)  # not the main pid
        gilgul.step(0)
        clock.advance(1.0)
    assert ("kill", SPLINFER, signal.SIGKILL) in manager.calls
    assert ("kill", SPLINTER, signal.SIGKILL) not in manager.calls


def test_nothing_is_restarted_while_the_target_stops(world) -> None:
    manager = world["manager"]
    gilgul, ctx = world["build"]()
    gilgul.start(ctx)
    manager.calls.clear()
    manager.changed(TARGET, ActiveState="deactivating")
    manager.changed(SPLINFER, ActiveState="failed", Result="timeout")
    manager.changed(SPLINTER, ActiveState="inactive")
    gilgul.step(0)
    assert manager.actions() == []
    manager.changed(TARGET, ActiveState="active")  # started again: back to normal
    manager.changed(SPLINFER, ActiveState="active")
    manager.changed(SPLINFER, ActiveState="failed", Result="signal")
    gilgul.step(0)
    assert manager.actions()[-1] == ("start", SPLINFER)


def test_a_changed_watchdog_restarts_the_running_component(world) -> None:
    manager = world["manager"]
    gilgul, ctx = world["build"]()
    gilgul.start(ctx)
    manager.calls.clear()
    world["inputs"]["config"] = make_config(**{"components.splinfer.watchdog_sec": 3,
                                               "components.splinter.memory_max": "64M",
                                               "components.gilgul.watchdog_sec": 20})
    gilgul.reload_requested = True
    gilgul.step(0)
    assert manager.actions() == [("reload",), ("start", SPLINFER)]
    assert "MemoryMax=64M" in (world["tmp"] / f"units/{SPLINTER}.d/50-runa-limits.conf"
                               ).read_text()
    assert ctx.notifier.sent[-3:] == ["RELOADING=1", "WATCHDOG_USEC=20000000", "READY=1"]  # type: ignore[attr-defined]
    assert ctx.watchdog_s == 20.0


def test_a_bad_configuration_on_reload_changes_nothing(world, caplog) -> None:
    manager, tmp = world["manager"], world["tmp"]
    gilgul, ctx = world["build"]()
    gilgul.start(ctx)
    before = {p: p.read_text() for p in (tmp / "units").rglob("*.conf")}
    manager.calls.clear()
    world["inputs"]["config"] = ConfigError("/etc/runa/conf.d/x.toml",
                                            "components.splinfer.memory_max", "lots",
                                            "must be a size")
    gilgul.reload_requested = True
    gilgul.step(0)
    assert manager.actions() == []
    assert {p: p.read_text() for p in (tmp / "units").rglob("*.conf")} == before
    refused = [r for r in caplog.records if getattr(r, "RUNA_EVENT", "") == "reload_refused"]
    assert "/etc/runa/conf.d/x.toml: components.splinfer.memory_max" in refused[0].getMessage()
