"""``runa bus scope``: a live terminal view of one bus — rates, depths, hot keys, decay.

Rates are counter deltas between two samples divided by the time between them, so the first
frame appears one interval after the start (``--once`` prints exactly that frame and exits).
Sampling reads the segment without taking any lock and without touching read counters, so
watching a bus never changes what it shows. ``q`` or Ctrl-C leaves the live view.
"""

from __future__ import annotations

import contextlib
import os
import select
import sys
import termios
import time
import tty
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TextIO

from runa.splinter import Bus, ChannelInfo, SlotInfo
from runa.splinter.decay import hot_keys

STORE_RATES = ("inserts", "unsets", "expired", "idle_expired", "evictions", "store_full")


@dataclass(frozen=True)
class Sample:
    """Everything one frame needs, read at monotonic time ``t`` (seconds)."""

    t: float
    now_ns: int
    stats: dict[str, dict[str, int]]
    channels: list[ChannelInfo]
    kv: dict[str, int]
    keeper: dict[str, int]
    hot: list[SlotInfo]


def take_sample(bus: Bus, top: int, clock_ns: Callable[[], int] = time.monotonic_ns) -> Sample:
    now = clock_ns()
    return Sample(t=now / 1e9, now_ns=now, stats=bus.stats.snapshot(),
                  channels=bus.channel_info(), kv=bus.kv.counts(),
                  keeper=bus.keeper_counters.get(), hot=hot_keys(bus.kv, top))


def _rate(cur: int, prev: int | None, dt: float) -> float:
    return (cur - prev) / dt if prev is not None and dt > 0 else 0.0


def _fmt_rate(r: float) -> str:
    return f"{r:,.0f}" if r >= 10 or r == 0 else f"{r:.1f}"


def render(prev: Sample, cur: Sample, title: str) -> Any:
    """One frame as a rich renderable (tables for components, channels, hot keys, store)."""
    from rich.console import Group
    from rich.table import Table

    dt = cur.t - prev.t
    comps = Table(title="components", title_justify="left", expand=False)
    for col in ("component", "in/s", "out/s", "msgs in", "msgs out", "bad schema",
                "backpressure", "errors"):
        comps.add_column(col, justify="left" if col == "component" else "right")
    for name, c in sorted(cur.stats.items()):
        p = prev.stats.get(name, {})
        comps.add_row(name, _fmt_rate(_rate(c["msgs_in"], p.get("msgs_in"), dt)),
                      _fmt_rate(_rate(c["msgs_out"], p.get("msgs_out"), dt)),
                      str(c["msgs_in"]), str(c["msgs_out"]), str(c["bad_schema"]),
                      str(c["backpressure"]), str(c["errors"]))

    chans = Table(title="channels", title_justify="left")
    for col in ("channel", "kind", "owner", "depth", "sent/s", "subscribers", "dropped",
                "backpressure"):
        chans.add_column(col, justify="left" if col in ("channel", "kind", "owner") else "right")
    prev_sent = {c.name: c.sent for c in prev.channels}
    for ch in cur.channels:
        owner = f"{ch.owner_pid}{'' if ch.owner_alive else ' (dead)'}"
        depth = f"{ch.depth_bytes} B ({100 * ch.depth_bytes / ch.capacity:.0f}%)"
        chans.add_row(ch.name, ch.kind, owner, depth,
                      _fmt_rate(_rate(ch.sent, prev_sent.get(ch.name), dt)),
                      str(len(ch.subscribers)), str(ch.dropped), str(ch.backpressure))

    hot = Table(title="hot keys (reads since insert)", title_justify="left")
    for col in ("key", "reads", "reads/s", "bytes", "ephemeral", "ttl"):
        hot.add_column(col, justify="left" if col == "key" else "right")
    prev_reads = {(s.key, s.keygen): s.reads for s in prev.hot}
    for s in cur.hot:
        ttl = f"{max(0, s.expiry_ns - cur.now_ns) / 1e9:.1f} s" if s.expiry_ns else "-"
        hot.add_row(s.key, str(s.reads),
                    _fmt_rate(_rate(s.reads, prev_reads.get((s.key, s.keygen)), dt)),
                    str(s.length), "yes" if s.ephemeral else "", ttl)

    store = Table(title="store and decay", title_justify="left")
    store.add_column("counter")
    store.add_column("total", justify="right")
    store.add_column("per s", justify="right")
    store.add_row("live keys", f"{cur.kv['live']} / {cur.kv['slots']}", "")
    store.add_row("tombstones", str(cur.kv["tombstones"]), "")
    for name in STORE_RATES:
        store.add_row(name, str(cur.kv[name]),
                      _fmt_rate(_rate(cur.kv[name], prev.kv.get(name), dt)))
    k = cur.keeper
    store.add_row("promotions", str(k["promotions"]),
                  _fmt_rate(_rate(k["promotions"], prev.keeper.get("promotions"), dt)))
    store.add_row("reaped", str(k["reaped"]), "")
    age = f", {max(0, cur.now_ns - k['last_sweep_at_ns']) / 1e9:.1f} s ago" if k["sweeps"] else ""
    store.add_row("keeper sweeps", str(k["sweeps"]),
                  f"last {k['last_sweep_ns'] / 1e6:.2f} ms{age}")
    header = f"{title} — every {dt:.2f} s — q or Ctrl-C quits"
    return Group(header, comps, chans, hot, store)


@contextlib.contextmanager
def _cbreak(stream: TextIO) -> Iterator[bool]:
    """Single-key input on a terminal (Ctrl-C still interrupts); yields False if not a tty."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        yield False
        return
    if not os.isatty(fd):
        yield False
        return
    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        yield True
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _quit_pressed(stream: TextIO, timeout: float, keys: bool) -> bool:
    """Wait up to ``timeout`` seconds; True if q was typed meanwhile."""
    if not keys:
        time.sleep(timeout)
        return False
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([stream], [], [], left)
        if ready and os.read(stream.fileno(), 32).lower().find(b"q") >= 0:
            return True
    return False


def run(bus: Bus, *, interval: float, once: bool, top: int, title: str,
        out: TextIO | None = None, keys_in: TextIO | None = None) -> int:
    """The scope loop; ``once`` prints a single frame (after one interval) and returns."""
    from rich.console import Console
    from rich.live import Live

    out = out or sys.stdout
    console = Console(file=out, width=None if out.isatty() else
                      int(os.environ.get("COLUMNS", "120")))
    prev = take_sample(bus, top)
    if once:
        time.sleep(interval)
        console.print(render(prev, take_sample(bus, top), title))
        return 0
    keys_in = keys_in or sys.stdin
    try:
        with _cbreak(keys_in) as keys, Live(console=console, auto_refresh=False,
                                            screen=False) as live:
            while True:
                if _quit_pressed(keys_in, interval, keys):
                    return 0
                cur = take_sample(bus, top)
                live.update(render(prev, cur, title), refresh=True)
                prev = cur
    except KeyboardInterrupt:
        return 0
