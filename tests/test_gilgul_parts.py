"""gilgul's small parts: heartbeats, incarnation files, drop-ins, the policy script."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
from support import wait_for

from runa.gilgul import dbus, health
from runa.gilgul.dropins import NAME, DropIns
from runa.gilgul.hook import PolicyHook
from runa.gilgul.incarnation import IncarnationFiles
from runa.gilgul.units import Limits
from runa.protocol.heartbeat import Heartbeat


def test_health_values_are_parsed_and_junk_is_no_beat() -> None:
    beat = Heartbeat.from_json(
        "splinfer", b'{"pid": 7, "incarnation": 2, "ts_mono_ns": 5, "status": "ready"}')
    assert beat == Heartbeat("splinfer", 7, 2, 5, "ready")
    for junk in (None, b"", b"{", b'{"pid": "x"}', b"[]"):
        assert Heartbeat.from_json("splinfer", junk) is None


def _beat(pid: int, ts_mono_ns: int) -> Heartbeat:
    return Heartbeat("splinfer", pid, 0, ts_mono_ns, "")


def test_a_beat_counts_only_if_fresh_and_from_the_main_process() -> None:
    watch = health.HeartbeatWatch(timeout_s=5.0, interval_s=1.0)
    watch.started("splinfer", now=10.0)
    now_ns = 20 * 10**9
    assert not watch.observe("splinfer", _beat(8, now_ns), 7, 12.0, now_ns)
    assert not watch.observe("splinfer", _beat(7, now_ns - 4 * 10**9), 7, 12.0,
                             now_ns)
    assert watch.late(15.5) == ["splinfer"]  # nothing fresh since it started at 10
    assert watch.observe("splinfer", _beat(7, now_ns - 10**9), 7, 15.5, now_ns)
    assert watch.late(20.0) == [] and watch.late(20.6) == ["splinfer"]
    watch.stopped("splinfer")
    assert watch.late(100.0) == []
    assert health.HeartbeatWatch(0, 1.0).late(1e9) == []  # 0: never


def test_incarnation_files_round_trip(tmp_path: Path) -> None:
    files = IncarnationFiles(tmp_path / "gilgul")
    assert files.read("splinfer") == 0
    files.write("splinfer", 3, "watchdog")
    assert files.path("splinfer").read_text() == \
        "RUNA_INCARNATION=3\nRUNA_RESTART_REASON=watchdog\n"
    assert files.read("splinfer") == 3
    assert files.path("splinfer").stat().st_mode & 0o777 == 0o600
    files.write("splinfer", 4, "weird reason!")  # never anything systemd would misparse
    assert "RUNA_RESTART_REASON=other" in files.path("splinfer").read_text()


def test_drop_ins_are_planned_then_written_only_when_changed(tmp_path: Path) -> None:
    dropins = DropIns(tmp_path)
    limits = {"runa-splinfer.service": Limits("50%", "1G", 5)}
    plan = dropins.plan(limits)
    assert list(plan) == [tmp_path / "runa-splinfer.service.d" / NAME]
    assert not (tmp_path / "runa-splinfer.service.d").exists()  # planning writes nothing
    dropins.apply(plan)
    text = (tmp_path / "runa-splinfer.service.d" / NAME).read_text()
    assert "[Service]\nCPUQuota=50%\nMemoryMax=1G\nWatchdogSec=5\n" in text
    assert dropins.plan(limits) == {}


def test_the_policy_script_gets_component_reason_and_incarnation(tmp_path: Path) -> None:
    out = tmp_path / "args"
    script = tmp_path / "policy.sh"
    script.write_text(f'#!/bin/sh\necho "$@" > {out}\nexit 3\n')
    script.chmod(0o755)
    hook = PolicyHook(str(script), logging.getLogger("runa.test"))
    started = time.monotonic()
    assert hook.run("splinfer", "watchdog", 4)
    assert time.monotonic() - started < 1  # not waited for
    wait_for(lambda: out.exists() and out.read_text(), 10, "the script")
    assert out.read_text() == "splinfer watchdog 4\n"
    wait_for(lambda: (hook.reap(), not hook._running)[1], 10, "the script to be reaped")
    assert not PolicyHook("", logging.getLogger("runa.test")).run("x", "y", 1)
    assert not PolicyHook(str(tmp_path / "missing"), logging.getLogger("runa.test")).run(
        "x", "y", 1)


def test_the_session_bus_address(monkeypatch: pytest.MonkeyPatch) -> None:
    assert dbus.session_bus_address({"DBUS_SESSION_BUS_ADDRESS": "unix:path=/x"}) == \
        "unix:path=/x"
    assert dbus.session_bus_address({"XDG_RUNTIME_DIR": "/run/user/7"}) == \
        "unix:path=/run/user/7/bus"
    with pytest.raises(dbus.ManagerError, match="no D-Bus session bus"):
        dbus.session_bus_address({})
