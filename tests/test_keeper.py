"""The bus keeper as a process: creates the buses, heartbeats, reaps, survives restarts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from support import runa, wait_for

from runa.splinter import Bus


@pytest.fixture
def keeper(runa_env: dict[str, str], tmp_path: Path):
    """Start ``runa daemon splinter`` (logging to a file); stop it with SIGTERM afterwards."""
    procs: list[subprocess.Popen] = []
    env = {**runa_env, "RUNA_LOG_TARGET": "stderr", "RUNA_SPLINTER_REAP_INTERVAL_S": "0.2"}
    log_path = tmp_path / "keeper.log"

    def start() -> subprocess.Popen:
        with open(log_path, "a") as log:
            proc = subprocess.Popen([sys.executable, "-m", "runa", "daemon", "splinter"],
                                    env=env, stderr=log)
        procs.append(proc)
        main = Path(f"/dev/shm/runa-{env['RUNA_STACK']}-main")
        wait_for(lambda: health(main, proc.pid), 10, "the keeper's first heartbeat")
        return proc

    start.env = env  # type: ignore[attr-defined]
    start.log = log_path  # type: ignore[attr-defined]
    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(10)


def health(main: Path, pid: int) -> dict | None:
    if not main.exists():
        return None
    with Bus.open(str(main)) as bus:
        raw = bus.get("splinter:health")
    record = json.loads(raw) if raw else None
    return record if record and record["pid"] == pid else None


def test_keeper_creates_every_bus_and_writes_its_health(keeper) -> None:
    proc = keeper()
    stack = keeper.env["RUNA_STACK"]
    for name in ("main", "coven", "alethia"):
        segment = Path(f"/dev/shm/runa-{stack}-{name}")
        assert segment.exists() and segment.stat().st_mode & 0o777 == 0o600
    record = health(Path(f"/dev/shm/runa-{stack}-main"), proc.pid)
    assert record["status"].startswith("serving stack") and record["incarnation"] == 0


def test_bus_contents_survive_a_keeper_restart(keeper) -> None:
    first = keeper()
    env = keeper.env
    assert runa("bus", "set", "user:1:note", "keep me", env=env).returncode == 0
    first.kill()
    first.wait()
    keeper()
    result = runa("bus", "get", "user:1:note", env=env)
    assert (result.returncode, result.stdout) == (0, "keep me\n")


def test_keeper_reaps_the_queue_of_a_sigkilled_owner(keeper) -> None:
    keeper()
    env = keeper.env
    main = f"/dev/shm/runa-{env['RUNA_STACK']}-main"
    owner = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from runa.splinter import Bus
        bus = Bus.open({main!r})
        bus.queue("victim")
        print("open", flush=True)
        time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True)
    assert owner.stdout.readline().strip() == "open"
    with Bus.open(main) as bus:
        assert [c.name for c in bus.channel_info()] == ["victim"]
        os.kill(owner.pid, signal.SIGKILL)
        owner.wait()
        wait_for(lambda: not bus.channel_info(), 10, "the keeper to reap the dead queue")
    log = keeper.log.read_text()
    assert f"reaped queue 'victim' of dead pid {owner.pid}" in log
