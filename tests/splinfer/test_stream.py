"""An answer's stream never waits for its reader: full channels hold text, slow readers go."""

from __future__ import annotations

from runa.splinfer.stream import ReplyStream
from runa.splinter import Fault
from runa.splinter import envelope as env_mod
from runa.splinter.errors import Backpressure, ChannelNotFound
from runa.testing import FakeClock


class Channel:
    """A reply channel that is full until told otherwise."""

    def __init__(self) -> None:
        self.sent: list = []
        self.full = False
        self.closed = False

    def send(self, envelope) -> None:
        if self.closed:
            raise ChannelNotFound("r", "gone")
        if self.full:
            raise Backpressure("r", 100, 0)
        self.sent.append(envelope)


def stream(channel: Channel, clock: FakeClock) -> ReplyStream:
    request = env_mod.query("client", "splinfer", {"op": "chat"}, reply_to="r")
    return ReplyStream(request, channel, name="splinfer", clock=clock, flush_s=0.05,
                       timeout_s=10)


def test_first_piece_at_once_then_coalesced_and_the_rest_with_eof() -> None:
    channel, clock = Channel(), FakeClock(0.0)
    s = stream(channel, clock)
    s.text("Hel")
    clock.advance(0.01)  # at 0.01
    s.text("lo")
    clock.advance(0.01)  # at 0.02
    s.text(" wor")
    clock.advance(0.04)  # at 0.06
    s.text("ld")
    s.finish({"finish_reason": "stop"})
    assert [e.payload.get("text") for e in channel.sent] == ["Hel", "lo world", ""]
    assert [e.seq for e in channel.sent] == [0, 1, 2]
    assert channel.sent[-1].eof and s.done


def test_a_full_channel_keeps_everything_in_order_until_there_is_room() -> None:
    channel, clock = Channel(), FakeClock(0.0)
    s = stream(channel, clock)
    s.text("a")
    channel.full = True
    for piece in "bcdef":
        clock.advance(0.1)
        s.text(piece)
    s.finish({"finish_reason": "length"})
    assert not s.done and s.gone is None
    channel.full = False
    s.pump()
    assert "".join(e.payload["text"] for e in channel.sent) == "abcdef"
    assert [e.seq for e in channel.sent] == list(range(len(channel.sent)))
    assert channel.sent[-1].eof and s.done


def test_a_reader_that_makes_no_room_is_gone_and_a_closed_one_too() -> None:
    channel, clock = Channel(), FakeClock(0.0)
    s = stream(channel, clock)
    channel.full = True
    s.text("a")
    clock.advance(5)
    s.pump()
    assert s.gone is None
    clock.advance(5.5)  # at 10.5
    s.pump()
    assert "full for 10 s" in s.gone and s.done
    other = stream(Channel(), clock)
    other.sender.closed = True
    other.text("x")
    assert "was closed" in other.gone


def test_an_error_replaces_what_was_waiting() -> None:
    channel, clock = Channel(), FakeClock(0.0)
    s = stream(channel, clock)
    channel.full = True
    s.text("partial")
    s.fail(Fault.INTERNAL_ERROR, "decode failed")
    channel.full = False
    s.pump()
    assert [e.type for e in channel.sent] == ["error"]
    assert channel.sent[0].payload["message"] == "decode failed"


def test_text_held_back_goes_out_in_pieces_the_bus_takes() -> None:
    from runa.splinfer.stream import MAX_PIECE

    channel, clock = Channel(), FakeClock(0.0)
    s = stream(channel, clock)
    channel.full = True
    s.text("é" * (3 * MAX_PIECE + 10))
    s.finish({"finish_reason": "length"})
    channel.full = False
    s.pump()
    texts = [e.payload["text"] for e in channel.sent]
    assert max(len(t) for t in texts) <= MAX_PIECE
    assert "".join(texts) == "é" * (3 * MAX_PIECE + 10) and channel.sent[-1].eof
