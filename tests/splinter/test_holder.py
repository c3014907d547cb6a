"""Who consumes a queue, as the kernel says (runa.splinter.holder), not as the segment says."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from runa.splinter import Bus, holder
from runa.splinter.errors import ChannelBusy, SplinterError
from runa.splinter.layout import C_OWNER_PID


def _own_queue_until_told(path: str, name: str, ready: multiprocessing.synchronize.Event,
                          done: multiprocessing.synchronize.Event) -> None:
    with Bus.open(path) as bus:
        bus.queue(name)
        ready.set()
        done.wait(10)


@contextmanager
def child_holding(mp: multiprocessing.context.BaseContext, target: Callable[..., None],
                  path: str, name: str) -> Iterator[Any]:
    """A child process running ``target(path, name, ready, done)``: yielded once it is ready,
    told to end (and waited for) when the block ends."""
    ready, done = mp.Event(), mp.Event()
    child = mp.Process(target=target, args=(path, name, ready, done))
    child.start()
    try:
        assert ready.wait(10)
        yield child
    finally:
        done.set()
        child.join(10)


def test_the_kernel_names_the_process_that_consumes_a_queue(
        make_bus: Callable[..., tuple[Bus, str]], mp: multiprocessing.context.BaseContext) -> None:
    bus, path = make_bus()
    with child_holding(mp, _own_queue_until_told, path, "replies") as child:
        assert bus.queue_holder("replies") == child.pid
    assert bus.queue_holder("replies") is None  # the holder is gone, so is its hold


def test_a_forged_owner_record_does_not_change_what_the_kernel_says(
        make_bus: Callable[..., tuple[Bus, str]], mp: multiprocessing.context.BaseContext) -> None:
    bus, path = make_bus()
    with child_holding(mp, _own_queue_until_told, path, "replies") as child:
        found = bus.channels.find("replies")
        assert found is not None
        words = bus.channels.W
        words[(bus.channels.layout.channel(found[0]) >> 3) + C_OWNER_PID] = 1  # "I am init"
        assert bus.queue_owner("replies").pid == 1  # type: ignore[union-attr]
        assert bus.queue_holder("replies") == child.pid


def test_a_process_is_the_holder_of_its_own_queue_until_it_closes_it(
        make_bus: Callable[..., tuple[Bus, str]]) -> None:
    bus, _path = make_bus()
    queue = bus.queue("mine")
    assert bus.queue_holder("mine") == bus.identity[0]
    queue.close()
    assert bus.queue_holder("mine") is None
    assert bus.queue_holder("no-such-queue") is None


def test_a_queue_whose_record_was_forged_dead_is_not_adopted_while_its_holder_lives(
        make_bus: Callable[..., tuple[Bus, str]], mp: multiprocessing.context.BaseContext) -> None:
    bus, path = make_bus()
    with child_holding(mp, _own_queue_until_told, path, "gilgul.123") as child:
        found = bus.channels.find("gilgul.123")
        assert found is not None
        owner_pid = (bus.channels.layout.channel(found[0]) >> 3) + C_OWNER_PID
        bus.channels.W[owner_pid] = 1 << 30  # "its owner died": no such pid
        with pytest.raises(ChannelBusy, match=f"held by live pid {child.pid} as the kernel"):
            bus.queue("gilgul.123")
        assert bus.channels.W[owner_pid] == 1 << 30  # the record is not taken over
        assert bus.queue_holder("gilgul.123") == child.pid
    adopted = bus.queue("gilgul.123")  # its holder gone, the queue is adopted as before
    assert bus.queue_owner("gilgul.123").pid == bus.identity[0]  # type: ignore[union-attr]
    bus.queue("gilgul.123")  # and a process re-opens its own queue
    adopted.close()


def _claim_until_told(path: str, request_id: str, ready: multiprocessing.synchronize.Event,
                      done: multiprocessing.synchronize.Event) -> None:
    with Bus.open(path) as bus, bus.claim_request(request_id):
        ready.set()
        done.wait(10)


def test_the_kernel_names_the_sender_of_a_request_while_it_claims_it(
        make_bus: Callable[..., tuple[Bus, str]], mp: multiprocessing.context.BaseContext) -> None:
    bus, path = make_bus()
    with child_holding(mp, _claim_until_told, path, "req-1") as child:
        assert bus.request_sender("req-1") == child.pid
        assert bus.request_sender("req-2") is None  # another id: another byte
        with pytest.raises(SplinterError, match="claimed by another process"), \
                bus.claim_request("req-1"):
            pass
    assert bus.request_sender("req-1") is None  # released with its sender
    with bus.claim_request("req-1"):
        assert bus.request_sender("req-1") == bus.identity[0]
    assert bus.request_sender("req-1") is None


def test_claims_sit_past_every_channel_hold() -> None:
    offsets = {holder.claim_offset(f"id-{n}") for n in range(1000)}
    assert len(offsets) == 1000
    assert all(holder.REQUEST_BASE <= o < holder.REQUEST_BASE + (1 << 56) for o in offsets)
    assert holder.HOLD_BASE + (1 << 20) < holder.REQUEST_BASE
