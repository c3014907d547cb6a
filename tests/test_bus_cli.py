"""``runa bus export`` and ``runa bus scope`` against a real bus, as a person runs them."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Iterator

import pytest
from support import runa

from runa.splinter import Bus
from runa.splinter.errors import InvalidTtl
from runa.splinter.kv import MAX_KEY_TTL_MS


@pytest.fixture
def bus(runa_env: dict[str, str]) -> Iterator[Bus]:
    runa("bus", "init", env=runa_env, check=True)
    with Bus.open(f"/dev/shm/runa-{runa_env['RUNA_STACK']}-main") as opened:
        yield opened


@pytest.fixture
def busy_component(bus: Bus) -> Iterator[None]:
    """Component "probe" sends ~5,000 messages a second (by its counters) while the test runs."""
    stats = bus.component_stats("probe")
    stop = threading.Event()

    def tick() -> None:
        while not stop.wait(0.01):
            stats.incr("msgs_out", 50)

    thread = threading.Thread(target=tick, daemon=True)
    thread.start()
    yield
    stop.set()
    thread.join()


def read_hot_key(bus: Bus, times: int) -> None:
    bus.set("user:1:hot", b"often read")
    for _ in range(times):
        assert bus.get("user:1:hot") == b"often read"


def row(output: str, first_cell: str) -> list[str]:
    for line in output.splitlines():
        cells = [c.strip() for c in re.split(r"[│┃|]", line) if c.strip()]
        if cells and cells[0] == first_cell:
            return cells
    raise AssertionError(f"no row {first_cell!r} in:\n{output}")


def test_scope_once_shows_a_components_rate_and_a_hot_key(
    runa_env: dict[str, str], bus: Bus, busy_component: None
) -> None:
    read_hot_key(bus, 42)
    result = runa("bus", "scope", "--once", "--interval", "0.5", env=runa_env, check=True)
    probe = row(result.stdout, "probe")  # component, in/s, out/s, msgs in, msgs out, ...
    out_rate = float(probe[2].replace(",", ""))
    assert 1_000 <= out_rate <= 20_000, probe
    assert int(probe[4]) > 0
    hot = row(result.stdout, "user:1:hot")  # key, reads, reads/s, bytes, ...
    assert (hot[1], hot[3]) == ("42", "10")
    assert row(result.stdout, "live keys")[1] == "1 / 2048"


def test_export_shows_decay_counters_and_hot_keys(runa_env: dict[str, str], bus: Bus) -> None:
    read_hot_key(bus, 7)
    bus.set("short", b"x", ttl_ms=1)
    time.sleep(0.01)
    bus.set("other", b"y", ttl_ms=60_000)
    data = json.loads(runa("bus", "export", env=runa_env, check=True).stdout)
    for counter in ("live", "expired", "idle_expired", "evictions", "store_full", "inserts"):
        assert counter in data["kv"], counter
    for counter in ("sweeps", "last_sweep_ns", "promotions", "reaped"):
        assert counter in data["keeper"], counter
    assert data["hot_keys"][0]["key"] == "user:1:hot" and data["hot_keys"][0]["reads"] == 7
    assert data["kv"]["live"] == 3  # "short" expired but no keeper runs here to remove it
    assert data["kv"]["expired"] == 0


def take_terminal() -> None:
    """In the child, after setsid: make the pty on stdin the controlling terminal, so Ctrl-C
    typed into it is a SIGINT, as in a person's terminal."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


@pytest.mark.parametrize("key", [b"q", b"\x03"], ids=["q", "ctrl-c"])
def test_scope_quits_on_q_or_ctrl_c(runa_env: dict[str, str], bus: Bus, key: bytes) -> None:
    """The live view in a real terminal: it draws frames and leaves on 'q' or Ctrl-C."""
    main, child = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "runa", "bus", "scope", "--interval", "0.1"],
                            env={**runa_env, "TERM": "xterm"}, stdin=child, stdout=child,
                            stderr=child, close_fds=True, start_new_session=True,
                            preexec_fn=take_terminal)
    os.close(child)
    try:
        seen = b""
        deadline = time.monotonic() + 15
        while b"hot keys" not in seen and time.monotonic() < deadline:
            if select.select([main], [], [], 0.5)[0]:
                seen += os.read(main, 65536)
        assert b"hot keys" in seen, seen[-500:]
        os.write(main, key)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(main)


@pytest.mark.parametrize(("args", "names"), [
    (("set", "k", "v", "--ttl", "99999999999999999999"), ("--ttl", "3153600000000")),
    (("set", "k", "v", "--ttl", "0"), ("--ttl", "1 to 3153600000000")),
    (("set", "k", "v", "--ttl", "-5"), ("--ttl", "1 to 3153600000000")),
    (("watch", "k", "--interval", "-1"), ("--interval", "0.01 to 3600")),
    (("watch", "k", "--interval", "nan"), ("--interval", "0.01 to 3600")),
    (("watch", "k", "--interval", "inf"), ("--interval", "0.01 to 3600")),
    (("watch", "k", "--interval", "0"), ("--interval", "0.01 to 3600")),
    (("watch", "k", "--count", "0"), ("--count", "at least 1")),
    (("watch", "--channel", "events", "--count", "-1"), ("--count", "at least 1")),
    (("scope", "--once", "--interval", "nan"), ("--interval", "0.05 to 3600")),
    (("scope", "--once", "--top", "-1"), ("--top", "0 to 1000")),
    (("scope", "--once", "--top", "99999999999999999999"), ("--top", "0 to 1000")),
])
def test_numeric_options_out_of_range_are_usage_errors(
    runa_env: dict[str, str], bus: Bus, args: tuple[str, ...], names: tuple[str, ...]
) -> None:
    """nan, infinities, negatives and huge numbers: one line naming the option and its
    range, exit 64 (usage), no traceback, and nothing written to the bus."""
    result = runa("bus", *args, env=runa_env, timeout=30)
    assert result.returncode == 64, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr and result.stdout == ""
    line = result.stderr.strip()
    assert line.startswith(f"runa bus {args[0]}: ") and "\n" not in line
    for name in names:
        assert name in line, line
    assert bus.get("k") is None


@pytest.mark.parametrize("ttl", [0, MAX_KEY_TTL_MS + 1])
def test_a_ttl_out_of_range_is_a_usage_error_from_the_cli_and_the_library(
    runa_env: dict[str, str], bus: Bus, ttl: int
) -> None:
    """One error, one status: a program using the library exits as ``runa bus set`` does."""
    cli = runa("bus", "set", "k", "v", "--ttl", str(ttl), env=runa_env)
    with pytest.raises(InvalidTtl) as refused:
        bus.set("k", b"v", ttl_ms=ttl)
    assert (cli.returncode, refused.value.exit_code) == (64, 64)
    assert f"1 to {MAX_KEY_TTL_MS}" in cli.stderr and f"1 to {MAX_KEY_TTL_MS}" in \
        str(refused.value)


def test_ttl_at_the_top_of_its_range_is_accepted(runa_env: dict[str, str], bus: Bus) -> None:
    result = runa("bus", "set", "k", "v", "--ttl", "3153600000000", env=runa_env)
    assert (result.returncode, result.stderr) == (0, "")
    assert bus.get("k") == b"v"
