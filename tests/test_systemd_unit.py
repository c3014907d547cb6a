"""A Type=notify unit running a daemon on the service base, under a real user manager."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest
from support import register_demo, wait_for

pytestmark = pytest.mark.real_systemd

UNIT = "runa-demo-test.service"


def unit_text(startup_delay: float, watchdog_sec: int, sysconfdir: Path) -> str:
    return f"""[Unit]
Description=Runa demo daemon (test)

[Service]
Type=notify
ExecStart={sys.executable} -m runa daemon demo
Environment=RUNA_DEMO_STARTUP_DELAY_S={startup_delay} RUNA_DEMO_TICK_S=0.2
Environment=PYTHONPATH={Path(__file__).resolve().parents[1]}
Environment=RUNA_SYSCONFDIR={sysconfdir}
WatchdogSec={watchdog_sec}
Restart=no
TimeoutStartSec=5
"""


@pytest.fixture
def demo_unit(user_manager, systemctl, tmp_path):
    """Install the test unit in the manager's runtime unit directory, the demo registered in
    its own sysconfdir; remove it afterwards."""
    register_demo(tmp_path / "etc")
    unit_dir = Path(user_manager.env["XDG_RUNTIME_DIR"]) / "systemd/user"
    unit_dir.mkdir(parents=True, exist_ok=True)
    path = unit_dir / UNIT

    def install(startup_delay: float = 0.0, watchdog_sec: int = 2) -> None:
        path.write_text(unit_text(startup_delay, watchdog_sec, tmp_path / "etc"))
        systemctl("daemon-reload")

    yield install
    systemctl("stop", UNIT, check=False)
    systemctl("reset-failed", UNIT, check=False)
    path.unlink(missing_ok=True)
    systemctl("daemon-reload")


def show(systemctl, *props: str) -> dict[str, str]:
    out = systemctl("show", UNIT, "-p", ",".join(props)).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def test_unit_becomes_active_only_after_ready(demo_unit, systemctl) -> None:
    # 3 s of start-up, longer than TimeoutStartSec=5 would allow without EXTEND_TIMEOUT_USEC
    # pings... and long enough to see the unit still "activating" in the meantime.
    demo_unit(startup_delay=3.0)
    started = time.monotonic()
    systemctl("start", "--no-block", UNIT)
    wait_for(lambda: show(systemctl, "ActiveState")["ActiveState"] == "activating", 5,
             "the unit to be activating")
    wait_for(lambda: show(systemctl, "StatusText")["StatusText"].startswith("loading"), 5,
             "the daemon to report that it is loading")
    assert show(systemctl, "ActiveState")["ActiveState"] == "activating"
    wait_for(lambda: show(systemctl, "ActiveState")["ActiveState"] == "active", 15,
             "the unit to become active")
    assert time.monotonic() - started >= 2.9
    props = show(systemctl, "StatusText", "MainPID")
    assert props["StatusText"].startswith("ticking")


def test_sigstop_is_killed_by_the_watchdog(demo_unit, systemctl) -> None:
    demo_unit(watchdog_sec=1)
    systemctl("start", UNIT)
    pid = int(show(systemctl, "MainPID")["MainPID"])
    time.sleep(1.5)  # it keeps pinging while healthy
    assert show(systemctl, "ActiveState")["ActiveState"] == "active"
    os.kill(pid, signal.SIGSTOP)
    wait_for(lambda: show(systemctl, "Result")["Result"] == "watchdog", 15,
             "systemd to kill the frozen daemon for missing its watchdog")
    assert show(systemctl, "ActiveState")["ActiveState"] == "failed"


def test_sigterm_stops_it_cleanly(demo_unit, systemctl) -> None:
    from systemd import journal

    demo_unit()
    systemctl("start", UNIT)
    pid = show(systemctl, "MainPID")["MainPID"]
    systemctl("stop", UNIT)
    props = show(systemctl, "Result", "ExecMainStatus", "ActiveState")
    assert props == {"Result": "success", "ExecMainStatus": "0", "ActiveState": "inactive"}

    def stopped_event():
        reader = journal.Reader()
        reader.add_match(RUNA_EVENT="stopped", _PID=pid)
        return list(reader)

    wait_for(stopped_event, 10, "the 'stopped' event of the daemon in the journal")
