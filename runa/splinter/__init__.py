"""splinter: Runa's shared-memory bus (KV store, channels, envelopes) — the library.

The keeper daemon that creates buses, reaps and decays lives above the service base; this package
is only the library every component links. See docs/protocol.md for the contract.
"""

from runa.splinter.bus import (
    EVENTS_CHANNEL,
    Bus,
    EnvelopeReceiver,
    EnvelopeSender,
    segment_paths,
)
from runa.splinter.channel import ChannelInfo, QueueReceiver, Reaped, Sender, Subscriber
from runa.splinter.envelope import Envelope, Fault, decode, encode, uuid7
from runa.splinter.kv import KV, SlotInfo
from runa.splinter.layout import LAYOUT_VERSION, Geometry
from runa.splinter.segment import (
    BUSES,
    DEFAULT_DIR,
    Segment,
    create_segment,
    ensure_segment,
    remove_segment,
    segment_path,
)

__all__ = [
    "BUSES", "DEFAULT_DIR", "EVENTS_CHANNEL", "KV", "LAYOUT_VERSION", "Bus", "ChannelInfo",
    "Envelope", "EnvelopeReceiver", "EnvelopeSender", "Fault", "Geometry", "QueueReceiver",
    "Reaped", "Segment", "Sender", "SlotInfo", "Subscriber", "create_segment", "decode", "encode",
    "ensure_segment", "remove_segment", "segment_path", "segment_paths", "uuid7",
]
