"""Unclean ends: SIGKILL mid-append loses at most the stated bound, a full disk is a clear
error that leaves the chain valid; both stores verify and open afterwards."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from support import small_filesystem

from runa.alethia.store import Durability, Store, StoreFull, verify

from .helpers import Clock, new_keys, turn

Open = Callable[..., Store]
BOUND = 8

WRITER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from runa.alethia.store import Durability, Keys, Store
    keys = Keys(memory={1: bytearray(b"m" * 32)}, signing_seed=bytearray(b"s" * 32))
    durability = Durability(records=int(sys.argv[2]), ms=60000)
    store = Store.open(Path(sys.argv[1]), keys, durability=durability)
    n = 0
    while True:
        record_id = store.append("turn", {"user": "x" * 300, "answer": "y" * 700,
                                          "conversation": "c"})
        n += 1
        print(n, record_id, flush=True)
""")


def test_sigkill_mid_append_loses_at_most_the_bound(root: Path, opener: Open) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    child = subprocess.Popen([sys.executable, "-c", WRITER, str(root), str(BOUND)], env=env,
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    acknowledged = 0
    try:
        for line in child.stdout:
            acknowledged = int(line.split()[0])
            if acknowledged >= 1000 + BOUND // 2:  # mid-batch, mid-write, wherever it is
                break
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
    store = opener()
    kept = len(list(store.entries()))
    assert kept >= acknowledged - (BOUND - 1)  # the child may have run ahead of the pipe
    store.close()
    report = verify(root)
    assert report.ok and report.unsigned == 0


def test_a_full_disk_is_a_clear_error_and_the_chain_stays_valid(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    with small_filesystem(tmp_path / "small", "256k") as mount:
        root = mount / "alethia"
        store = Store.open(root, new_keys(), durability=Durability(records=4, ms=60_000))
        written: list[str] = []
        with pytest.raises(StoreFull, match="disk is full"):
            for n in range(10_000):
                written.append(store.append("turn", turn(n)))
        durable = len(list(store.entries()))
        assert 0 < durable <= len(written)
        assert verify(root).ok
        store.close()
        report = verify(root)
        assert report.ok and report.records == durable and report.unsigned == 0
        again = Store.open(root, new_keys())
        assert len(list(again.entries())) == durable
        subprocess.run(["mount", "-o", "remount,size=2m", str(mount)], check=True)
        again.append("turn", turn(0))  # room again: the chain goes on from where it was
        again.close()
        assert verify(root).ok and verify(root).records == durable + 1


def test_a_disk_full_on_a_new_days_first_batch_leaves_no_half_day(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    clock = Clock()
    with small_filesystem(tmp_path / "small", "128k") as mount:
        root = mount / "alethia"
        store = Store.open(root, new_keys(), clock=clock,
                           durability=Durability(records=1000, ms=60_000))
        store.append("turn", turn(0))
        store.flush()
        filler = mount / "filler"
        with filler.open("wb", buffering=0) as handle, pytest.raises(OSError):
            while True:
                handle.write(b"\0" * 4096)
        clock.next_day()
        with pytest.raises(StoreFull):
            for n in range(200):
                store.append("turn", turn(n))
            store.flush()
        store.close()
        report = verify(root)
        assert report.ok and report.records == 1 and report.days == 1
        filler.unlink()
        again = Store.open(root, new_keys(), clock=clock)
        again.append("turn", turn(1))
        again.close()
        assert verify(root).ok and verify(root).days == 2
