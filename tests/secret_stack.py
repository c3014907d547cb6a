"""A stack's buses and bus key with gilgul's secrets broker and coven (a fake one, or the real
daemon), for the tests of the broker, of ``runa secret`` and of what asks for keys."""

from __future__ import annotations

import logging
import multiprocessing
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fake_coven

from runa import stackbus
from runa.components import load_config
from runa.crypto.sealed import BusKey, key_path
from runa.gilgul import BrokerThread, Running, SecretsBroker, children_identify
from runa.gilgul.secret_policy import ReadPolicy
from runa.paths import Paths
from runa.protocol.secrets import COVEN
from runa.registry import Component, Registry
from runa.splinter import Bus
from runa.splinter.errors import SplinterError
from runa.splinter.liveness import process_start_time

MP = multiprocessing.get_context("fork")

#: alethia may read its own secrets; splinfer none.
REGISTRY = Registry((Component("alethia", "the memory", secrets=("alethia.*",)),
                     Component("splinfer", "the model")))


class Events(logging.Handler):
    """The journal events the broker logs, as records."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def named(self, event: str) -> list[logging.LogRecord]:
        return [r for r in self.records if getattr(r, "RUNA_EVENT", None) == event]


@dataclass
class SecretStack:
    env: dict[str, str]
    paths: Paths
    main_path: str
    coven_path: str
    key_file: Path
    #: The supervisor's child table as the broker sees it: pid -> component, start time.
    table: dict[int, Running] = field(default_factory=dict)
    events: Events = field(default_factory=Events)
    asked: Any = field(default_factory=MP.Queue)  # what the fake coven was asked
    _stop: list[Any] = field(default_factory=list)
    _daemons: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def broker(self, coven_wait_s: float = 2.0) -> SecretsBroker:
        logger = logging.getLogger(f"test.broker.{id(self)}")
        logger.addHandler(self.events)
        logger.setLevel(logging.INFO)
        logger.propagate = False
        return SecretsBroker(
            open_main=lambda: Bus.open(self.main_path),
            open_coven=lambda: Bus.open(self.coven_path),
            load_key=lambda: BusKey.load_or_create(self.key_file),
            identify=children_identify(lambda: dict(self.table)),
            policy=ReadPolicy(REGISTRY), logger=logger, coven_wait_s=coven_wait_s)

    def register(self, pid: int, component: str) -> None:
        """Put ``pid`` in the child table as ``component``, as the supervisor does at spawn."""
        start = process_start_time(pid)
        assert start is not None
        self.table[pid] = Running(component, start)

    def start_coven(self, vault: fake_coven.FakeVault) -> int:
        """A fake coven process, registered as coven in the child table; its pid."""
        ready, done = MP.Event(), MP.Event()
        process = MP.Process(target=fake_coven.serve,
                             args=(self.coven_path, str(self.key_file), vault, self.asked,
                                   ready, done))
        process.start()
        assert ready.wait(10), "the fake coven did not start"
        assert process.pid is not None
        self.register(process.pid, COVEN)
        self._stop.append((done, process))
        return process.pid

    def start_coven_daemon(self) -> int:
        """``runa daemon coven`` as a child of this process (which holds the broker's coven
        reply queue, so coven takes it for gilgul), registered as coven; its pid."""
        process = subprocess.Popen([sys.executable, "-m", "runa", "daemon", "coven"],
                                   env=self.env, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        self._daemons.append(process)
        deadline = time.monotonic() + 20
        with Bus.open(self.coven_path) as bus:
            while _holder(bus, COVEN) != process.pid:
                assert process.poll() is None, "coven stopped at start"
                assert time.monotonic() < deadline, "coven did not start"
                time.sleep(0.05)
        self.register(process.pid, COVEN)
        return process.pid

    @contextmanager
    def broker_running(self) -> Iterator[BrokerThread]:
        thread = BrokerThread(self.broker(), logging.getLogger("test.broker"), poll_s=0.05)
        thread.start()
        try:
            yield thread
        finally:
            thread.stop()

    def close(self) -> None:
        for done, process in self._stop:
            done.set()
            process.join(10)
        for daemon in self._daemons:
            daemon.terminate()
            daemon.wait(10)


def _holder(bus: Bus, queue: str) -> int | None:
    try:
        return bus.queue_holder(queue)
    except SplinterError:  # not made yet
        return None


@contextmanager
def secret_stack(env: dict[str, str]) -> Iterator[SecretStack]:
    """The buses of ``env``'s stack (created), its bus key path, and no processes yet."""
    stack = env["RUNA_STACK"]
    paths = Paths.for_stack(stack, env)
    config = load_config(paths, env)
    stackbus.ensure_buses(config, stack)
    made = SecretStack(env, paths, stackbus.path(config, stack),
                       stackbus.path(config, stack, "coven"), key_path(paths.runtime))
    try:
        yield made
    finally:
        made.close()
