"""Who consumes a queue, as the kernel says (runa.splinter.holder), not as the segment says."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable

from runa.splinter import Bus
from runa.splinter.layout import C_OWNER_PID


def _own_queue_until_told(path: str, name: str, ready: multiprocessing.synchronize.Event,
                          done: multiprocessing.synchronize.Event) -> None:
    with Bus.open(path) as bus:
        bus.queue(name)
        ready.set()
        done.wait(10)


def test_the_kernel_names_the_process_that_consumes_a_queue(
        make_bus: Callable[..., tuple[Bus, str]], mp: multiprocessing.context.BaseContext) -> None:
    bus, path = make_bus()
    ready, done = mp.Event(), mp.Event()
    child = mp.Process(target=_own_queue_until_told, args=(path, "replies", ready, done))
    child.start()
    try:
        assert ready.wait(10)
        assert bus.queue_holder("replies") == child.pid
    finally:
        done.set()
        child.join(10)
    assert bus.queue_holder("replies") is None  # the holder is gone, so is its hold


def test_a_forged_owner_record_does_not_change_what_the_kernel_says(
        make_bus: Callable[..., tuple[Bus, str]], mp: multiprocessing.context.BaseContext) -> None:
    bus, path = make_bus()
    ready, done = mp.Event(), mp.Event()
    child = mp.Process(target=_own_queue_until_told, args=(path, "replies", ready, done))
    child.start()
    try:
        assert ready.wait(10)
        found = bus.channels.find("replies")
        assert found is not None
        words = bus.channels.W
        words[(bus.channels.layout.channel(found[0]) >> 3) + C_OWNER_PID] = 1  # "I am init"
        assert bus.queue_owner("replies").pid == 1  # type: ignore[union-attr]
        assert bus.queue_holder("replies") == child.pid
    finally:
        done.set()
        child.join(10)


def test_a_process_is_the_holder_of_its_own_queue_until_it_closes_it(
        make_bus: Callable[..., tuple[Bus, str]]) -> None:
    bus, _path = make_bus()
    queue = bus.queue("mine")
    assert bus.queue_holder("mine") == bus.identity[0]
    queue.close()
    assert bus.queue_holder("mine") is None
    assert bus.queue_holder("no-such-queue") is None
